package netstack

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

func fixedCost() int { return 1 }

// One destination: a burst of XRLIM_BURST_FACTOR (6) messages, then one
// per icmp_ratelimit (1 s) of time, never more than 6 saved up
// (inet_peer_xrlim_allow).
func TestICMPLimitPerDestination(t *testing.T) {
	l := newICMPLimiter()
	l.cost = fixedCost
	dst := netip.MustParseAddr("10.0.0.10")
	now := int64(1e18)
	count := func(n int) int {
		ok := 0
		for range n {
			if l.allow(dst, now) {
				ok++
			}
		}
		return ok
	}
	if got := count(100); got != 6 {
		t.Fatalf("burst: %d allowed, want 6", got)
	}
	now += int64(500 * time.Millisecond)
	if got := count(10); got != 0 {
		t.Fatalf("after 0.5 s: %d, want 0", got)
	}
	now += int64(500 * time.Millisecond)
	if got := count(10); got != 1 {
		t.Fatalf("after 1 s: %d, want 1", got)
	}
	now += int64(time.Hour)
	if got := count(100); got != 6 {
		t.Fatalf("after an hour: %d, want 6 (the cap)", got)
	}
	// Another destination has its own bucket (the host's, which the
	// refused messages above drained as the kernel's do, refills first).
	now += int64(time.Second)
	if !l.allow(netip.MustParseAddr("fd00::10"), now) {
		t.Error("a second destination was limited by the first")
	}
}

// Many destinations: the host's bucket, icmp_msgs_burst (50) at once and
// icmp_msgs_per_sec (1000) a second after, refilled at most every 20 ms
// (icmp_global_allow).
func TestICMPLimitGlobal(t *testing.T) {
	l := newICMPLimiter()
	l.cost = fixedCost
	now := int64(1e18)
	l.stamp = now
	next := 0
	count := func(n int) int {
		ok := 0
		for range n {
			next++
			dst := netip.AddrFrom4([4]byte{10, byte(next >> 16), byte(next >> 8), byte(next)})
			if l.allow(dst, now) {
				ok++
			}
		}
		return ok
	}
	if got := count(1000); got != 50 {
		t.Fatalf("burst: %d allowed, want 50", got)
	}
	now += int64(10 * time.Millisecond)
	if got := count(1000); got != 0 {
		t.Fatalf("after 10 ms: %d, want 0 (refill every 20 ms)", got)
	}
	now += int64(10 * time.Millisecond)
	if got := count(1000); got != 20 {
		t.Fatalf("after 20 ms: %d, want 20", got)
	}
	now += int64(10 * time.Second)
	if got := count(1000); got != 50 {
		t.Fatalf("after 10 s: %d, want 50 (the burst caps the credit)", got)
	}
	// One second of a flood of errors to spoofed sources sends about
	// icmp_msgs_per_sec, whatever the flood's rate.
	sent := 0
	for range 1000 {
		now += int64(time.Millisecond)
		sent += count(100)
	}
	if sent < 900 || sent > 1100 {
		t.Errorf("%d sent in a second of 100k errors, want about 1000", sent)
	}
}

// sinkDev takes writes and counts them; reads block until Close.
type sinkDev struct {
	tun.Device
	writes atomic.Int64
}

func (d *sinkDev) Write(bufs [][]byte, off int) (int, error) {
	d.writes.Add(int64(len(bufs)))
	return len(bufs), nil
}

// Sending an ICMP error, or refusing to for the rate limit, allocates
// nothing.
func TestICMPErrorsNoAlloc(t *testing.T) {
	var now atomic.Int64
	now.Store(1e18)
	tb := nat.New(nat.Config{})
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	h := New(Config{NAT: tb, Forwarding: true, Now: now.Load})
	defer h.Close()
	a, _ := tun.NewPair(tun.KindTUN, 1500)
	dev := &sinkDev{Device: a}
	n, err := h.AddNIC("a", dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddAddress("a", netip.MustParsePrefix("10.0.0.1/24")); err != nil {
		t.Fatal(err)
	}
	pkt := nattest.TCP(nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.SYN, 0)
	var p nat.Packet
	if r := tb.Process(pkt, &p, now.Load()); r.Verdict != nat.Drop || !r.Unreachable {
		t.Fatalf("no unreachable: %+v", r)
	}
	// Sent: the clock moves a second each time, the limit allows it.
	if allocs := testing.AllocsPerRun(100, func() {
		now.Add(int64(time.Second))
		n.sendUnreachable(pkt, &p)
	}); allocs != 0 {
		t.Errorf("sending an unreachable: %v allocations", allocs)
	}
	if allocs := testing.AllocsPerRun(100, func() {
		now.Add(int64(time.Second))
		n.sendTimeExceeded(pkt, &p)
	}); allocs != 0 {
		t.Errorf("sending a time exceeded: %v allocations", allocs)
	}
	sent := dev.writes.Load()
	if sent < 200 {
		t.Fatalf("%d sent, want every one (the clock moved 1 s each)", sent)
	}
	// Refused: the clock stands still.
	if allocs := testing.AllocsPerRun(100, func() { n.sendUnreachable(pkt, &p) }); allocs != 0 {
		t.Errorf("a limited unreachable: %v allocations", allocs)
	}
	if got := dev.writes.Load() - sent; got > 6 {
		t.Errorf("%d sent at one instant to one destination, want at most 6", got)
	}
	if h.Counters.ICMPLimited.Load() == 0 {
		t.Error("limited errors not counted")
	}
}
