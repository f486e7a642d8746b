//go:build linux

package tun

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The reader on io_uring (Config.ReadWait WaitRing).
//
// With read(2) a reader makes one system call per packet, and one more
// that finds the device empty (EAGAIN) before it waits; on a machine
// where a system call costs a microsecond (PTI, no PCID: docs/perf.md)
// that is most of what a small packet costs the director. On io_uring
// the reader submits reads and waits for them in one io_uring_enter: the
// kernel runs each read at once if the device has a packet and completes
// it there, or else arms a wait on the device (its poll wait queue,
// since the fd is non-blocking: a blocking one would send every read to
// io_uring's worker threads) and completes the read, in this thread,
// when a packet comes. One enter then carries as many packets as reads
// were submitted.
//
// How many: one while the device keeps the reader waiting, since every
// read armed on the device is woken by every packet (all but one then
// find it empty and wait again: 32 reads armed made a ping-pong cost
// four times as much, bench/results/2026-12-07e/tunring.log); twice as
// many as last time, up to ringSlots, while the reads submitted all find
// packets.
//
// The reads go into the queue's own slots, outside the Go heap, and each
// packet is copied into the caller's buffers from there: a read in
// flight must own its buffer until it completes, which may be after Read
// or ReadGSO returned, and the caller's are only lent for the call.
//
// The device's fd is kept out of Go's poller (as for WaitArmed): the
// reader never waits there, and packets would wake the poller's thread
// for nothing. Its writes go to the fd directly and, on the rare full
// socket buffer, wait in poll(2).
//
// Close wakes a waiting reader through an eventfd with a read of its own
// always in flight in the ring, waits for the reader to leave, cancels
// the reads in flight, waits for their completions (so that no read can
// still write into the slots) and only then unmaps the slots and closes
// the ring and the device: a read in flight holds the device's file
// open, so closing the fd alone would leave the interface up.
//
// Where io_uring cannot be set up (an old kernel, kernel.io_uring_disabled,
// a container's seccomp profile) Open falls back to WaitPoller and says
// so in OffloadStats.RingError.

const (
	// ringSlots is the most reads a queue's reader keeps in flight.
	ringSlots = 8
	// ringEntries is the submission ring's size: the slots, the
	// eventfd's read, and their cancellations at Close.
	ringEntries = 64

	tagEventfd = 1 << 32
	tagCancel  = 2 << 32
	tagWrite   = 4 << 32
)

// ringReader is a WaitRing queue's reader state.
type ringReader struct {
	r     *uring
	efd   int
	ebuf  [8]byte // the eventfd read's buffer
	slots []byte  // ringSlots buffers of readBufSize, mapped
	busy  [ringSlots]bool
	res   [ringSlots]int32 // what each completed slot holds (valid while done)
	done  [ringSlots]bool  // completed, its packet not yet taken
	fly   int              // reads in flight
	depth int              // reads to keep in flight
	err   error
	order [ringSlots]int // completed slots in completion order
	nord  int
	efdOn bool // the eventfd's read is in flight
	gone  bool // closeRing has run: the ring is no more

	// The deferred writer's (NewDeferredWriter): writes queued and not
	// yet submitted, writes in flight, the first failure of one not yet
	// reported, and the buffers of coalesced runs, wbufs[:wbufN] in use
	// until the writes are done.
	wq, wfly int
	werr     error
	wbufs    [][]byte
	wbufN    int
}

