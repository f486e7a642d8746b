package health_test

import (
	. "github.com/tunvs/tunvs/health"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// Below quorum the sorry server stands in for the whole pool, as
// keepalived's does (check/ipwrapper.c, update_quorum_state and
// perform_quorum_state): the servers still up leave with it in and come
// back, with their weights, when the quorum does; a server that comes up
// meanwhile waits out of the pool. make ipvs-parity's keepalived_checkers
// compares the same against keepalived on the kernel.
func TestSorryStandsInForThePool(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	sorry := netip.MustParseAddrPort("172.16.1.9:8080")
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, Sorry: sorry, Quorum: 2,
		Default: &Check{Kind: KindTCP, Interval: tInterval, Timeout: tTimeout, Fall: 1, Rise: 1},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	rs0, rs1 := tl.rs[0].addr, tl.rs[1].addr
	tl.settle(t, 2)
	tl.rs[0].stop()
	tl.waitEvent(t, 2, events, EventQuorumLost, netip.AddrPort{}, tInterval, 2)
	if d := tl.dest(t, nat.ProtoTCP, sorry); d == nil {
		t.Fatal("sorry server not in the pool")
	}
	if d := tl.dest(t, nat.ProtoTCP, rs1); d != nil {
		t.Errorf("%v, up, still in the pool beside the sorry server", rs1)
	}
	if s := m.Snapshot()[0]; s.QuorumUp || !s.SorryActive || s.LiveWeight != 1 {
		t.Errorf("snapshot %+v", s)
	}
	// The other one fails too, out of the pool: nothing to remove.
	tl.rs[1].stop()
	tl.waitEvent(t, 2, events, EventDown, rs1, tInterval, 2)
	if s := m.Snapshot()[0]; s.LiveWeight != 0 {
		t.Errorf("both down: %+v", s)
	}
	// One back: still below quorum, it waits.
	tl.rs[1].start()
	tl.waitEvent(t, 2, events, EventUp, rs1, tInterval, 2)
	if d := tl.dest(t, nat.ProtoTCP, rs1); d != nil {
		t.Errorf("%v back in the pool below quorum", rs1)
	}
	// Both back: quorum, both in with weight 1, the sorry server out.
	tl.rs[0].start()
	tl.waitEvent(t, 2, events, EventQuorumUp, netip.AddrPort{}, tInterval, 2)
	for _, a := range []netip.AddrPort{rs0, rs1} {
		if d := tl.dest(t, nat.ProtoTCP, a); d == nil || d.Weight() != 1 {
			t.Errorf("%v after the quorum is back: %v", a, d)
		}
	}
	if d := tl.dest(t, nat.ProtoTCP, sorry); d != nil {
		t.Error("sorry server still in the pool")
	}
}
