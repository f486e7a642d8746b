//go:build linux

package tun

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal io_uring (include/uapi/linux/io_uring.h): one submission and
// one completion ring, mapped once, and the few operations a device
// reader needs. One goroutine at a time uses it (the queue's reader, or
// Close once the reader is out): the submission ring has one producer
// and the completion ring one consumer, so only the indices the kernel
// shares need atomics.

const (
	ioringOpAsyncCancel = 14
	ioringOpRead        = 22
	ioringOpWrite       = 23

	ioringEnterGetEvents = 1 << 0
	ioringEnterExtArg    = 1 << 3

	ioringFeatSingleMmap = 1 << 0
	ioringFeatExtArg     = 1 << 8

	ioringOffSQRing = 0
	ioringOffCQRing = 0x8000000
	ioringOffSQEs   = 0x10000000
)

// ioURingParams is struct io_uring_params.
type ioURingParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  ioSQRingOffsets
	cqOff                                                                  ioCQRingOffsets
}

// ioSQRingOffsets is struct io_sqring_offsets.
type ioSQRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// ioCQRingOffsets is struct io_cqring_offsets.
type ioCQRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// ioURingSQE is struct io_uring_sqe (64 bytes).
type ioURingSQE struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off           uint64
	addr          uint64
	len           uint32
	opFlags       uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3, pad    uint64
}

// ioURingCQE is struct io_uring_cqe (16 bytes).
type ioURingCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// ioURingGetEventsArg is struct io_uring_getevents_arg.
type ioURingGetEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWait   uint32
	ts        uint64
}

type uring struct {
	fd      int
	rings   []byte // the submission and completion rings, one mapping
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray unsafe.Pointer
	sqes    unsafe.Pointer
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    unsafe.Pointer
	extArg  bool

	tail    uint32 // our copy of the submission tail
	queued  uint32 // entries queued since the last enter
	entries uint32
}

// ringSetup is io_uring_setup(2) with entries submission entries; a test
// replaces it to see the fallback taken.
var ringSetup = func(entries uint32, p *ioURingParams) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// newURing sets up a ring of entries submission entries (twice as many
// completions). It fails where io_uring is missing (ENOSYS), disabled
// (kernel.io_uring_disabled: EPERM) or filtered (a container's seccomp
// profile: EPERM), and where the kernel is older than 5.4's single
// mapping.
func newURing(entries uint32) (*uring, error) {
	var p ioURingParams
	fd, err := ringSetup(entries, &p)
	if err != nil {
		return nil, fmt.Errorf("io_uring_setup: %w", err)
	}
	r := &uring{fd: fd, entries: p.sqEntries, extArg: p.features&ioringFeatExtArg != 0}
	if p.features&ioringFeatSingleMmap == 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: kernel without IORING_FEAT_SINGLE_MMAP")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(ioURingCQE{})))
	r.rings, err = unix.Mmap(fd, ioringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	r.sqeMem, err = unix.Mmap(fd, ioringOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(ioURingSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Munmap(r.rings)
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring mmap: %w", err)
	}
	base := unsafe.Pointer(&r.rings[0])
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), *u32(p.sqOff.ringMask)
	r.sqArray = unsafe.Add(base, p.sqOff.array)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), *u32(p.cqOff.ringMask)
	r.cqes = unsafe.Add(base, p.cqOff.cqes)
	r.sqes = unsafe.Pointer(&r.sqeMem[0])
	// Submission entry i always sits in slot i of the index array.
	for i := uint32(0); i < p.sqEntries; i++ {
		*(*uint32)(unsafe.Add(r.sqArray, 4*i)) = i
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// sqe returns the next free submission entry, zeroed, or nil when the
// submission ring is full (queued entries not yet taken by the kernel).
func (r *uring) sqe() *ioURingSQE {
	if r.tail-atomic.LoadUint32(r.sqHead) >= r.entries {
		return nil
	}
	e := (*ioURingSQE)(unsafe.Add(r.sqes, uintptr(r.tail&r.sqMask)*unsafe.Sizeof(ioURingSQE{})))
	*e = ioURingSQE{}
	r.tail++
	r.queued++
	atomic.StoreUint32(r.sqTail, r.tail)
	return e
}

// prepRead queues a read(2) of fd into buf, tagged tag, with rwFlags
// (RWF_*).
func (r *uring) prepRead(fd int, buf []byte, tag uint64, rwFlags uint32) bool {
	e := r.sqe()
	if e == nil {
		return false
	}
	e.opcode, e.fd = ioringOpRead, int32(fd)
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf)))), uint32(len(buf))
	e.off = ^uint64(0) // the file's position: none for a device
	e.opFlags = rwFlags
	e.userData = tag
	return true
}

