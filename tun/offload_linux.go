//go:build linux

package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/csum"
)

// offloadAvailable tells Open that this system has the offload device.
const offloadAvailable = true

// offloadBatchSize is the BatchSize of the offload device: one 64 KiB
// super-packet of 1500-byte segments is 45 packets, so 128 buffers take
// a couple of them per Read.
const offloadBatchSize = 128

// OffloadStats are the counters of a device opened with Config.Offload,
// summed over its queues.
type OffloadStats struct {
	ReadCalls     uint64 // Read calls that returned packets
	ReadSyscalls  uint64 // read(2) calls that returned a packet
	ReadPackets   uint64 // packets returned by Read (segments counted one by one)
	GSOReads      uint64 // GSO super-packets read
	GSOSegments   uint64 // packets split out of them
	ReadDrops     uint64 // packets dropped on read: malformed, or larger than the caller's buffer
	WriteSyscalls uint64 // write(2) calls
	WritePackets  uint64 // packets written (as the caller counts them)
	GSOWrites     uint64 // super-packets written
	GSOWriteSegs  uint64 // packets coalesced into them
	GSOPassed     uint64 // super-packets written whole, as ReadGSO handed them out (WriteGSO)
	BusyPollHits  uint64 // busy polls (Config.BusyPoll) that found a packet: a wait in the poller saved
	BusyPollWaits uint64 // busy polls that found none in time, the reader then waiting in the poller
	ReadWaits     uint64 // times a reader that found its queue empty slept and was woken (in Go's poller, or in ppoll: Config.ReadWait)
	RingEnters    uint64 // io_uring_enter calls of the readers (Config.ReadWait WaitRing): each a round of deferred writes and reads
	RingWrites    uint64 // packets written through the ring by a deferred writer (NewDeferredWriter), not counted in WriteSyscalls
	USO           bool   // the kernel accepted UDP segmentation offload (TUN_F_USO4/6)
	Queues        int    // number of queues (fds)
	// Ring says the readers read on io_uring (WaitRing); RingError is
	// why not, when WaitRing was asked for and the readers fell back to
	// Go's poller.
	Ring      bool
	RingError string
}

type offloadCounters struct {
	readCalls, readSyscalls, readPackets, gsoReads, gsoSegments, readDrops atomic.Uint64
	writeSyscalls, writePackets, gsoWrites, gsoWriteSegs, gsoPassed        atomic.Uint64
	busyPollHits, busyPollWaits, readWaits, ringEnters, ringWrites         atomic.Uint64
}

// OffloadDevice is a Linux TUN or TAP device opened with IFF_VNET_HDR and
// the TCP (and where the kernel has it, UDP) segmentation offloads, as
// Open returns it for Config{Offload: true}. Towards its user it behaves
// exactly like the plain device: Read returns ordinary, fully checksummed
// IP packets (TAP: Ethernet frames) of at most MTU bytes (TAP: MTU+14),
// and Write takes them.
// Underneath, the kernel hands out (and accepts) 64 KiB super-packets:
//
//   - Read drains the fd until it would block or bufs are full, splits
//     GSO super-packets (TCP, and UDP with USO) into MTU-sized packets,
//     completes every checksum, and keeps segments that do not fit in
//     bufs for the next Read, so it never loses a segment and never
//     returns ErrTooManySegments. Buffers of MTU() bytes after offset
//     suffice (a packet that does not fit is dropped and counted in
//     OffloadStats.ReadDrops, where the plain device would truncate it).
//   - Write coalesces runs of consecutive TCP segments of one flow
//     (contiguous sequence numbers, equal-sized payloads except a shorter
//     last one, same headers but for PSH, DF set on IPv4) into one
//     super-packet written with a single write(2); everything else is
//     written as is behind a zero virtio header. Write never reorders.
//   - Headroom is 10, the virtio header, which Write puts in front of a
//     packet in place (offset must be at least 10 for zero copy; smaller
//     offsets are copied).
//
// On a TAP the virtio header precedes the Ethernet frame and its offsets
// count from the frame's first byte (tun_put_user and tun_get_user in
// drivers/net/tun.c treat both kinds alike; the TAP's frame is the skb
// from its MAC header on). The device keeps that to itself: a super-frame
// is split into frames that each carry the super-frame's Ethernet header,
// a coalesced run shares one, and the GSO offsets of ReadGSO and WriteGSO
// count from the IP header, as on a TUN (see GSODevice).
//
// With Config.Queues > 1 the device is opened with IFF_MULTI_QUEUE and one
// fd per queue. Read and Write on the OffloadDevice use queue 0; Queues
// returns one Device per queue (index 0 included) for callers that run a
// reader and a writer per queue; Queues()[0] is the very queue the
// OffloadDevice's own Read and Write use, so use one or the other. The kernel spreads the flows it sends
// over the queues by hash, so a caller that reads only queue 0 of a
// multi-queue device misses packets: use Queues. Close on the
// OffloadDevice closes every queue.
type OffloadDevice struct {
	*offloadQueue
	queues  []*offloadQueue
	uso     bool
	ringErr error // why WaitRing fell back to the poller
}

