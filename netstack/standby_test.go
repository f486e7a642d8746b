package netstack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tunvs/tunvs/tun"
)

// standbyDev is a queue that records Attach and Detach.
type standbyDev struct {
	tun.Device
	attached         bool
	attach, detaches int
}

func (d *standbyDev) Attach() error  { d.attached = true; d.attach++; return nil }
func (d *standbyDev) Detach() error  { d.attached = false; d.detaches++; return nil }
func (d *standbyDev) Attached() bool { return d.attached }

// TestStandbyPolicy drives the standby policy with a clock of its own: a
// queue is attached once the rate read passes the standby rate with two
// bulk flows (not with one); after standbyLow below 40% of it it is
// retired (written to no more, so a
// one-armed reader writes by queue 0) and standbyDrain later detached; a
// rate that comes back before the detach takes it back; after a quiet
// gap it is retired and detached at once; so it is when a single bulk
// flow is left, however fast. A device whose second queue is
// attached, or a single queue, has no policy.
func TestStandbyPolicy(t *testing.T) {
	if newStandby(nil, []tun.Device{&standbyDev{}}) != nil {
		t.Fatal("a policy for a single queue")
	}
	if newStandby(nil, []tun.Device{&standbyDev{}, &standbyDev{attached: true}}) != nil {
		t.Fatal("a policy for a queue not on standby")
	}
	q1 := &standbyDev{}
	h := New(Config{})
	defer h.Close()
	n := &NIC{h: h, name: "tap0", txq: []*txQueue{{}, {}}}
	s := newStandby(n, []tun.Device{&standbyDev{}, q1})
	if s == nil {
		t.Fatal("no policy for a queue on standby")
	}
	n.sb = s
	var now time.Duration
	s.clock = func() time.Duration { return now }
	// run reads perTick bytes every standbyTick for d, of two bulk
	// flows if two is set, else of one.
	two := true
	run := func(d time.Duration, perTick int) {
		for end := now + d; now < end; {
			now += standbyTick
			s.bytes.Add(uint64(perTick))
			s.flows[0].Store(7)
			if two {
				s.flows[1].Store(8)
			}
			s.tick()
		}
	}
	f := &fastPath{qi: 0}
	hairpin := func() int { return f.txQueue(n, n) }

	run(time.Second, DefaultStandbyRate/1000) // 10% of the down rate: nothing
	if q1.attach != 0 || n.queues() != 1 || hairpin() != 0 {
		t.Fatalf("attached %d times at a low rate; %d queues, hairpin to %d", q1.attach, n.queues(), hairpin())
	}
	two = false
	run(time.Second, DefaultStandbyRate/10) // twice the up rate, one flow
	if q1.attach != 0 || n.queues() != 1 {
		t.Fatalf("attached %d times for a single bulk flow", q1.attach)
	}
	two = true
	run(standbyTick, DefaultStandbyRate/10) // twice the up rate, two flows
	if !q1.attached || n.queues() != 2 || hairpin() != 1 {
		t.Fatalf("at twice the up rate: attached %v, %d queues, hairpin to %d", q1.attached, n.queues(), hairpin())
	}
	run(standbyLow-2*standbyTick, DefaultStandbyRate/1000)
	if n.queues() != 2 {
		t.Fatal("retired before standbyLow")
	}
	run(2*standbyTick, DefaultStandbyRate/1000)
	if n.queues() != 1 || hairpin() != 0 || !q1.attached {
		t.Fatalf("after standbyLow: %d queues, hairpin to %d, attached %v (want retired, not yet detached)", n.queues(), hairpin(), q1.attached)
	}
	run(standbyTick, DefaultStandbyRate/10) // back before the drain
	if n.queues() != 2 || q1.detaches != 0 || q1.attach != 1 {
		t.Fatalf("rate back before the detach: %d queues, %d detaches, %d attaches", n.queues(), q1.detaches, q1.attach)
	}
	run(standbyLow+standbyDrain+standbyTick, DefaultStandbyRate/1000)
	if n.queues() != 1 || q1.attached || q1.detaches != 1 {
		t.Fatalf("after standbyLow and standbyDrain: %d queues, attached %v, %d detaches", n.queues(), q1.attached, q1.detaches)
	}
	run(standbyTick, DefaultStandbyRate/10)
	if n.queues() != 2 || q1.attach != 2 {
		t.Fatalf("attached again: %d queues, %d attaches", n.queues(), q1.attach)
	}
	// One bulk flow left, as fast: retired and detached as when slow.
	two = false
	run(standbyLow+standbyDrain+2*standbyTick, DefaultStandbyRate/10)
	if n.queues() != 1 || q1.attached || q1.detaches != 2 {
		t.Fatalf("one bulk flow left: %d queues, attached %v, %d detaches", n.queues(), q1.attached, q1.detaches)
	}
	two = true
	run(standbyTick, DefaultStandbyRate/10)
	// Quiet for longer than standbyLow (no batch, no tick), then one.
	now += 2 * standbyLow
	run(standbyTick, 0)
	if n.queues() != 1 || q1.attached || q1.detaches != 3 {
		t.Fatalf("after a quiet gap: %d queues, attached %v, %d detaches (want detached at once)", n.queues(), q1.attached, q1.detaches)
	}
	if a, d := s.attaches.Load(), s.detaches.Load(); a != 3 || d != 3 {
		t.Errorf("counted %d attaches and %d detaches, want 3 and 3", a, d)
	}
}

// TestStandbyFlows checks what the reader of queue 0 counts as bulk
// flows: super-packets only, by their ports, two at most.
func TestStandbyFlows(t *testing.T) {
	s := newStandby(nil, []tun.Device{&standbyDev{}, &standbyDev{}})
	s.clock = func() time.Duration { return 0 } // never a tick
	arena := make([]byte, 4*standbyBig)
	pkt := func(off, sport int, size int) tun.GSOPacket {
		ip := arena[off+14:]
		ip[0], ip[9] = 0x45, 6
		binary.BigEndian.PutUint16(ip[20:], uint16(sport))
		binary.BigEndian.PutUint16(ip[22:], 80)
		return tun.GSOPacket{Off: off, Len: size}
	}
	small := pkt(0, 1000, 100)
	s.read(arena, []tun.GSOPacket{small}, 14, 0)
	if s.flows[0].Load() != 0 {
		t.Fatalf("a small packet counted as a bulk flow: %x", s.flows[0].Load())
	}
	a := pkt(standbyBig, 1001, standbyBig)
	s.read(arena, []tun.GSOPacket{a, a}, 14, 0)
	if s.flows[0].Load() != 1001<<16|80 || s.flows[1].Load() != 0 {
		t.Fatalf("one flow's super-packets: %x %x", s.flows[0].Load(), s.flows[1].Load())
	}
	b := pkt(2*standbyBig, 1002, standbyBig)
	s.read(arena, []tun.GSOPacket{b}, 14, 1) // queue 1's reader counts too
	if s.flows[1].Load() != 1002<<16|80 {
		t.Fatalf("two flows' super-packets: %x %x", s.flows[0].Load(), s.flows[1].Load())
	}
	if got := s.bytes.Load(); got != 100+2*standbyBig+standbyBig {
		t.Errorf("counted %d bytes", got)
	}
}
