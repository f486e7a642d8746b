package tun

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

const (
	// ethHeaderLen is the Ethernet II header (two MACs and the EtherType)
	// that a TAP frame carries on top of its MTU-sized payload.
	ethHeaderLen = 14

	// memBatchSize is how many packets an in-memory Read returns at most.
	// It matches what wireguard-go-style callers size their buffer sets to.
	memBatchSize = 64

	// memQueueLen bounds each in-memory receive queue, like a NIC ring: a
	// reader that falls this far behind loses packets instead of stalling
	// the writer or growing memory without limit.
	memQueueLen = 256

	// maxFDB bounds the switch's MAC table so that a port sending from
	// random source addresses cannot grow it without limit; once full,
	// new addresses are not learnt and frames to them are flooded.
	maxFDB = 4096
)

// Stats counts what was written to an in-memory device (for a Switch: to
// all its ports). A frame flooded by a Switch counts once per copy.
type Stats struct {
	// Delivered counts packets queued for a reader.
	Delivered uint64
	// DroppedFull counts packets lost because the reader's queue was full.
	DroppedFull uint64
	// DroppedTooBig counts packets larger than the MTU (+14 for TAP) of
	// the writer or, on a Switch, of the receiving port.
	DroppedTooBig uint64
	// DroppedRunt counts packets too short to be carried: empty on TUN,
	// shorter than an Ethernet header on TAP.
	DroppedRunt uint64
}

// Dropped is the total of all drop counters.
func (s Stats) Dropped() uint64 {
	return s.DroppedFull + s.DroppedTooBig + s.DroppedRunt
}

// counters is the concurrently updated form of Stats.
type counters struct {
	delivered, full, tooBig, runt atomic.Uint64
}

// add counts one outcome. pushClosed is not counted: the receiver went
// away while the packet was on its way, and a link that is down loses
// packets without anyone counting them.
func (c *counters) add(r pushResult) {
	switch r {
	case pushed:
		c.delivered.Add(1)
	case pushFull:
		c.full.Add(1)
	case pushTooBig:
		c.tooBig.Add(1)
	case pushRunt:
		c.runt.Add(1)
	}
}

func (c *counters) snapshot() Stats {
	return Stats{
		Delivered:     c.delivered.Load(),
		DroppedFull:   c.full.Load(),
		DroppedTooBig: c.tooBig.Load(),
		DroppedRunt:   c.runt.Load(),
	}
}

// pushResult tells a writer what became of a packet offered to a queue.
type pushResult uint8

const (
	pushed pushResult = iota
	pushFull
	pushTooBig
	pushRunt
	pushClosed
)

// queue is a bounded FIFO of packets for one reader. Its slots form a fixed
// pool of fixed-size buffers: a slot's buffer is allocated the first time
// the slot is used and reused forever after, so steady-state traffic does
// not allocate and memory is bounded by memQueueLen*frameSize.
type queue struct {
	frameSize int // capacity of every slot buffer: MTU (+14 for TAP)

	mu     sync.Mutex
	slots  [][]byte // len memQueueLen; slots[i][:lens[i]] is a packet
	lens   []int
	head   int // index of the oldest packet
	n      int // number of queued packets
	closed bool

	// ready holds a token while the queue may be non-empty, so a reader
	// can wait on it (and on done) without holding mu.
	ready chan struct{}
	// done is closed by close; it wakes readers for good.
	done      chan struct{}
	closeOnce sync.Once
}

func newQueue(frameSize int) *queue {
	return &queue{
		frameSize: frameSize,
		slots:     make([][]byte, memQueueLen),
		lens:      make([]int, memQueueLen),
		ready:     make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// push copies p into the queue, dropping it if the queue is full or p does
// not fit the slots. It never blocks on the reader.
func (q *queue) push(p []byte) pushResult {
	if len(p) > q.frameSize {
		return pushTooBig
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return pushClosed
	}
	if q.n == len(q.slots) {
		q.mu.Unlock()
		return pushFull
	}
	i := (q.head + q.n) % len(q.slots)
	if q.slots[i] == nil {
		q.slots[i] = make([]byte, q.frameSize)
	}
	q.lens[i] = copy(q.slots[i], p)
	q.n++
	q.mu.Unlock()
	q.signal()
	return pushed
}

// signal leaves a token in ready unless one is already there.
func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop blocks until at least one packet is queued or the queue is closed,
// then moves up to min(len(bufs), len(sizes)) packets into bufs[i][offset:].
func (q *queue) pop(name string, bufs [][]byte, sizes []int, offset int) (int, error) {
	limit := min(len(bufs), len(sizes))
	if limit == 0 {
		return 0, fmt.Errorf("read %s: no buffers", name)
	}
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return 0, fmt.Errorf("read %s: %w", name, ErrClosed)
		}
		if q.n == 0 {
			q.mu.Unlock()
			select {
			case <-q.ready:
			case <-q.done:
			}
			continue
		}
		count := 0
		var err error
		for count < limit && q.n > 0 {
			size := q.lens[q.head]
			if offset < 0 || offset > len(bufs[count]) || len(bufs[count])-offset < size {
				if count == 0 {
					// Drop it: leaving it queued would fail every
					// following Read the same way.
					err = fmt.Errorf("read %s: %d-byte packet does not fit buffer %d of %d bytes at offset %d: %w",
						name, size, count, len(bufs[count]), offset, io.ErrShortBuffer)
					q.head = (q.head + 1) % len(q.slots)
					q.n--
				}
				// Otherwise it stays queued: the batch so far is
				// returned and the next Read reports the problem.
				break
			}
			sizes[count] = copy(bufs[count][offset:], q.slots[q.head][:size])
			q.head = (q.head + 1) % len(q.slots)
			q.n--
			count++
		}
		more := q.n > 0
		q.mu.Unlock()
		if more {
			// Keep the token so that the next Read does not wait for
			// packets that are already here.
			q.signal()
		}
		return count, err
	}
}