var _ Device = (*OffloadDevice)(nil)

// offloadQueue is one fd of the device, a Device in its own right.
type offloadQueue struct {
	f      *os.File
	rc     syscall.RawConn
	name   string
	kind   Kind
	mtu    int
	closed atomic.Bool
	c      offloadCounters

	// uso says the kernel takes UDP super-packets (TUN_F_USO4/6): runs of
	// datagrams are coalesced on write then, as TCP segments always are.
	uso bool

	// Read side (Read is never called concurrently with Read).
	rbuf  []byte
	split splitter
	rd    readState
	// busyPoll is Config.BusyPoll; spinning says a busy poll is under
	// way, since spinSince.
	busyPoll  time.Duration
	spinning  bool
	spinSince time.Time
	// eth is the Ethernet header of the TAP super-frame being split, put
	// in front of each of its packets; l2 is its length, 0 when the
	// splitter holds a whole frame (or, on a TUN, always).
	eth [ethHdrLen]byte
	l2  int
	// thread says Config.ReadWait is WaitPoll or WaitThread: the reader
	// waits in ppoll on pfd (this fd and the eventfd efd, which Close
	// writes) instead of in Go's poller, from thread tid (its first
	// wait's); lock says to lock it there (WaitThread), locked that it
	// has. See readthread_linux.go.
	thread bool
	lock   bool
	locked bool
	efd    int
	pfd    [2]unix.PollFd
	tid    atomic.Int32
	// armed says Config.ReadWait is WaitArmed: the device's fd (devFd)
	// is in an epoll instance of its own (epFile, epRC), armed by a
	// reader that finds it empty (arm: on the next epReady) and waited
	// for in Go's poller; epEv is epReady's event, epErr its error,
	// epFn the callback. See readarmed_linux.go.
	armed  bool
	arm    bool
	devFd  int32
	epFile *os.File
	epRC   syscall.RawConn
	epEv   [1]unix.EpollEvent
	epErr  error
	epFn   func(fd uintptr) bool
	// ring is the reader on io_uring (WaitRing), used under ringMu: by
	// the reader's callbacks, its deferred writer, and Close. See
	// readring_linux.go.
	ring   *ringReader
	ringMu sync.Mutex
	// readFn and readGSOFn are the RawConn callbacks of Read and
	// ReadGSO, made on first use: a closure per call would be an
	// allocation per call; readRingFn is Read's on io_uring.
	readFn, readGSOFn, readRingFn func(fd uintptr) bool
	// Write side: the queue's own Write and WriteGSO (a WriterSource's
	// writers have their own writeState). closeMu is held for reading by
	// the writes that use the fd number itself (the writers'), for
	// writing by Close.
	writeState
	closeMu sync.RWMutex

	// Standby (standby_linux.go), on a multi-queue device's queues:
	// detached says the queue is out of the device's set; its reader
	// waits for sbWake (Attach) or sbClose (Close). sbMu orders Attach
	// and Detach.
	detached atomic.Bool
	sbWake   chan struct{}
	sbClose  chan struct{}
	sbMu     sync.Mutex
}

// writeState is what writing to a queue needs of its own: the queue's,
// or one of its writers' (NewWriter).
type writeState struct {
	// wbuf holds a coalesced run or a packet with no room for the
	// virtio header in front, made on first use.
	wbuf []byte
	// ordinary is zero offload states for Write (WriteGSO never changes
	// them), grown to the largest batch.
	ordinary []GSO
	wpkt     []byte
	werr     error
	writeFn  func(fd uintptr) bool
	// direct: write to fd, the queue's, directly (a writer's: see
	// writeDirect).
	direct bool
	fd     uintptr
	// deferred: queue the writes, to fd, on ring's ring (a deferred
	// writer's: see NewDeferredWriter), each coalesced run in a buffer
	// of its own.
	deferred bool
	ring     *offloadQueue
}

// readState is what a read callback works on: the arguments of the Read
// or ReadGSO call in progress, and what it found.
type readState struct {
	bufs   [][]byte
	sizes  []int
	offset int
	max    int

	arena    []byte
	headroom int
	pkts     []GSOPacket
	pos      int

	n   int
	err error
}

