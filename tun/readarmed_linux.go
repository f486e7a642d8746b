//go:build linux

package tun

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reader that arms its own wakeup (Config.ReadWait WaitArmed).
//
// In Go's poller (WaitPoller) the device's fd sits in the runtime's
// epoll set, edge-triggered, for good: every packet the kernel queues on
// the device calls sk_data_ready (tun_net_xmit, drivers/net/tun.c), whose
// ep_poll_callback wakes the thread asleep in epoll_wait, whether or not
// the reader is waiting. A busy reader is not, yet each packet that finds
// that thread asleep wakes it: it takes an idle P, finds the fd ready but
// no goroutine parked on it, and sleeps again. On the article's one-armed
// TAP, where the one reader carries both directions and rarely finds its
// device empty, the director's threads went to sleep in the poller 5,936
// times in 4 s of new connections, about 1,500 a second (467 times with
// WaitArmed; docs/perf.md).
//
// With WaitArmed the device's fd is not in the runtime's set. It is in an
// epoll instance of its own, with EPOLLONESHOT: disarmed, a packet wakes
// nobody (ep_poll_callback returns at once for an item with no events
// left). The reader that finds the device empty arms it (EPOLL_CTL_MOD
// with EPOLLIN), which reports a packet already queued at once, and waits
// in Go's poller on the epoll instance itself, which is readable while it
// has an event ready (ep_eventpoll_poll, fs/eventpoll.c): the wakeup
// costs the same as in the poller, one thread out of epoll_wait, and
// comes only when the reader asked for it. One epoll_ctl and one
// epoll_pwait more per wait, none per packet.
//
// The device's fd is then not pollable for the runtime (os.NewFile is
// given it blocking, and it is made non-blocking after): its RawConn's
// callbacks must never ask to wait. Reads wait as above; a write that
// finds the device's socket buffer full (EAGAIN: never with the kernel's
// default sndbuf of INT_MAX, tun_set_sndbuf) waits in poll(2).
//
// Close closes the epoll instance first: that wakes a reader waiting on
// it (the runtime's poller returns ErrFileClosing to it), and a reader
// that has not got there yet finds it closed. The epoll instance's fd
// number is only used inside its RawConn's callback, which holds it
// open, so it is never used after Close let it go (and perhaps reused).

// openArmed opens q's epoll instance for WaitArmed, with fd, the
// device's, in it disarmed (EPOLLONESHOT and no events: only an error
// would be reported, and an error wakes a waiting reader anyway).
func (q *offloadQueue) openArmed(fd int) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(ep)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in the runtime's poller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return fmt.Errorf("epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(ep), "tun-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	q.armed, q.epFile, q.epRC, q.devFd = true, f, rc, int32(fd)
	q.epFn = q.epReady
	return nil
}

// waitArmed arms the device's wakeup and waits in Go's poller until the
// device has a packet or an error, or Close is called (os.ErrClosed). It
// runs in a read callback, which holds the device's fd open.
func (q *offloadQueue) waitArmed() error {
	if q.tid.Load() == 0 {
		q.tid.Store(int32(unix.Gettid()))
	}
	q.arm = true
	err := q.epRC.Read(q.epFn)
	if err == nil {
		err = q.epErr
		q.epErr = nil
	}
	if err != nil {
		if q.closed.Load() || errors.Is(err, os.ErrClosed) {
			return os.ErrClosed
		}
		return err
	}
	return nil
}

// epReady is waitArmed's RawConn callback on the epoll instance: it arms
// the device's item on its first call and reports whether the instance
// has the event (consuming it, which leaves the item disarmed again).
func (q *offloadQueue) epReady(ep uintptr) bool {
	if q.arm {
		q.arm = false
		q.epEv[0] = unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: q.devFd}
		_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, ep, unix.EPOLL_CTL_MOD, uintptr(q.devFd), uintptr(unsafe.Pointer(&q.epEv[0])), 0, 0)
		if e != 0 {
			q.epErr = fmt.Errorf("epoll_ctl: %w", e)
			return true
		}
	}
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, ep, uintptr(unsafe.Pointer(&q.epEv[0])), 1, 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			q.epErr = fmt.Errorf("epoll_pwait: %w", e)
			return true
		}
		return n > 0
	}
}

// closeArmed closes the epoll instance, waking a reader waiting on it;
// Close calls it before it closes the device's fd.
func (q *offloadQueue) closeArmed() {
	if q.armed {
		_ = q.epFile.Close()
	}
}

// waitWritable waits in poll(2) until fd, the device's, takes a write,
// for a WaitArmed queue whose write found its socket buffer full; it
// gives up when the queue is closed.
func (q *offloadQueue) waitWritable(fd uintptr) error {
	for !q.closed.Load() {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		// Bounded, so that a Close is seen.
		_, err := unix.Poll(pfd, 100)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		if pfd[0].Revents != 0 {
			return nil
		}
	}
	return os.ErrClosed
}

// newUnpolledFile is os.NewFile for fd, a non-blocking fd, kept out of the
// runtime's poller: os.NewFile polls a descriptor it is given
// non-blocking, so it is given it blocking and made non-blocking after.
// On an error fd is closed and the file nil.
func newUnpolledFile(fd int, name string) (*os.File, syscall.RawConn, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}
