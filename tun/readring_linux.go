//go:build linux

package tun

import (
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reader on io_uring (Config.ReadWait WaitRing).
//
// With read(2) a reader makes one system call per packet, and one more
// that finds the device empty (EAGAIN) before it waits; the one-armed
// director then writes each packet back with write(2). On a machine
// where a system call costs a microsecond (PTI, no PCID: docs/perf.md)
// that is most of what a small packet costs the director. On io_uring a
// round is one io_uring_enter: it runs the writes the reader's last batch
// left (NewDeferredWriter, the one-armed director's writes back to its
// own device), then a handful of reads, each of which takes a packet the
// device has queued or fails at once with EAGAIN (RWF_NOWAIT: none is
// left waiting on the device).
//
// The reader waits where the default reader does, in Go's poller on the
// device's fd, and only once a round's reads all found the device empty.
// Reads left in flight, waiting on the device inside io_uring, were
// measured and left alone: every packet wakes every read waiting (all
// but one then find the device empty and wait again: 32 made a
// ping-pong cost four times as much, bench/results/2026-12-07e/
// tunring.log), and a reader blocked in io_uring_enter holds its thread
// and P: with a reader per device, as on the TUN topology's three
// devices, the runtime's monitor then took Ps from them every 20 µs,
// and the director's CPU a packet doubled at 2,000 requests a second
// (docs/perf.md).
//
// How many reads a round: one more than the last round found packets,
// or twice as many when all of them did, up to ringSlots.
//
// The reads go into the queue's own slots, outside the Go heap, and each
// packet is copied into the caller's buffers from there: a round's reads
// each need room for a 64 KiB super-packet, and the caller's arena has
// room for one or three. The deferred writer's coalesced runs are built
// in buffers of the same mapping (ringWBufs; when all are taken, the
// writes queued are sent to free them). Pages that super-packets made
// resident are handed back once a trim interval has passed without one
// (TrimBuffers).
//
// Where io_uring cannot be set up (an old kernel, kernel.io_uring_disabled,
// a container's seccomp profile), or the device's reads on it do not fail
// at once with EAGAIN (probe), Open falls back to WaitPoller and says so
// in OffloadStats.RingError.

const (
	// ringSlots is the most reads a round submits.
	ringSlots = 8
	// ringEntries is the submission ring's size: the slots, and room
	// for the deferred writes of a batch (more are submitted early).
	ringEntries = 64
	// ringWBufs is how many coalesced runs the deferred writer builds
	// before it must send them: a batch of the netstack's makes up to
	// three or four (one per flow, on the compare's workloads).
	ringWBufs = 4

	// rwfNoWait is RWF_NOWAIT (include/uapi/linux/fs.h).
	rwfNoWait = 0x8

	tagCancel = 2 << 32
	tagWrite  = 4 << 32
)

// ringReader is a WaitRing queue's reader state, used under the queue's
// ringMu.
type ringReader struct {
	r     *uring
	slots []byte // ringSlots read buffers, then ringWBufs write buffers, each ringBufSize, mapped
	// hi is, for each slot and then each write buffer, how far into it
	// the pages may be resident since the last trim; big says a packet
	// of more than a page has been read or built since then.
	hi    [ringSlots + ringWBufs]int
	big   bool
	busy  [ringSlots]bool
	res   [ringSlots]int32 // what each completed slot holds (valid while done)
	done  [ringSlots]bool  // completed, its packet not yet taken
	order [ringSlots]int   // completed slots in completion order
	nord  int
	fly   int  // reads in flight
	depth int  // reads to submit next round
	found int  // reads of the current round that found a packet
	tried bool // this callback has entered once
	err   error
	gone  bool // closeRing has run: the ring is no more

	// The deferred writer's (NewDeferredWriter): writes queued and not
	// yet submitted, writes in flight, the first failure of one not yet
	// reported, and how many of the write buffers (wbuf) are in use
	// until the writes are done.
	wq, wfly int
	werr     error
	wbufN    int
	// held are the queues other than this one that queued writes go
	// to, whose closeMu each holds for reading until they are
	// submitted (see ringWriter.WriteGSO).
	held []*offloadQueue
}

// newRingReader sets up a WaitRing queue's reader; the caller falls
// back to the poller if it fails.
func newRingReader() (*ringReader, error) {
	r, err := newURing(ringEntries)
	if err != nil {
		return nil, err
	}
	slots, err := unix.Mmap(-1, 0, (ringSlots+ringWBufs)*ringBufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &ringReader{r: r, slots: slots, depth: 1}, nil
}

// probe checks that fd, a device with nothing queued yet (it is not up),
// takes io_uring's reads with RWF_NOWAIT: the read must fail at once
// with EAGAIN. A kernel whose TUN device cannot say EAGAIN to io_uring
// (no FMODE_NOWAIT: EOPNOTSUPP) or that has no IORING_OP_READ (before
// 5.6: EINVAL) fails it, and the device falls back to the poller.
func (rr *ringReader) probe(fd int) error {
	if !rr.r.prepRead(fd, rr.slot(0), 0, ringProbeRWFlags) {
		return fmt.Errorf("io_uring: submission ring full")
	}
	if err := rr.r.enter(0); err != nil {
		return err
	}
	c, ok := rr.r.peek()
	if !ok {
		// Left waiting on the device: not what a round needs. Cancel
		// it and give up on io_uring.
		rr.r.prepCancel(0, tagCancel)
		for try := 0; try < 100 && !ok; try++ {
			_ = rr.r.waitTimeout(10e6)
			c, ok = rr.r.peek()
			for ok && c.userData != 0 {
				rr.r.consume()
				c, ok = rr.r.peek()
			}
		}
		if !ok {
			// Still in flight: its slot must stay mapped.
			rr.slots = nil
		}
		return fmt.Errorf("io_uring: a read with RWF_NOWAIT waited on the device")
	}
	rr.r.consume()
	if e := unix.Errno(-c.res); c.res < 0 && e != unix.EAGAIN {
		return fmt.Errorf("io_uring read with RWF_NOWAIT: %w", e)
	}
	return nil
}

// free releases what newRingReader set up, for an Open that failed
// before the reader ran.
func (rr *ringReader) free() {
	rr.r.close()
	if rr.slots != nil {
		unix.Munmap(rr.slots)
	}
}

// ringProbeRWFlags are the flags of probe's read; a test makes them
// ones the kernel refuses, to see the fallback taken.
var ringProbeRWFlags uint32 = rwfNoWait

// ringBufSize is the stride of the slots and write buffers: room for a
// frame of the largest packet with its virtio header, in whole pages, so
// that each can be trimmed apart.
var ringBufSize = (ethHdrLen + readBufSize + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)

func (rr *ringReader) slot(i int) []byte {
	return rr.slots[i*ringBufSize : i*ringBufSize+readBufSize]
}

// wbuf is write buffer j.
func (rr *ringReader) wbuf(j int) []byte {
	off := (ringSlots + j) * ringBufSize
	return rr.slots[off : off+ethHdrLen+readBufSize]
}

// touched records that buffer b (a slot, or a write buffer from j =
// ringSlots on) holds n bytes from its start.
func (rr *ringReader) touched(b, n int) {
	rr.hi[b] = max(rr.hi[b], n)
	if n > os.Getpagesize() {
		rr.big = true
	}
}

// trim hands back to the kernel the pages beyond the first of every
// slot and write buffer not in use, once no packet of more than a page
// has been read or built since the last trim (they read as zeros when
// touched again), and reports how many bytes it gave. It runs under
// ringMu.
func (rr *ringReader) trim() int {
	if rr.gone || rr.slots == nil {
		return 0
	}
	if rr.big {
		rr.big = false
		return 0
	}
	page := os.Getpagesize()
	n := 0
	for b := range rr.hi {
		if rr.hi[b] <= page {
			continue
		}
		if b < ringSlots && (rr.busy[b] || rr.done[b]) || b >= ringSlots && b-ringSlots < rr.wbufN {
			continue
		}
		end := (rr.hi[b] + page - 1) &^ (page - 1)
		off := b * ringBufSize
		if unix.Madvise(rr.slots[off+page:off+end], unix.MADV_DONTNEED) != nil {
			continue
		}
		n += end - page
		rr.hi[b] = page
	}
	return n
}

// TrimBuffers hands back the pages of the ring's buffers that super-packets
// made resident, once a call has found none read or built since the one
// before (see ringReader.trim), and reports how many bytes it gave. A
// reader in the middle of a round is left alone until the next call.
func (q *offloadQueue) TrimBuffers() int {
	if q.ring == nil || !q.ringMu.TryLock() {
		return 0
	}
	defer q.ringMu.Unlock()
	return q.ring.trim()
}

// ringNext returns the next packet read (its slot and length; release
// the slot with ringRelease), or slot -1 when there is none: the round's
// reads found the device empty, or this callback has had its round. An
// error comes back when nothing is in hand (have false). It runs in a
// read callback, under ringMu, after ringSettle.
func (q *offloadQueue) ringNext(fd uintptr, have bool) (slot, n int, err error) {
	rr := q.ring
	for {
		q.ringReap()
		if rr.nord > 0 {
			i := rr.order[0]
			copy(rr.order[:], rr.order[1:rr.nord])
			rr.nord--
			return i, int(rr.res[i]), nil
		}
		if rr.err != nil && !have {
			err, rr.err = rr.err, nil
			return -1, 0, err
		}
		if rr.tried {
			return -1, 0, nil
		}
		rr.tried = true
		if err := q.ringRound(int(fd)); err != nil {
			return -1, 0, err
		}
	}
}

// ringRound is one round: the deferred writes and rr.depth reads in one
// io_uring_enter; every one of them completes in it.
func (q *offloadQueue) ringRound(fd int) error {
	rr := q.ring
	posted := 0
	for i := 0; i < ringSlots && posted < rr.depth; i++ {
		if rr.busy[i] || rr.done[i] {
			continue
		}
		if !rr.r.prepRead(fd, rr.slot(i), uint64(i), rwfNoWait) {
			break
		}
		rr.busy[i] = true
		rr.fly++
		posted++
	}
	rr.found = 0
	if err := q.ringSubmit(); err != nil {
		return err
	}
	q.ringReap()
	switch {
	case posted == 0:
	case rr.found == posted:
		rr.depth = min(2*rr.depth, ringSlots)
	default:
		rr.depth = min(rr.found+1, ringSlots)
	}
	return q.ringWritesDone()
}

// ringSubmit submits what is queued, without waiting.
func (q *offloadQueue) ringSubmit() error {
	rr := q.ring
	writes := rr.wq
	if err := rr.r.enter(0); err != nil {
		return err
	}
	rr.wfly += writes
	rr.wq = 0
	rr.release()
	q.c.ringEnters.Add(1)
	return nil
}

// ringSettle submits the deferred writes if a packet is already in hand
// (the round that would have taken them is not needed) or all is set,
// and waits until every write is done: the caller's buffers, which they
// are written from, are about to be read into.
func (q *offloadQueue) ringSettle(all bool) error {
	rr := q.ring
	q.ringReap()
	if rr.wq > 0 && (all || rr.nord > 0) {
		if err := q.ringSubmit(); err != nil {
			return err
		}
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
		if err := rr.r.enter(1); err != nil {
			return err
		}
	}
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
			rr.touched(i, int(c.res))
			rr.order[rr.nord] = i
			rr.nord++
			rr.found++
			q.c.readSyscalls.Add(1)
		case c.res == 0:
			rr.err = io.EOF
		case unix.Errno(-c.res) == unix.EAGAIN:
			// The device is empty: the round is over.
		case unix.Errno(-c.res) == unix.EINTR || unix.Errno(-c.res) == unix.ECANCELED:
			// Submitted again next round.
		default:
			rr.err = unix.Errno(-c.res)
		}
	}
}