// openOffload opens the TUN or TAP device cfg describes (kind, already
// defaulted) with the offloads, and configures it like the plain device
// (MTU, up).
func openOffload(cfg Config, kind Kind) (Device, error) {
	nq := max(cfg.Queues, 1)
	ifr, err := unix.NewIfreq(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("name longer than %d bytes: %w", unix.IFNAMSIZ-1, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if kind == KindTAP {
		flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	}
	if nq > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	d := &OffloadDevice{}
	closeAll := func() {
		for _, q := range d.queues {
			q.Close()
		}
	}
	name, staged, err := stagedName(cfg.Name, nq)
	if err != nil {
		return nil, err
	}
	for i := 0; i < nq; i++ {
		fd, err := unix.Open(tunDevicePath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open %s: %w", tunDevicePath, err)
		}
		if ifr, err = unix.NewIfreq(name); err != nil {
			unix.Close(fd)
			closeAll()
			return nil, err
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			closeAll()
			return nil, fmt.Errorf("tunsetiff (queue %d): %w", i, err)
		}
		// Later queues attach to the interface the first one created.
		name = ifr.Name()
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtioNetHdrLen); err != nil {
			unix.Close(fd)
			closeAll()
			return nil, fmt.Errorf("tunsetvnethdrsz: %w", err)
		}
		if i == 0 {
			// The offloads belong to the interface: set through the
			// first fd they hold for all queues. USO (Linux 6.2+) is
			// optional; an older kernel answers EINVAL to its flags.
			// (Done on the raw fd: os.File.Fd would make it blocking.)
			uso, err := setOffloads(fd)
			if err != nil {
				unix.Close(fd)
				closeAll()
				return nil, err
			}
			d.uso = uso
		}
		var rr *ringReader
		if cfg.ReadWait == WaitRing && d.ringErr == nil {
			rr, err = newRingReader()
			if err == nil {
				if err = rr.probe(fd); err != nil {
					rr.free()
					rr = nil
				}
			}
			if err != nil {
				// Every queue falls back, as the first.
				d.ringErr = err
			}
		}
		var f *os.File
		var rc syscall.RawConn
		if cfg.ReadWait == WaitArmed {
			f, rc, err = newUnpolledFile(fd, tunDevicePath)
		} else {
			f = os.NewFile(uintptr(fd), tunDevicePath)
			rc, err = f.SyscallConn()
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			if rr != nil {
				rr.free()
			}
			closeAll()
			return nil, err
		}
		q := &offloadQueue{
			f: f, rc: rc, name: name, kind: kind,
			busyPoll: cfg.BusyPoll,
		}
		if nq > 1 {
			q.sbWake, q.sbClose = make(chan struct{}, 1), make(chan struct{})
		}
		d.queues = append(d.queues, q)
		if rr != nil {
			q.ring = rr
		} else if cfg.ReadWait == WaitArmed {
			// The queue's own writes go to the fd directly too: its
			// RawConn cannot wait for a full buffer (see write).
			q.writeState = writeState{direct: true, fd: uintptr(fd)}
			if err := q.openArmed(fd); err != nil {
				closeAll()
				return nil, err
			}
		} else if cfg.ReadWait == WaitPoll || cfg.ReadWait == WaitThread {
			if err := q.openReadThread(cfg.ReadWait == WaitThread); err != nil {
				closeAll()
				return nil, err
			}
		}
		if queueAttached != nil {
			queueAttached(i)
		}
	}
	if staged {
		// Every queue is attached: the device may appear.
		if err := renameLink(name, cfg.Name); err != nil {
			closeAll()
			return nil, err
		}
		name = cfg.Name
	}
	mtu, err := configure(name, cfg)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("configure %s: %w", name, err)
	}
	for _, q := range d.queues {
		q.name, q.mtu, q.uso = name, mtu, d.uso
	}
	if cfg.Standby {
		for _, q := range d.queues[1:] {
			if err := q.Detach(); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	d.offloadQueue = d.queues[0]
	return d, nil
}

// setOffloads enables checksum offload, TSO for IPv4 and IPv6 and, when
// the kernel knows it, USO; it reports whether USO is on.
func setOffloads(fd int) (bool, error) {
	base := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base|unix.TUN_F_USO4|unix.TUN_F_USO6)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return false, fmt.Errorf("tunsetoffload: %w", err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, base); err != nil {
		return false, fmt.Errorf("tunsetoffload: %w", err)
	}
	return false, nil
}

// Queues returns one Device per queue, queue 0 first. Each has its own
// fd, its own Read and Write (callable concurrently with the other
// queues') and the same name and MTU; closing one detaches only that
// queue. Stats covers them all.
func (d *OffloadDevice) Queues() []Device {
	out := make([]Device, len(d.queues))
	for i, q := range d.queues {
		out[i] = q
	}
	return out
}

// Stats returns the device's counters, summed over all queues.
func (d *OffloadDevice) Stats() OffloadStats {
	s := OffloadStats{USO: d.uso, Queues: len(d.queues), Ring: d.queues[0].ring != nil}
	if d.ringErr != nil {
		s.RingError = d.ringErr.Error()
	}
	for _, q := range d.queues {
		c := &q.c
		s.ReadCalls += c.readCalls.Load()
		s.ReadSyscalls += c.readSyscalls.Load()
		s.ReadPackets += c.readPackets.Load()
		s.GSOReads += c.gsoReads.Load()
		s.GSOSegments += c.gsoSegments.Load()
		s.ReadDrops += c.readDrops.Load()
		s.WriteSyscalls += c.writeSyscalls.Load()
		s.WritePackets += c.writePackets.Load()
		s.GSOWrites += c.gsoWrites.Load()
		s.GSOWriteSegs += c.gsoWriteSegs.Load()
		s.GSOPassed += c.gsoPassed.Load()
		s.BusyPollHits += c.busyPollHits.Load()
		s.BusyPollWaits += c.busyPollWaits.Load()
		s.ReadWaits += c.readWaits.Load()
		s.RingEnters += c.ringEnters.Load()
		s.RingWrites += c.ringWrites.Load()
	}
	return s
}

// RingFallback is why a device opened with ReadWait WaitRing reads in Go's
// poller instead of on io_uring; nil when it reads on io_uring, or was
// not asked to.
func (d *OffloadDevice) RingFallback() error { return d.ringErr }

// Close closes every queue; the (non-persistent) interface goes away with
// the last fd. Closing twice is a no-op.
func (d *OffloadDevice) Close() error {
	var first error
	for _, q := range d.queues {
		if err := q.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Read implements Device.Read; see OffloadDevice.
func (q *offloadQueue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, fmt.Errorf("read %s: no buffers", q.name)
	}
	if offset < 0 || offset >= len(bufs[0]) {
		return 0, fmt.Errorf("read %s: offset %d outside buffer of %d bytes", q.name, offset, len(bufs[0]))
	}
	for {
		if err := q.readReady(); err != nil {
			return 0, err
		}
		n, err := q.read(bufs, sizes, offset)
		if err == nil || q.sbWake == nil {
			return n, err
		}
		if again, werr := q.standbyWait(err); !again {
			return n, werr
		}
	}
}

// readReady is for a reader about to read: ErrClosed once the queue is
// closed and, on a queue that may be on standby, the wait while it is
// detached. A read that fails on a queue on standby goes to standbyWait
// (it may have been detached meanwhile).
func (q *offloadQueue) readReady() error {
	if q.closed.Load() {
		return q.wrapErr("read", os.ErrClosed)
	}
	if q.sbWake != nil {
		_, err := q.standbyWait(nil)
		return err
	}
	return nil
}

// read is Read on an attached queue.
func (q *offloadQueue) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	max := min(len(bufs), len(sizes))
	if q.ring != nil {
		// A deferred writer's packets are in bufs: out before they
		// are read into.
		if err := q.ringFlush(); err != nil {
			return 0, q.wrapErr("write", err)
		}
	}
	n := q.drain(bufs, sizes, offset, 0, max)
	if n == max {
		q.c.readCalls.Add(1)
		q.c.readPackets.Add(uint64(n))
		return n, nil
	}
	q.rd = readState{bufs: bufs, sizes: sizes, offset: offset, max: max, n: n}
	if q.readFn == nil {
		q.readFn = q.readCallback
		// Made on first use: a reader that uses ReadGSO never needs it.
		q.rbuf = make([]byte, readBufSize)
	}
	fn := q.readFn
	if q.ring != nil {
		if q.readRingFn == nil {
			q.readRingFn = q.readRingCallback
		}
		fn = q.readRingFn
	}
	err := q.rc.Read(fn)
	q.rd.bufs, q.rd.sizes = nil, nil
	return q.readResult(err)
}

// readResult ends Read and ReadGSO: the number of packets the callback
// took or, if none, the error (err from RawConn.Read, else the
// callback's). Packets already taken are returned; an error, if it
// persists, comes back on the next call.
func (q *offloadQueue) readResult(err error) (int, error) {
	if n := q.rd.n; n > 0 {
		q.c.readCalls.Add(1)
		q.c.readPackets.Add(uint64(n))
		return n, nil
	}
	if err == nil {
		err = q.rd.err
	}
	return 0, q.wrapErr("read", err)
}

// readCallback is Read's RawConn callback: it reads until bufs are full
// or the device is empty, and returns false to wait in the poller only
// while nothing is read.
func (q *offloadQueue) readCallback(fd uintptr) bool {
	r := &q.rd
	for r.n < r.max {
		m, more, done := q.read1(fd, q.rbuf)
		if !more {
			return done
		}
		if m < 0 {
			continue
		}
		q.take(q.rbuf[:m])
	}
	return true
}

// take gives the splitter one packet as read (virtio header first) and
// hands its packets out into Read's buffers, or drops it.
func (q *offloadQueue) take(b []byte) {
	r := &q.rd
	if err := q.load(b); err != nil {
		q.c.readDrops.Add(1)
		return
	}
	if q.split.gso {
		q.c.gsoReads.Add(1)
	}
	r.n = q.drain(r.bufs, r.sizes, r.offset, r.n, r.max)
}

// read1 is one read(2) of a read callback into buf. It returns the
// packet's length (-1: interrupted, try again), or more false and what
// the callback is to return: true with an error in q.rd.err, or, when the
// device is empty, whether packets are in hand (wait in the poller only
// while nothing is read).
func (q *offloadQueue) read1(fd uintptr, buf []byte) (m int, more, done bool) {
	m, err := rawRead(fd, buf)
	switch {
	case err == unix.EAGAIN:
		if q.rd.n == 0 && q.spin() {
			return -1, true, false
		}
		if q.rd.n == 0 && q.thread {
			if err := q.waitThread(fd); err != nil {
				q.rd.err = err
				return 0, false, true
			}
			return -1, true, false
		}
		if q.rd.n == 0 && q.armed {
			if err := q.waitArmed(); err != nil {
				q.rd.err = err
				return 0, false, true
			}
			q.c.readWaits.Add(1)
			return -1, true, false
		}
		if q.rd.n == 0 {
			// Back to the poller (the callback returns false),
			// woken when the device has a packet.
			q.c.readWaits.Add(1)
		}
		return 0, false, q.rd.n > 0
	case err == unix.EINTR:
		return -1, true, false
	case err != nil:
		q.rd.err = err
		return 0, false, true
	case m == 0:
		q.rd.err = io.EOF
		return 0, false, true
	}
	q.c.readSyscalls.Add(1)
	if q.spinning {
		q.spinning = false
		q.c.busyPollHits.Add(1)
	}
	return m, true, false
}

// spin is the busy poll (Config.BusyPoll) of a reader that found the
// device empty with nothing read: whether to try again rather than wait
// in the poller. Between tries it yields, so that the goroutines it
// shares a P with (the other devices' readers, the stack) still run.
func (q *offloadQueue) spin() bool {
	if q.busyPoll <= 0 {
		return false
	}
	if !q.spinning {
		q.spinning, q.spinSince = true, time.Now()
	} else if time.Since(q.spinSince) >= q.busyPoll {
		q.spinning = false
		q.c.busyPollWaits.Add(1)
		return false
	}
	runtime.Gosched()
	return true
}

// load gives the splitter one packet as read (virtio header first). A
// TAP super-frame has its Ethernet header kept aside, for drain to put in
// front of every packet, and is split as the IP packet behind it; any
// other frame is handed out whole.
func (q *offloadQueue) load(b []byte) error {
	q.l2 = 0
	if q.kind != KindTAP {
		return q.split.load(b)
	}
	if len(b) < virtioNetHdrLen+1 {
		q.split.reset()
		return errBadVirtioHdr
	}
	var h virtioHdr
	h.decode(b)
	f := b[virtioNetHdrLen:]
	if h.gsoType&^vnetGSOECN == vnetGSONone {
		// The checksum offsets count from the frame: finished there.
		return q.split.loadParts(&h, f)
	}
	if !ipFrame(f) || !toIPOffsets(&h) {
		q.split.reset()
		return errBadVirtioHdr
	}
	q.l2 = copy(q.eth[:], f)
	return q.split.loadParts(&h, f[ethHdrLen:])
}

// ipFrame reports whether f is an Ethernet frame carrying IPv4 or IPv6.
func ipFrame(f []byte) bool {
	if len(f) <= ethHdrLen {
		return false
	}
	et := binary.BigEndian.Uint16(f[12:])
	return et == etherTypeIPv4 || et == etherTypeIPv6
}

// toIPOffsets makes the offsets of a TAP frame's virtio header count from
// the IP header instead of the frame; false if they point into the
// Ethernet header.
func toIPOffsets(h *virtioHdr) bool {
	if h.flags&vnetFlagNeedsCsum != 0 {
		if h.csumStart < ethHdrLen {
			return false
		}
		h.csumStart -= ethHdrLen
	}
	if h.gsoType&^vnetGSOECN != vnetGSONone {
		if h.hdrLen < ethHdrLen {
			// A hint only (the splitter uses the TCP header's own
			// length), as in loadParts.
			h.hdrLen = ethHdrLen
		}
		h.hdrLen -= ethHdrLen
	}
	return true
}

// drain hands out the splitter's packets into bufs[n:max] and returns the
// new count; on a TAP each packet of a super-frame gets its Ethernet
// header in front.
func (q *offloadQueue) drain(bufs [][]byte, sizes []int, offset, n, max int) int {
	for n < max && q.split.pending() {
		if offset+q.l2 > len(bufs[n]) {
			// Cannot happen for bufs[0] (checked) and is the
			// caller's bug otherwise; skipping keeps the loop finite.
			q.split.done = true
			q.c.readDrops.Add(1)
			break
		}
		gso := q.split.gso
		m, err := q.split.next(bufs[n][offset+q.l2:])
		if err != nil {
			q.c.readDrops.Add(1)
			continue
		}
		if gso {
			q.c.gsoSegments.Add(1)
		}
		copy(bufs[n][offset:], q.eth[:q.l2])
		sizes[n] = q.l2 + m
		n++
	}
	return n
}

// Write implements Device.Write; see OffloadDevice. It is WriteGSO with
// every packet ordinary.
func (q *offloadQueue) Write(bufs [][]byte, offset int) (int, error) {
	for len(q.ordinary) < len(bufs) {
		q.ordinary = append(q.ordinary, GSO{})
	}
	return q.WriteGSO(bufs, q.ordinary[:len(bufs)], offset)
}

// write writes one packet (virtio header included), waiting in the
// poller if the device's queue is full.
func (q *offloadQueue) write(w *writeState, pkt []byte) error {
	if w.deferred {
		return w.ring.ringWrite(w.fd, pkt)
	}
	q.c.writeSyscalls.Add(1)
	if w.direct {
		if done, err := q.writeDirect(w.fd, pkt); done {
			return err
		}
		for q.armed {
			// Not in the runtime's poller: wait here.
			if err := q.waitWritable(w.fd); err != nil {
				return q.wrapErr("write", err)
			}
			if done, err := q.writeDirect(w.fd, pkt); done {
				return err
			}
		}
	}
	w.wpkt, w.werr = pkt, nil
	if w.writeFn == nil {
		w.writeFn = w.writeCallback
	}
	err := q.rc.Write(w.writeFn)
	w.wpkt = nil
	if err == nil {
		err = w.werr
	}
	if err != nil {
		return q.wrapErr("write", err)
	}
	return nil
}

// writeCallback is write's RawConn callback.
func (w *writeState) writeCallback(fd uintptr) bool {
	for {
		_, err := rawWrite(fd, w.wpkt)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.werr = err
		return true
	}
}

// buf is a buffer to build one packet in: w.wbuf, made on first use,
// or for a deferred writer one of its ring's, not reused before the
// write is done.
func (w *writeState) buf() ([]byte, error) {
	if w.deferred {
		return w.ring.ringBuf()
	}
	if w.wbuf == nil {
		w.wbuf = make([]byte, ethHdrLen+readBufSize)
	}
	return w.wbuf, nil
}

// wrapErr maps "closed" errors to ErrClosed and names the device.
func (q *offloadQueue) wrapErr(op string, err error) error {
	if q.closed.Load() || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s %s: %w", op, q.name, ErrClosed)
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%s %s: unexpected end of file: %w", op, q.name, err)
	}
	return fmt.Errorf("%s %s: %w", op, q.name, err)
}