// prepWrite queues a write(2) of buf to fd, tagged tag.
func (r *uring) prepWrite(fd int, buf []byte, tag uint64) bool {
	e := r.sqe()
	if e == nil {
		return false
	}
	e.opcode, e.fd = ioringOpWrite, int32(fd)
	e.addr, e.len = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf)))), uint32(len(buf))
	e.off = ^uint64(0)
	e.userData = tag
	return true
}

// prepCancel queues the cancellation of the request tagged target.
func (r *uring) prepCancel(target, tag uint64) bool {
	e := r.sqe()
	if e == nil {
		return false
	}
	e.opcode, e.fd, e.addr, e.userData = ioringOpAsyncCancel, -1, target, tag
	return true
}

// enter submits what is queued and waits until minComplete completions
// are there (counting those not yet consumed). Waiting, it is a blocking
// system call the scheduler is told of (its P goes to other goroutines
// meanwhile); not waiting, a raw one.
func (r *uring) enter(minComplete uint32) error {
	for {
		n := r.queued
		var e unix.Errno
		var done uintptr
		if minComplete > 0 {
			done, _, e = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(minComplete), ioringEnterGetEvents, 0, 0)
		} else {
			done, _, e = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, 0, 0, 0)
		}
		took := uint32(0)
		if e == 0 || e == unix.EINTR {
			// Entries taken before an interruption stay taken.
			took = min(uint32(done), r.queued)
			r.queued -= took
		}
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			if minComplete == 0 && took == 0 {
				continue
			}
			return nil
		}
		return fmt.Errorf("io_uring_enter: %w", e)
	}
}

// waitTimeout submits what is queued and waits up to ns nanoseconds for
// a completion (where the kernel cannot bound the wait, for none).
func (r *uring) waitTimeout(ns int64) error {
	if !r.extArg {
		return r.enter(0)
	}
	ts := unix.NsecToTimespec(ns)
	arg := ioURingGetEventsArg{ts: uint64(uintptr(unsafe.Pointer(&ts)))}
	done, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.queued), 1, ioringEnterGetEvents|ioringEnterExtArg, uintptr(unsafe.Pointer(&arg)), unsafe.Sizeof(arg))
	if e == 0 || e == unix.EINTR || e == unix.ETIME {
		r.queued -= min(uint32(done), r.queued)
		return nil
	}
	return fmt.Errorf("io_uring_enter: %w", e)
}

// discard takes back the entries queued and not yet submitted: the
// kernel sees a new tail only in io_uring_enter.
func (r *uring) discard() {
	r.tail -= r.queued
	r.queued = 0
	atomic.StoreUint32(r.sqTail, r.tail)
}

// peek returns the oldest completion not yet consumed.
func (r *uring) peek() (ioURingCQE, bool) {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return ioURingCQE{}, false
	}
	return *(*ioURingCQE)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*unsafe.Sizeof(ioURingCQE{}))), true
}

// consume hands the oldest completion back to the kernel.
func (r *uring) consume() {
	atomic.StoreUint32(r.cqHead, atomic.LoadUint32(r.cqHead)+1)
}

// close tears the ring down; the kernel cancels what is still in flight.
func (r *uring) close() {
	unix.Munmap(r.sqeMem)
	unix.Munmap(r.rings)
	unix.Close(r.fd)
}