// ringRelease frees slot i for another read.
func (q *offloadQueue) ringRelease(i int) { q.ring.done[i] = false }

// ringBegin starts a read callback: false, with the error in q.rd.err,
// when there is nothing to read for (the ring gone, or a deferred write
// that could not be finished).
func (q *offloadQueue) ringBegin() bool {
	rr := q.ring
	if rr.gone {
		q.rd.err = os.ErrClosed
		return false
	}
	rr.tried = false
	if err := q.ringSettle(false); err != nil {
		q.rd.err = err
		return false
	}
	return true
}

// ringEnd ends a read callback: whether it is done (packets, or an
// error), or the reader is to wait in the poller, the round having
// found the device empty.
func (q *offloadQueue) ringEnd() bool {
	if q.rd.n > 0 || q.rd.err != nil {
		return true
	}
	if q.tid.Load() == 0 {
		q.tid.Store(int32(unix.Gettid()))
	}
	q.c.readWaits.Add(1)
	return false
}

// ringFlush sends the deferred writes and waits for them, for a Read
// whose buffers they are in.
func (q *offloadQueue) ringFlush() error {
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	if q.ring.gone {
		return nil
	}
	return q.ringSettle(true)
}

// readRingCallback is Read's RawConn callback on io_uring, like
// readCallback.
func (q *offloadQueue) readRingCallback(fd uintptr) bool { return q.ringRead(fd, false) }