// close discards queued packets and wakes the reader for good.
func (q *queue) close() {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.n = 0
		q.mu.Unlock()
		close(q.done)
	})
}

func (q *queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// MemDevice is an in-memory Device made by NewPair or Switch.Port. Besides
// the Device methods it reports counters with Stats.
type MemDevice struct {
	name string
	kind Kind
	mtu  int
	rx   *queue // packets for this device's reader

	// deliver carries one validated packet written to this device to its
	// destination(s) and counts the outcome.
	deliver func(p []byte)
	// detach closes the link or port; it must be idempotent.
	detach func()

	counters counters
	// shared, if not nil, also counts this device's packets (a Switch's
	// totals).
	shared *counters
}

var _ Device = (*MemDevice)(nil)

// maxFrame is the largest packet this device carries.
func (d *MemDevice) maxFrame() int {
	if d.kind == KindTAP {
		return d.mtu + ethHeaderLen
	}
	return d.mtu
}

// minFrame is the smallest packet this device carries.
func (d *MemDevice) minFrame() int {
	if d.kind == KindTAP {
		return ethHeaderLen
	}
	return 1
}

// Read blocks until at least one packet is queued, then returns as many as
// are queued and fit in bufs, without blocking again. A packet larger than
// its buffer is dropped and reported with io.ErrShortBuffer (wrapped).
func (d *MemDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return d.rx.pop(d.name, bufs, sizes, offset)
}

// Write copies each bufs[i][offset:] towards the other end, like a link:
// packets that are too big, too small or find the receiver's queue full
// are dropped and counted in Stats, not reported as errors. Write never
// blocks on the reader. It fails only once the device is closed.
func (d *MemDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.rx.isClosed() {
		return 0, fmt.Errorf("write %s: %w", d.name, ErrClosed)
	}
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return i, fmt.Errorf("write %s: offset %d outside buffer of %d bytes", d.name, offset, len(b))
		}
		p := b[offset:]
		switch {
		case len(p) > d.maxFrame():
			d.count(pushTooBig)
		case len(p) < d.minFrame():
			d.count(pushRunt)
		default:
			d.deliver(p)
		}
	}
	return len(bufs), nil
}

// count records what became of one packet this device wrote.
func (d *MemDevice) count(r pushResult) {
	d.counters.add(r)
	if d.shared != nil {
		d.shared.add(r)
	}
}

// Stats returns the counters for packets written to this device.
func (d *MemDevice) Stats() Stats { return d.counters.snapshot() }

// BatchSize is the largest number of packets Read returns at once.
func (d *MemDevice) BatchSize() int { return memBatchSize }

// Headroom is 0: in-memory devices write no header of their own.
func (d *MemDevice) Headroom() int { return 0 }

// MTU is the MTU given when the device was made.
func (d *MemDevice) MTU() int { return d.mtu }

// Kind is the kind given when the device was made.
func (d *MemDevice) Kind() Kind { return d.kind }

// Name is the device's label.
func (d *MemDevice) Name() string { return d.name }

// Close closes the device and wakes its reader; see NewPair and
// Switch.Port for what else it closes. Closing twice is a no-op.
func (d *MemDevice) Close() error {
	d.detach()
	return nil
}

// checkMem validates the arguments shared by NewPair and Switch.Port.
// Wrong arguments are programming errors in tests and labs, hence a panic
// rather than an error nobody would check.
func checkMem(kind Kind, mtu int) int {
	if kind != KindTUN && kind != KindTAP {
		panic(fmt.Sprintf("tun: invalid kind %d", kind))
	}
	if mtu <= 0 {
		return defaultMTU
	}
	return mtu
}