// BatchSize is the number of packets one Read may return.
func (q *offloadQueue) BatchSize() int { return offloadBatchSize }

// Headroom is the virtio-net header Write puts in front of each packet.
func (q *offloadQueue) Headroom() int { return virtioNetHdrLen }

// MTU is the interface MTU as read back after configuration; Read never
// returns a larger packet than the kernel would send without offloads.
func (q *offloadQueue) MTU() int { return q.mtu }

// Kind is KindTUN or KindTAP as opened.
func (q *offloadQueue) Kind() Kind { return q.kind }

// Name is the kernel's name for the interface.
func (q *offloadQueue) Name() string { return q.name }

// Close closes this queue's fd and wakes a Read blocked on it. Closing
// twice is a no-op.
func (q *offloadQueue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	if q.sbClose != nil {
		close(q.sbClose)
	}
	q.wakeThread()
	q.closeArmed()
	if q.ring != nil {
		// Under ringMu: no read callback or deferred write is using
		// the ring, and none will after (they find it gone).
		q.ringMu.Lock()
		q.closeRing()
		q.ringMu.Unlock()
	}
	// No Writer's write is under way on the fd number once closeMu is
	// held, and none starts after (they see closed): the number is not
	// reused under them.
	q.closeMu.Lock()
	err := q.f.Close()
	q.closeMu.Unlock()
	q.closeThread()
	if err != nil {
		return fmt.Errorf("close %s: %w", q.name, err)
	}
	return nil
}