// readGSORingCallback is ReadGSO's RawConn callback on io_uring, like
// readGSOCallback.
func (q *offloadQueue) readGSORingCallback(fd uintptr) bool { return q.ringRead(fd, true) }

// full says there is no room for another packet in Read's buffers or
// (gso) in ReadGSO's arena and packets.
func (r *readState) full(gso bool) bool {
	if gso {
		return r.n == len(r.pkts) || r.pos+r.headroom+readBufSize > len(r.arena)
	}
	return r.n == r.max
}

// ringRead takes the packets of the ring's slots, and of a round if it
// needs one, into Read's buffers or (gso) ReadGSO's arena.
func (q *offloadQueue) ringRead(fd uintptr, gso bool) bool {
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	if !q.ringBegin() {
		return true
	}
	r := &q.rd
	for !r.full(gso) {
		i, m, err := q.ringNext(fd, r.n > 0)
		if err != nil {
			r.err = err
			return true
		}
		if i < 0 {
			break
		}
		if gso {
			start := r.pos + r.headroom
			buf := r.arena[start-virtioNetHdrLen : start-virtioNetHdrLen+readBufSize]
			copy(buf, q.ring.slot(i)[:m])
			q.ringRelease(i)
			q.takeGSO(buf[:m], start)
			continue
		}
		// Through rbuf: the splitter may keep a super-packet's
		// segments for the next Read, when the slot has a new read.
		n := copy(q.rbuf, q.ring.slot(i)[:m])
		q.ringRelease(i)
		q.take(q.rbuf[:n])
	}
	return q.ringEnd()
}

