//go:build linux

package tun

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// The reader on its own thread (Config.ReadWait WaitPoll and WaitThread).
//
// By default a reader that finds its queue empty returns to Go's
// poller: the fd is in the runtime's epoll set, the goroutine parks, and
// when the device queues a packet the thread sleeping in epoll_wait (the
// poller, or a scheduler looking for work) wakes, marks the goroutine
// runnable, and some thread, often a third one, runs it. With WaitPoll
// the reader sleeps in ppoll(2) on its own fd and an eventfd, as a
// blocking system call, and with WaitThread it does so locked to its OS
// thread (runtime.LockOSThread): the device's packet wakes that
// thread directly (tun_net_xmit queues the skb and calls sk_data_ready on
// the queue's socket, whose wait queue ppoll sleeps on through
// tun_chr_poll's poll_wait, drivers/net/tun.c), and it goes on reading,
// non-blocking, until EAGAIN as before.
//
// Close has to wake a thread asleep in ppoll: closing the fd does not
// (ppoll holds its own reference to the file, and Go's poller, which
// Close does wake, is not where the thread sleeps). The eventfd does:
// Close writes it before closing the device's fd. os.File.Close on a
// non-blocking fd waits until no call holds the fd, that is until the
// read callback (where ppoll runs) has returned, so neither fd number can
// be closed, and reused, under a thread still polling it; the eventfd is
// closed after that. A counter written once stays readable, so a reader
// that reaches ppoll after Close's write returns at once.
//
// A device destroyed under the reader (ip link del, its namespace gone)
// needs nothing more: tun_detach_all sets RCV_SHUTDOWN and calls
// sk_data_ready on every queue, which wakes ppoll; tun_chr_poll then
// answers EPOLLERR (no tun behind the file any more) and the read(2)
// that follows fails with EBADFD, the error the netstack's readers take
// for a lost device (tun_chr_read_iter).
//
// With WaitThread the goroutine stays locked to its thread from its
// first wait on, so
// that every wait of a reader is on one thread; the Device's readers are
// a goroutine per queue for the queue's life, and when such a goroutine
// returns still locked, the runtime ends the thread with it (see
// runtime.LockOSThread): a reader that stops leaks no thread.

// openReadThread prepares q for WaitPoll or, lock set, WaitThread: the
// eventfd Close wakes the reader with. It is blocking (no EFD_NONBLOCK), so the runtime
// never puts it in its poller; it is only ever polled and written.
func (q *offloadQueue) openReadThread(lock bool) error {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	q.thread, q.lock = true, lock
	q.efd = efd
	q.pfd[1] = unix.PollFd{Fd: int32(efd), Events: unix.POLLIN}
	return nil
}

// waitThread sleeps in ppoll until the device (fd) has a packet or an
// error, or Close is called, which it reports as os.ErrClosed. It runs in
// the read callback, on the reader's locked thread.
func (q *offloadQueue) waitThread(fd uintptr) error {
	if !q.locked {
		if q.lock {
			runtime.LockOSThread()
		}
		q.locked = true
		q.tid.Store(int32(unix.Gettid()))
	}
	q.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	for {
		if q.closed.Load() {
			return os.ErrClosed
		}
		q.pfd[0].Revents, q.pfd[1].Revents = 0, 0
		// A blocking system call the scheduler is told of
		// (Syscall6): its P goes to other goroutines while this
		// thread sleeps.
		_, err := unix.Ppoll(q.pfd[:], nil, nil)
		if err == unix.EINTR {
			// The runtime's preemption signal, or another.
			continue
		}
		if err != nil {
			return fmt.Errorf("ppoll: %w", err)
		}
		q.c.readWaits.Add(1)
		if q.pfd[1].Revents != 0 {
			return os.ErrClosed
		}
		// Readable, or POLLERR for a device gone: the read(2) that
		// follows tells which.
		return nil
	}
}

// wakeThread wakes the reader out of ppoll for Close (before the
// device's fd is closed, which waits for the reader to return).
func (q *offloadQueue) wakeThread() {
	if !q.thread {
		return
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // added to the counter, never read back
	_, _ = unix.Write(q.efd, one[:])
}

// closeThread closes the eventfd, once the device's fd is closed and no
// reader can be in ppoll.
func (q *offloadQueue) closeThread() {
	if q.thread {
		_ = unix.Close(q.efd)
	}
}

// ReadThreadID is the thread (gettid) of the first wait of a WaitPoll,
// WaitThread or WaitArmed queue's reader (in ppoll, or on its epoll
// instance), the one a WaitThread reader is locked to; 0 before that
// wait. For tests, which check that it ends with a WaitThread reader.
func (q *offloadQueue) ReadThreadID() int { return int(q.tid.Load()) }

// ReadWaits is OffloadStats.ReadWaits alone, for callers that count
// wakeups without the rest (and without naming OffloadStats, which only
// Linux has).
func (d *OffloadDevice) ReadWaits() uint64 {
	var n uint64
	for _, q := range d.queues {
		n += q.c.readWaits.Load()
	}
	return n
}

// RingCounts is OffloadStats.RingEnters and RingWrites alone, for
// callers that do not name OffloadStats (Linux only).
func (d *OffloadDevice) RingCounts() (enters, writes uint64) {
	for _, q := range d.queues {
		enters += q.c.ringEnters.Load()
		writes += q.c.ringWrites.Load()
	}
	return enters, writes
}