var _ GSODevice = (*offloadQueue)(nil)

// ReadGSO implements GSODevice: packets are handed up as the kernel wrote
// them, super-packets whole and partial checksums partial, except that a
// partial checksum anywhere but in a TCP or UDP header right after a plain
// IP header is finished here (see checkPartial). Segments that an earlier
// Read left pending are not returned: use one of Read and ReadGSO.
func (q *offloadQueue) ReadGSO(arena []byte, headroom int, pkts []GSOPacket) (int, error) {
	headroom = max(headroom, virtioNetHdrLen)
	if len(pkts) == 0 || len(arena) < headroom+readBufSize {
		return 0, fmt.Errorf("read %s: arena of %d bytes or %d packets too small", q.name, len(arena), len(pkts))
	}
	for {
		if err := q.readReady(); err != nil {
			return 0, err
		}
		n, err := q.readGSO(arena, headroom, pkts)
		if err == nil || q.sbWake == nil {
			return n, err
		}
		if again, werr := q.standbyWait(err); !again {
			return n, werr
		}
	}
}

// readGSO is ReadGSO on an attached queue.
func (q *offloadQueue) readGSO(arena []byte, headroom int, pkts []GSOPacket) (int, error) {
	q.rd = readState{arena: arena, headroom: headroom, pkts: pkts}
	if q.readGSOFn == nil {
		q.readGSOFn = q.readGSOCallback
		if q.ring != nil {
			q.readGSOFn = q.readGSORingCallback
		}
	}
	err := q.rc.Read(q.readGSOFn)
	q.rd.arena, q.rd.pkts = nil, nil
	if err != nil && q.ring != nil {
		// The callback did not run: the deferred writes still wait
		// (holding their targets' Close).
		_ = q.ringFlush()
	}
	return q.readResult(err)
}