// closeRing, for Close, with the reader out of its callback (ringMu
// held): writes not yet submitted are dropped, reads in flight (there
// should be none) cancelled and waited for, and the ring freed. If they
// do not complete in time the slots stay mapped: a read might still
// write into them.
func (q *offloadQueue) closeRing() {
	rr := q.ring
	rr.r.discard()
	rr.wq = 0
	rr.release()
	for i := 0; i < ringSlots; i++ {
		if rr.busy[i] {
			rr.r.prepCancel(uint64(i), tagCancel|uint64(i))
		}
	}
	for try := 0; try < 100 && (rr.fly > 0 || rr.wfly > 0 || rr.r.queued > 0); try++ {
		if err := rr.r.waitTimeout(10e6); err != nil {
			break
		}
		q.ringReap()
	}
	// The write buffers are in the mapping too.
	free := rr.fly == 0 && rr.wfly == 0
	rr.gone = true
	rr.r.close()
	if free {
		unix.Munmap(rr.slots)
	}
	rr.slots = nil
}

// ringWriter is a deferred writer (NewDeferredWriter): writes to t
// queued on the ring of q, the queue whose reader makes them.
type ringWriter struct {
	q, t *offloadQueue
	w    writeState
}

var (
	_ DeferredWriterSource = (*offloadQueue)(nil)
	_ BufferTrimmer        = (*offloadQueue)(nil)
)