// newRingReader sets up a WaitRing queue's reader; the caller falls
// back to the poller if it fails.
func newRingReader() (*ringReader, error) {
	r, err := newURing(ringEntries)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	slots, err := unix.Mmap(-1, 0, ringSlots*readBufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		r.close()
		unix.Close(efd)
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &ringReader{r: r, efd: efd, slots: slots, depth: 1}, nil
}

// free releases what newRingReader set up, for an Open that failed
// before the reader ran.
func (rr *ringReader) free() {
	rr.r.close()
	unix.Close(rr.efd)
	unix.Munmap(rr.slots)
}

func (rr *ringReader) slot(i int) []byte {
	return rr.slots[i*readBufSize : (i+1)*readBufSize]
}

// ringNext returns the next packet read (its slot and length; release
// the slot with ringRelease), waiting for one if wait is set; slot -1
// when there is none and wait is not set. It runs under ringMu, after
// ringSettle. The deferred writes queued since the last call go in with
// the wait: one io_uring_enter writes them, submits the reads and waits
// for a packet.
func (q *offloadQueue) ringNext(wait bool) (slot, n int, err error) {
	rr := q.ring
	for {
		q.ringReap()
		if rr.nord > 0 {
			i := rr.order[0]
			copy(rr.order[:], rr.order[1:rr.nord])
			rr.nord--
			return i, int(rr.res[i]), nil
		}
		if !wait {
			// An error waits for a call with nothing in hand.
			return -1, 0, nil
		}
		if rr.err != nil {
			err, rr.err = rr.err, nil
			return -1, 0, err
		}
		if q.closed.Load() {
			return -1, 0, os.ErrClosed
		}
		if q.tid.Load() == 0 {
			q.tid.Store(int32(unix.Gettid()))
		}
		posted := q.ringPost()
		// Each write completes too: wait for them and one packet.
		writes := rr.wq
		if _, err := rr.r.enter(uint32(writes) + 1); err != nil {
			return -1, 0, err
		}
		rr.wfly += writes
		rr.wq = 0
		q.c.ringEnters.Add(1)
		// Every read submitted found a packet: next time, more.
		if got := int(rr.r.ready()) - writes; posted > 0 && got >= posted {
			rr.depth = min(2*rr.depth, ringSlots)
		} else {
			rr.depth = 1
			q.c.readWaits.Add(1)
		}
		if err := q.ringWritesDone(); err != nil {
			return -1, 0, err
		}
	}
}

// ringSettle submits the deferred writes if a packet is already in hand
// (ringNext would not enter), and waits until every write is done: the
// caller's buffers, which they are written from, are about to be read
// into.
func (q *offloadQueue) ringSettle() error {
	rr := q.ring
	q.ringReap()
	if rr.wq > 0 && rr.nord > 0 {
		writes := rr.wq
		if _, err := rr.r.enter(0); err != nil {
			return err
		}
		rr.wfly += writes
		rr.wq = 0
		q.c.ringEnters.Add(1)
	}
	return q.ringWritesDone()
}

// ringWritesDone waits for the writes in flight to complete. A write to
// a TUN or TAP device completes as it is submitted (the device's socket
// buffer is never full: see waitWritable), so this does not wait.
func (q *offloadQueue) ringWritesDone() error {
	rr := q.ring
	for {
		q.ringReap()
		if rr.wfly <= 0 {
			rr.wfly = 0
			if rr.wq == 0 {
				rr.wbufN = 0
			}
			return nil
		}
		if _, err := rr.r.enter(1); err != nil {
			return err
		}
	}
}

// ringPost queues reads into free slots until depth are in flight, and
// the eventfd's read if it is not; it returns how many reads it queued.
func (q *offloadQueue) ringPost() int {
	rr := q.ring
	if !rr.efdOn && rr.r.prepRead(rr.efd, rr.ebuf[:], tagEventfd) {
		rr.efdOn = true
	}
	n := 0
	for i := 0; i < ringSlots && rr.fly < rr.depth; i++ {
		if rr.busy[i] || rr.done[i] {
			continue
		}
		if !rr.r.prepRead(int(q.devFd), rr.slot(i), uint64(i)) {
			break
		}
		rr.busy[i] = true
		rr.fly++
		n++
	}
	return n
}

// ringReap takes the completions the ring holds: packets go to the
// order of completed slots, errors to rr.err.
func (q *offloadQueue) ringReap() {
	rr := q.ring
	for {
		c, ok := rr.r.peek()
		if !ok {
			return
		}
		rr.r.consume()
		switch {
		case c.userData == tagEventfd:
			rr.efdOn = false
			continue
		case c.userData&tagCancel != 0:
			continue
		case c.userData == tagWrite:
			rr.wfly--
			if c.res < 0 && rr.werr == nil {
				rr.werr = unix.Errno(-c.res)
			}
			continue
		}
		i := int(c.userData)
		rr.busy[i] = false
		rr.fly--
		switch {
		case c.res > 0:
			rr.res[i], rr.done[i] = c.res, true
			rr.order[rr.nord] = i
			rr.nord++
			q.c.readSyscalls.Add(1)
		case c.res == 0:
			rr.err = io.EOF
		case unix.Errno(-c.res) == unix.ECANCELED || unix.Errno(-c.res) == unix.EINTR || unix.Errno(-c.res) == unix.EAGAIN:
			// Cancelled (its submitter thread exited) or
			// interrupted: submitted again next time.
		default:
			rr.err = unix.Errno(-c.res)
		}
	}
}

// ringRelease frees slot i for another read.
func (q *offloadQueue) ringRelease(i int) { q.ring.done[i] = false }

// readRing is Read's reader on io_uring: like readCallback, with the
// packets taken from the ring's slots.
func (q *offloadQueue) readRing() {
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	r := &q.rd
	if q.ring.gone {
		r.err = os.ErrClosed
		return
	}
	if err := q.ringSettle(); err != nil {
		r.err = err
		return
	}
	for r.n < r.max {
		i, m, err := q.ringNext(r.n == 0)
		if err != nil {
			r.err = err
			return
		}
		if i < 0 {
			return
		}
		// Through rbuf: the splitter may keep a super-packet's
		// segments for the next Read, when the slot has a new read.
		err = q.load(q.rbuf[:copy(q.rbuf, q.ring.slot(i)[:m])])
		q.ringRelease(i)
		if err != nil {
			q.c.readDrops.Add(1)
			continue
		}
		if q.split.gso {
			q.c.gsoReads.Add(1)
		}
		r.n = q.drain(r.bufs, r.sizes, r.offset, r.n, r.max)
	}
}

// readGSORing is ReadGSO's reader on io_uring, like readGSOCallback.
func (q *offloadQueue) readGSORing() {
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	r := &q.rd
	if q.ring.gone {
		r.err = os.ErrClosed
		return
	}
	if err := q.ringSettle(); err != nil {
		r.err = err
		return
	}
	for r.n < len(r.pkts) && r.pos+r.headroom+readBufSize <= len(r.arena) {
		i, m, err := q.ringNext(r.n == 0)
		if err != nil {
			r.err = err
			return
		}
		if i < 0 {
			return
		}
		start := r.pos + r.headroom
		buf := r.arena[start-virtioNetHdrLen : start-virtioNetHdrLen+readBufSize]
		copy(buf, q.ring.slot(i)[:m])
		q.ringRelease(i)
		g, ok := q.inspect(buf[:m])
		if !ok {
			q.c.readDrops.Add(1)
			continue
		}
		size := m - virtioNetHdrLen
		r.pkts[r.n] = GSOPacket{Off: start, Len: size, GSO: g}
		r.n++
		r.pos = (start + max(size, SmallSlot) + 7) &^ 7
	}
}

// wakeRing wakes a reader waiting in io_uring_enter, for Close.
func (q *offloadQueue) wakeRing() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(q.ring.efd, one[:])
}