// readGSOCallback is ReadGSO's RawConn callback, like readCallback.
func (q *offloadQueue) readGSOCallback(fd uintptr) bool {
	r := &q.rd
	for r.n < len(r.pkts) && r.pos+r.headroom+readBufSize <= len(r.arena) {
		start := r.pos + r.headroom
		buf := r.arena[start-virtioNetHdrLen : start-virtioNetHdrLen+readBufSize]
		m, more, done := q.read1(fd, buf)
		if !more {
			return done
		}
		if m < 0 {
			continue
		}
		q.takeGSO(buf[:m], start)
	}
	return true
}

// takeGSO hands out the packet read into buf (virtio header first),
// which starts at start in ReadGSO's arena, or drops it.
func (q *offloadQueue) takeGSO(buf []byte, start int) {
	r := &q.rd
	g, ok := q.inspect(buf)
	if !ok {
		q.c.readDrops.Add(1)
		return
	}
	size := len(buf) - virtioNetHdrLen
	r.pkts[r.n] = GSOPacket{Off: start, Len: size, GSO: g}
	r.n++
	// The next packet starts 8-byte aligned, and a small one leaves a
	// SmallSlot for the NAT to rebuild it in place.
	r.pos = (start + max(size, SmallSlot) + 7) &^ 7
}