// NewDeferredWriter implements DeferredWriterSource: for the reader of a
// WaitRing queue, a writer to this queue whose writes go out in that
// reader's next round, in the same io_uring_enter as its reads.
func (t *offloadQueue) NewDeferredWriter(reader GSODevice) (GSOWriter, bool) {
	var q *offloadQueue
	switch r := reader.(type) {
	case *offloadQueue:
		q = r
	case *OffloadDevice:
		q = r.offloadQueue // its queue 0, whose Read and ReadGSO it has
	}
	if q == nil || q.ring == nil {
		return nil, false
	}
	x := &ringWriter{q: q, t: t, w: writeState{deferred: true, ring: q}}
	if err := t.rc.Control(func(fd uintptr) { x.w.fd = fd }); err != nil {
		return nil, false
	}
	return x, true
}

// WriteGSO implements GSOWriter: the target queue's WriteGSO, each packet
// queued on the reader's ring. It reports a deferred write of an earlier
// call that failed, once. Until the writes are submitted, the target's
// Close waits (its closeMu is held for reading, once a round), so that
// its fd number is not another file's when they are.
func (x *ringWriter) WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error) {
	q, t := x.q, x.t
	q.ringMu.Lock()
	defer q.ringMu.Unlock()
	rr := q.ring
	if rr.gone || t.closed.Load() {
		return 0, t.wrapErr("write", os.ErrClosed)
	}
	if !rr.holds(t) {
		t.closeMu.RLock()
		if t.closed.Load() {
			t.closeMu.RUnlock()
			return 0, t.wrapErr("write", os.ErrClosed)
		}
		rr.held = append(rr.held, t)
	}
	n, err := t.writeGSO(&x.w, bufs, gso, offset)
	if err == nil && rr.werr != nil {
		err, rr.werr = t.wrapErr("write", rr.werr), nil
	}
	return n, err
}

// holds reports whether the ring's queued writes hold t's closeMu.
func (rr *ringReader) holds(t *offloadQueue) bool {
	for _, h := range rr.held {
		if h == t {
			return true
		}
	}
	return false
}

// release lets the targets of the writes submitted (or dropped) close.
func (rr *ringReader) release() {
	for i, t := range rr.held {
		t.closeMu.RUnlock()
		rr.held[i] = nil
	}
	rr.held = rr.held[:0]
}

// ringWrite queues pkt, a packet writeGSO made for fd, for the reader's
// next round; a full submission ring is submitted first.
func (q *offloadQueue) ringWrite(fd uintptr, pkt []byte) error {
	rr := q.ring
	if off := uintptr(unsafe.Pointer(unsafe.SliceData(pkt))) - uintptr(unsafe.Pointer(unsafe.SliceData(rr.slots))); off < uintptr(len(rr.slots)) && int(off) >= ringSlots*ringBufSize {
		b := int(off) / ringBufSize
		rr.touched(b, int(off)-b*ringBufSize+len(pkt))
	}
	for !rr.r.prepWrite(int(fd), pkt, tagWrite) {
		if err := q.ringSubmit(); err != nil {
			return q.wrapErr("write", err)
		}
		q.ringReap()
	}
	rr.wq++
	q.c.ringWrites.Add(1)
	return nil
}

// ringBuf is a buffer for one coalesced run of the deferred writer, kept
// until the writes are done. When all ringWBufs are taken, the writes
// queued (each buffer's among them: a buffer is written before the next
// is asked for) are sent and waited for, which frees them.
func (q *offloadQueue) ringBuf() ([]byte, error) {
	rr := q.ring
	if rr.wbufN == ringWBufs {
		if err := q.ringSettle(true); err != nil {
			return nil, q.wrapErr("write", err)
		}
		if rr.wbufN != 0 {
			return nil, q.wrapErr("write", fmt.Errorf("io_uring: write buffers still in use"))
		}
	}
	b := rr.wbuf(rr.wbufN)
	rr.wbufN++
	return b, nil
}
