package netstack_test

import (
	"math"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// addRS2 gives a bypass rig a third NIC, "rs2", a TUN of MTU 1400 with
// addrs, and returns its device.
func (r *bypassRig) addRS2(addrs ...string) *replayGSO {
	r.t.Helper()
	d := newReplayGSO("rs2")
	d.kind, d.out, d.mtu = tun.KindTUN, make([]byte, 70000), 1400
	if _, err := r.h.AddNIC("rs2", d); err != nil {
		r.t.Fatal(err)
	}
	for _, a := range addrs {
		if err := r.h.AddAddress("rs2", netip.MustParsePrefix(a)); err != nil {
			r.t.Fatal(err)
		}
	}
	return d
}

// synFrom is a client's SYN to the VIP from port, as it arrives.
func (r *bypassRig) synFrom(port uint16) []byte {
	return r.frameIn(ordinary(netip.AddrPortFrom(gCli.Addr(), port), gVIP, nattest.SYN, 100, nil).pkt)
}

// A route replaced by a more specific one is taken by the next new
// connection, and by the MTU the NAT asks for, though the old route was
// just looked up (and cached).
func TestRouteCacheFollowsRouteChange(t *testing.T) {
	r := newBypassRig(t, tun.KindTUN, tun.KindTUN, false)
	h := r.h
	rs2 := r.addRS2("172.16.9.1/24")
	if m := h.EgressMTU(rsAddr); m != 1500 {
		t.Fatalf("EgressMTU(%v) = %d before the change, want 1500", rsAddr, m)
	}
	out, _ := r.send(r.in, r.synFrom(40000), tun.GSO{}, r.out)
	if ipDst(out) != gRS.Addr() {
		t.Fatalf("first SYN went to %v", ipDst(out))
	}
	if err := h.AddRoute(netip.PrefixFrom(rsAddr, 32), netip.Addr{}, "rs2"); err != nil {
		t.Fatal(err)
	}
	if m := h.EgressMTU(rsAddr); m != 1400 {
		t.Fatalf("EgressMTU(%v) = %d after the route by rs2, want 1400", rsAddr, m)
	}
	out, _ = r.send(r.in, r.synFrom(40001), tun.GSO{}, rs2)
	if ipDst(out) != gRS.Addr() {
		t.Fatalf("second SYN went to %v", ipDst(out))
	}
	if fp := h.Counters.FastPath.Load(); fp != 2 {
		t.Fatalf("FastPath %d, want 2", fp)
	}
}

// A VRRP takeover that brings a subnet (its virtual address's connected
// route) makes its real server reachable for the next new connection,
// by the bypass; the address's removal (the backup's turn) takes the
// route away again, and the next SYN goes to the stack, which has no
// route either.
func TestRouteCacheFollowsVRRP(t *testing.T) {
	r := newBypassRig(t, tun.KindTUN, tun.KindTUN, false)
	h := r.h
	rs2 := r.addRS2()
	far := nattest.AP("172.16.8.5:8080")
	tb := h.NAT()
	k := nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}
	if err := tb.DelDest(k, gRS); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: far.Addr(), Port: far.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	vaddr := netip.MustParsePrefix("172.16.8.1/24")

	// No route yet: to the stack (cached as no route).
	send := func(port uint16) {
		r.in.pkt, r.in.g = r.synFrom(port), tun.GSO{}
		r.in.kick <- struct{}{}
	}
	send(40000)
	waitCounter(t, &h.Counters.Delivered, 1)
	if m := h.EgressMTU(far.Addr()); m != 0 {
		t.Fatalf("EgressMTU(%v) = %d with no route, want 0", far.Addr(), m)
	}

	if err := h.AddVirtualAddress("rs2", vaddr); err != nil {
		t.Fatal(err)
	}
	fp := h.Counters.FastPath.Load()
	out, _ := r.send(r.in, r.synFrom(40001), tun.GSO{}, rs2)
	if ipDst(out) != far.Addr() {
		t.Fatalf("SYN after the takeover went to %v", ipDst(out))
	}
	if got := h.Counters.FastPath.Load(); got != fp+1 {
		t.Fatalf("SYN after the takeover not bypassed (FastPath %d, was %d)", got, fp)
	}
	if m := h.EgressMTU(far.Addr()); m != 1400 {
		t.Fatalf("EgressMTU(%v) = %d after the takeover, want 1400", far.Addr(), m)
	}
	fp = h.Counters.FastPath.Load()

	if err := h.RemoveVirtualAddress("rs2", vaddr); err != nil {
		t.Fatal(err)
	}
	if m := h.EgressMTU(far.Addr()); m != 0 {
		t.Fatalf("EgressMTU(%v) = %d after the address left, want 0", far.Addr(), m)
	}
	send(40002)
	waitCounter(t, &h.Counters.Delivered, 2)
	if got := h.Counters.FastPath.Load(); got != fp {
		t.Fatalf("FastPath grew from %d to %d after the route left", fp, got)
	}
}

// A route looked up again (the MTU of a real server's route, asked for
// every new connection) allocates nothing.
func TestRouteCacheAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r := newBypassRig(t, tun.KindTUN, tun.KindTUN, false)
	r.h.EgressMTU(rsAddr)
	if allocs := testing.AllocsPerRun(1000, func() { r.h.EgressMTU(rsAddr) }); allocs != 0 {
		t.Errorf("a cached route lookup allocates %.2f times, want 0", allocs)
	}
}

// BenchmarkNewConnection is the cost of a new connection's first packet
// through the bypass (read, a new NAT entry, its routes, write): a SYN
// from another client port each time.
func BenchmarkNewConnection(b *testing.B) {
	r := newBypassRig(b, tun.KindTUN, tun.KindTUN, false)
	// Each connection stays half-open (a SYN), and past synproxy_backlog
	// of them the SYN proxy's automatic mode would answer the rest with
	// cookies, back to the client, and make no entries.
	r.h.NAT().SetSynProxy(nat.SynProxyOff)
	frames := make([][]byte, 20000)
	for i := range frames {
		frames[i] = r.synFrom(uint16(10000 + i))
	}
	fp := r.h.Counters.FastPath.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%len(frames) == 0 {
			// Every port used: the entries expire, and the ports
			// are new again.
			b.StopTimer()
			r.h.NAT().SweepAll(math.MaxInt64)
			b.StartTimer()
		}
		r.send(r.in, frames[i%len(frames)], tun.GSO{}, r.out)
	}
	b.StopTimer()
	if got := r.h.Counters.FastPath.Load() - fp; got != uint64(b.N) {
		b.Fatalf("%d of %d SYNs bypassed", got, b.N)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/conn")
}