// inspect validates one packet as read (virtio header first) and returns
// its offload state. A partial checksum on an ordinary packet stays
// partial where a router finds it (see GSO.InPlace) and is finished here
// otherwise; a super-packet is handed up as it is. On a TAP the offsets
// are made to count from the IP header; a frame of another type (ARP, a
// VLAN tag) has its checksum finished and is handed up as ordinary, or
// dropped if it is a super-frame.
func (q *offloadQueue) inspect(b []byte) (GSO, bool) {
	var h virtioHdr
	h.decode(b)
	p := b[virtioNetHdrLen:]
	if q.kind == KindTAP {
		if !ipFrame(p) {
			if h.gsoType&^vnetGSOECN != vnetGSONone || len(p) == 0 {
				return GSO{}, false
			}
			if h.flags&vnetFlagNeedsCsum != 0 {
				start, off := int(h.csumStart), int(h.csumOffset)
				if start+off+2 > len(p) {
					return GSO{}, false
				}
				csum.Finish(p, start, off)
			}
			return GSO{}, true
		}
		if !toIPOffsets(&h) {
			return GSO{}, false
		}
		p = p[ethHdrLen:]
	}
	if h.gsoType&^vnetGSOECN == vnetGSONone {
		if len(p) == 0 {
			return GSO{}, false
		}
		if h.flags&vnetFlagNeedsCsum == 0 {
			return GSO{}, true
		}
		g := GSO{NeedsCsum: true, CsumStart: h.csumStart, CsumOffset: h.csumOffset}
		if g.InPlace(p) {
			return g, true
		}
		return GSO{}, FinishChecksum(p, g)
	}
	s := &q.split
	defer s.reset()
	if err := s.loadParts(&h, p); err != nil {
		return GSO{}, false
	}
	g := gsoOf(&h, s)
	q.c.gsoReads.Add(1)
	return g, true
}