// closeRing, once the reader is out (ringMu held), cancels the reads in
// flight, waits for them to complete, and frees the ring. If they do not
// complete in time the slots stay mapped: a read might still write into
// them.
func (q *offloadQueue) closeRing() {
	rr := q.ring
	for i := 0; i < ringSlots; i++ {
		if rr.busy[i] {
			rr.r.prepCancel(uint64(i), tagCancel|uint64(i))
		}
	}
	if rr.efdOn {
		rr.r.prepCancel(tagEventfd, tagCancel|tagEventfd)
	}
	for try := 0; try < 100 && (rr.fly > 0 || rr.efdOn || rr.wfly+rr.wq > 0 || rr.r.queued > 0); try++ {
		rr.wfly += rr.wq
		rr.wq = 0
		if err := rr.r.waitTimeout(10e6); err != nil {
			break
		}
		q.ringReap()
	}
	free := rr.fly == 0
	rr.gone = true
	rr.r.close()
	unix.Close(rr.efd)
	if free {
		unix.Munmap(rr.slots)
	}
	rr.slots = nil
}

// ringWriter is a WaitRing queue's deferred writer (NewDeferredWriter).
type ringWriter struct {
	q *offloadQueue
	w writeState
}

var _ DeferredWriterSource = (*offloadQueue)(nil)

// NewDeferredWriter implements DeferredWriterSource: on a WaitRing queue,
// a writer whose writes go out with the reader's next wait, in the same
// io_uring_enter. For the queue's reader goroutine only.
func (q *offloadQueue) NewDeferredWriter() (GSOWriter, bool) {
	if q.ring == nil {
		return nil, false
	}
	return &ringWriter{q: q, w: writeState{deferred: true}}, true
}

// WriteGSO implements GSOWriter: the queue's WriteGSO, each packet queued
// on the ring. It reports a deferred write of an earlier call that
// failed, once.
func (x *ringWriter) WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error) {
	q := x.q
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	if q.ring.gone {
		return 0, q.wrapErr("write", os.ErrClosed)
	}
	n, err := q.writeGSO(&x.w, bufs, gso, offset)
	if rr := q.ring; err == nil && rr.werr != nil {
		err, rr.werr = q.wrapErr("write", rr.werr), nil
	}
	return n, err
}

// ringWrite queues pkt, a packet writeGSO made, for the reader's next
// enter; a full submission ring is submitted first.
func (q *offloadQueue) ringWrite(pkt []byte) error {
	rr := q.ring
	for !rr.r.prepWrite(int(q.devFd), pkt, tagWrite) {
		writes := rr.wq
		if _, err := rr.r.enter(0); err != nil {
			return q.wrapErr("write", err)
		}
		rr.wfly += writes
		rr.wq = 0
		q.c.ringEnters.Add(1)
		q.ringReap()
	}
	rr.wq++
	q.c.ringWrites.Add(1)
	return nil
}

// ringBuf is a buffer for one coalesced run of the deferred writer, kept
// until the writes are done.
func (q *offloadQueue) ringBuf() []byte {
	rr := q.ring
	if rr.wbufN == len(rr.wbufs) {
		rr.wbufs = append(rr.wbufs, make([]byte, ethHdrLen+readBufSize))
	}
	b := rr.wbufs[rr.wbufN]
	rr.wbufN++
	return b
}
