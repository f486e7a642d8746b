//go:build linux

package tun

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Queues on standby: a queue of a multi-queue device taken out of the
// device's set (TUNSETQUEUE with IFF_DETACH_QUEUE) gets no packets, so its
// reader is never woken, and the kernel spreads flows over the queues
// still attached. A caller that wants a second reader only while one
// cannot keep up (the one-armed director under bulk traffic: netstack's
// standby queues) detaches the queue and attaches it again when needed.
//
// On detach the kernel drops what the queue still held (__tun_detach in
// drivers/net/tun.c purges its ring), and its reads and writes fail with
// EBADFD; its reader, in ReadGSO or Read, waits instead until Attach or
// Close.

var _ Standby = (*offloadQueue)(nil)

// setQueue attaches or detaches q (TUNSETQUEUE).
func (q *offloadQueue) setQueue(flag uint16) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	ifr.SetUint16(flag)
	var ierr error
	err = q.rc.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.TUNSETQUEUE, ifr) })
	if err == nil {
		err = ierr
	}
	return err
}

// Detach implements Standby.
func (q *offloadQueue) Detach() error {
	q.sbMu.Lock()
	defer q.sbMu.Unlock()
	if q.closed.Load() {
		return q.wrapErr("detach", ErrClosed)
	}
	if q.detached.Load() {
		return nil
	}
	// Flagged first: the reader, woken by the detach (the queue polls
	// as in error), finds its reads failing and waits. If the detach
	// fails, a reader that saw the flag is woken to read again.
	q.detached.Store(true)
	if err := q.setQueue(unix.IFF_DETACH_QUEUE); err != nil {
		q.detached.Store(false)
		q.wake()
		return fmt.Errorf("detach queue of %s: %w", q.name, err)
	}
	return nil
}

// wake lets a reader that waits in standbyWait look at detached again.
func (q *offloadQueue) wake() {
	select {
	case q.sbWake <- struct{}{}:
	default:
	}
}

// Attach implements Standby.
func (q *offloadQueue) Attach() error {
	q.sbMu.Lock()
	defer q.sbMu.Unlock()
	if q.closed.Load() {
		return q.wrapErr("attach", ErrClosed)
	}
	if !q.detached.Load() {
		return nil
	}
	if err := q.setQueue(unix.IFF_ATTACH_QUEUE); err != nil {
		return fmt.Errorf("attach queue of %s: %w", q.name, err)
	}
	q.detached.Store(false)
	q.wake()
	return nil
}

// Attached implements Standby.
func (q *offloadQueue) Attached() bool { return !q.detached.Load() }

// standbyWait is for a reader whose read failed with err, or that is
// about to read (err nil): while the queue is detached it waits until it
// is attached again (true: read again) or closed (ErrClosed).
func (q *offloadQueue) standbyWait(err error) (bool, error) {
	if !q.detached.Load() || err != nil && !errors.Is(err, unix.EBADFD) {
		return false, err
	}
	for q.detached.Load() {
		select {
		case <-q.sbWake:
		case <-q.sbClose:
			return false, q.wrapErr("read", ErrClosed)
		}
	}
	return true, nil
}