// WriteGSO implements GSODevice. A packet whose GSO is pending goes out
// with that virtio header, as one write; runs of ordinary packets (a
// partial checksum is fine) are coalesced as Write does.
func (q *offloadQueue) WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error) {
	return q.writeGSO(&q.writeState, bufs, gso, offset)
}

func (q *offloadQueue) writeGSO(w *writeState, bufs [][]byte, gso []GSO, offset int) (int, error) {
	if len(gso) < len(bufs) {
		return 0, fmt.Errorf("write %s: %d offload states for %d packets", q.name, len(gso), len(bufs))
	}
	if q.closed.Load() {
		return 0, q.wrapErr("write", os.ErrClosed)
	}
	for _, b := range bufs {
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("write %s: offset %d outside buffer of %d bytes", q.name, offset, len(b))
		}
	}
	l2 := 0
	if q.kind == KindTAP {
		l2 = ethHdrLen
	}
	done := 0
	for done < len(bufs) {
		run, udp := 1, false
		if gso[done].Type == GSONone {
			end := done + 1
			for end < len(bufs) && gso[end].Type == GSONone {
				end++
			}
			if l2 > 0 {
				end = done + sameEth(bufs[done:end], offset)
			}
			if end-done > 1 {
				run = coalesceRun(bufs[done:end], offset+l2)
				if run == 1 && q.uso {
					udp = true
					run = coalesceRunUDP(bufs[done:end], offset+l2)
				}
			}
		}
		var pkt []byte
		if run > 1 {
			wb, err := w.buf()
			if err != nil {
				return done, err
			}
			fill := coalesce
			if udp {
				fill = coalesceUDP
			}
			pkt = wb[:l2+fill(wb[l2:], bufs[done:done+run], offset+l2)]
			if l2 > 0 {
				// The virtio header goes in front of the run's
				// Ethernet header, counting from it.
				var h virtioHdr
				h.decode(wb[l2:])
				copy(wb[virtioNetHdrLen:], bufs[done][offset:offset+l2])
				toFrameOffsets(&h)
				h.encode(wb)
			}
		} else {
			h := gso[done].hdr()
			if l2 > 0 {
				toFrameOffsets(&h)
			}
			if b := bufs[done]; offset >= virtioNetHdrLen {
				pkt = b[offset-virtioNetHdrLen:]
			} else {
				wb, err := w.buf()
				if err != nil {
					return done, err
				}
				pkt = wb[:virtioNetHdrLen+copy(wb[virtioNetHdrLen:], b[offset:])]
			}
			h.encode(pkt)
		}
		if err := q.write(w, pkt); err != nil {
			return done, err
		}
		switch {
		case run > 1:
			q.c.gsoWrites.Add(1)
			q.c.gsoWriteSegs.Add(uint64(run))
		case gso[done].Type != GSONone:
			q.c.gsoPassed.Add(1)
		}
		q.c.writePackets.Add(uint64(run))
		done += run
	}
	return done, nil
}

// sameEth is how many frames, from frames[0] on, are IP frames with the
// Ethernet header of the first: a run that may be coalesced into one
// super-frame (1 when frames[0] goes alone).
func sameEth(frames [][]byte, offset int) int {
	f := frames[0][offset:]
	if !ipFrame(f) {
		return 1
	}
	n := 1
	for n < len(frames) {
		g := frames[n][offset:]
		if len(g) <= ethHdrLen || string(g[:ethHdrLen]) != string(f[:ethHdrLen]) {
			break
		}
		n++
	}
	return n
}

// toFrameOffsets is toIPOffsets undone, for a frame to write.
func toFrameOffsets(h *virtioHdr) {
	if h.flags&vnetFlagNeedsCsum != 0 {
		h.csumStart += ethHdrLen
	}
	if h.gsoType&^vnetGSOECN != vnetGSONone {
		h.hdrLen += ethHdrLen
	}
}

// rawRead and rawWrite are read(2) and write(2) on the device's
// non-blocking fd without telling the Go scheduler (RawSyscall, no
// entersyscall/exitsyscall). Neither ever sleeps: the fd is non-blocking,
// a read copies one queued packet or fails with EAGAIN, and a write runs
// the kernel's receive path for the packet (softirq work in the caller's
// context, as for any TUN write) and returns. Told of it, the scheduler
// would hand the P to another thread whenever a write took longer than
// sysmon's 20 µs tick, which under load is most of them: futex wakeups
// and thread switches per packet, for nothing.
func rawRead(fd uintptr, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawWrite(fd uintptr, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