// NewPair returns two connected in-memory devices of the given kind: what
// is written to a is read from b and vice versa, like the two ends of a
// cable. mtu <= 0 means 1500. Each direction queues up to 256 packets in
// preallocated-on-first-use buffers; more are dropped and counted (see
// Stats), so writers never block. Both devices are *MemDevice.
//
// Closing either end takes the link down: Reads and Writes on both ends
// return ErrClosed and queued packets are discarded.
func NewPair(kind Kind, mtu int) (a, b Device) {
	mtu = checkMem(kind, mtu)
	da := &MemDevice{name: "mem-a", kind: kind, mtu: mtu}
	db := &MemDevice{name: "mem-b", kind: kind, mtu: mtu}
	da.rx = newQueue(da.maxFrame())
	db.rx = newQueue(db.maxFrame())
	da.deliver = func(p []byte) { da.count(db.rx.push(p)) }
	db.deliver = func(p []byte) { db.count(da.rx.push(p)) }
	down := func() {
		da.rx.close()
		db.rx.close()
	}
	da.detach, db.detach = down, down
	return da, db
}

// Switch is an in-memory learning Ethernet switch for TAP devices: it
// learns which port each source MAC address lives behind and forwards
// unicast frames only there; broadcast, multicast and frames to unknown
// addresses are flooded to every other port. A frame is never sent back to
// the port it came from. Learnt addresses do not age; they move when seen
// on another port and are forgotten when their port is closed.
//
// A Switch is safe for concurrent use; each port follows the Device rules.
// The zero value is not usable; call NewSwitch.
type Switch struct {
	mu     sync.RWMutex
	ports  []*MemDevice // attached ports, in attach order (flood order)
	fdb    map[[6]byte]*MemDevice
	closed bool

	counters counters // all ports' writes, including closed ports'
}

// NewSwitch returns a switch with no ports.
func NewSwitch() *Switch {
	return &Switch{fdb: make(map[[6]byte]*MemDevice)}
}

// Port attaches a new KindTAP port called name with the given MTU (<= 0
// means 1500) and returns it; its dynamic type is *MemDevice. Frames longer
// than a receiving port's MTU+14 are dropped for that port. Closing the
// port detaches it. On a closed switch the port is returned closed.
func (s *Switch) Port(name string, mtu int) Device {
	mtu = checkMem(KindTAP, mtu)
	p := &MemDevice{name: name, kind: KindTAP, mtu: mtu, shared: &s.counters}
	p.rx = newQueue(p.maxFrame())
	p.deliver = func(f []byte) { s.forward(p, f) }
	var once sync.Once
	p.detach = func() { once.Do(func() { s.detach(p) }) }

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		p.rx.close()
		return p
	}
	s.ports = append(s.ports, p)
	return p
}

// forward learns the source of frame f written to port from and passes f
// on. f is at least an Ethernet header long (checked by Write).
func (s *Switch) forward(from *MemDevice, f []byte) {
	var dst, src [6]byte
	copy(dst[:], f[0:6])
	copy(src[:], f[6:12])

	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return
	}
	// Learn unicast sources only: a multicast source is bogus and must
	// not capture traffic for a group address.
	if src[0]&1 == 0 && s.fdb[src] != from {
		s.mu.RUnlock()
		s.learn(src, from)
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			return
		}
	}
	defer s.mu.RUnlock()

	if dst[0]&1 == 0 { // unicast
		if to, ok := s.fdb[dst]; ok {
			if to != from { // a frame for its own segment is filtered
				s.send(from, to, f)
			}
			return
		}
	}
	for _, to := range s.ports {
		if to != from {
			s.send(from, to, f)
		}
	}
}

// learn records that src lives behind port p, if p is still attached and
// the table has room (or src is already known).
func (s *Switch) learn(src [6]byte, p *MemDevice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || p.rx.isClosed() {
		return
	}
	if _, known := s.fdb[src]; !known && len(s.fdb) >= maxFDB {
		return
	}
	s.fdb[src] = p
}

// send queues one copy of f for port to and counts it for the writing port
// (and so for the switch). Called with s.mu held for reading.
func (s *Switch) send(from, to *MemDevice, f []byte) {
	from.count(to.rx.push(f))
}

// detach removes p from the switch, forgets the addresses behind it and
// closes p so its reader wakes. p is closed under s.mu so that a concurrent
// learn (which checks p under s.mu) cannot re-add an address for it.
func (s *Switch) detach(p *MemDevice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.ports {
		if q == p {
			s.ports = append(s.ports[:i], s.ports[i+1:]...)
			break
		}
	}
	for mac, q := range s.fdb {
		if q == p {
			delete(s.fdb, mac)
		}
	}
	p.rx.close()
}

// Stats returns the switch-wide counters: every copy delivered to or
// dropped for a port, plus frames dropped on entry (too big, runts).
func (s *Switch) Stats() Stats {
	return s.counters.snapshot()
}

// Close detaches and closes every port. Ports made afterwards are closed.
func (s *Switch) Close() error {
	s.mu.Lock()
	s.closed = true
	ports := s.ports
	s.ports = nil
	clear(s.fdb)
	s.mu.Unlock()
	for _, p := range ports {
		p.Close()
	}
	return nil
}
