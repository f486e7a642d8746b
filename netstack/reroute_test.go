package netstack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// An established connection follows a route change from its next packet,
// in each direction, as the kernel's IPVS does (its route to the real
// server checked per packet, __ip_vs_dst_check; the replies forwarded,
// routed per packet): here a more specific route to the real server, then
// one to the client, each by another NIC.
func TestEstablishedFollowsRouteChange(t *testing.T) {
	r := newBypassRig(t, tun.KindTUN, tun.KindTUN, false)
	h := r.h
	rs2 := r.addRS2("172.16.9.1/24")
	if out, _ := r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil)); ipDst(out) != gRS.Addr() {
		t.Fatalf("SYN went to %v", ipDst(out))
	}
	if out, _ := r.fromRS(ordinary(gRS, gCli, nattest.SYN|nattest.ACK, 500, nil)); ipDst(out) != gCli.Addr() {
		t.Fatalf("SYN-ACK went to %v", ipDst(out))
	}
	fp := h.Counters.FastPath.Load()

	if err := h.AddRoute(netip.PrefixFrom(rsAddr, 32), netip.Addr{}, "rs2"); err != nil {
		t.Fatal(err)
	}
	ack := r.frameIn(ordinary(gCli, gVIP, nattest.ACK, 101, data(100, 1)).pkt)
	if out := sendVia(t, r.in, ack, rs2, r.out); ipDst(out) != gRS.Addr() {
		t.Fatalf("the client's packet after the change went to %v", ipDst(out))
	}
	// The new route's MTU (rs2's, 1400) holds from then on: a packet
	// of 1440 bytes with DF is answered "fragmentation needed", as the
	// old route's 1500 would have taken it.
	tooBig := h.Counters.TooBigSent.Load()
	big := r.frameIn(ordinary(gCli, gVIP, nattest.ACK, 201, data(1400, 3)).pkt)
	icmp := sendVia(t, r.in, big, r.in, rs2)
	if got := h.Counters.TooBigSent.Load(); got != tooBig+1 || ipDst(icmp) != gCli.Addr() || icmp[9] != 1 {
		t.Fatalf("a 1440-byte packet after the change: TooBigSent %d (was %d), answer to %v, protocol %d; want an ICMP error to the client", got, tooBig, ipDst(icmp), icmp[9])
	}
	if mtu := binary.BigEndian.Uint16(icmp[26:]); mtu != 1400 {
		t.Fatalf("fragmentation needed with MTU %d, want 1400", mtu)
	}

	if err := h.AddRoute(netip.PrefixFrom(gCli.Addr(), 32), netip.Addr{}, "rs2"); err != nil {
		t.Fatal(err)
	}
	reply := frame(r.outKind, r.outMAC, macRS, ordinary(gRS, gCli, nattest.ACK, 501, data(100, 2)).pkt)
	out := sendVia(t, r.out, reply, rs2, r.in)
	if ipDst(out) != gCli.Addr() || ipSrc(out) != gVIP.Addr() {
		t.Fatalf("the real server's reply after the change: %v -> %v, want %v -> %v", ipSrc(out), ipDst(out), gVIP.Addr(), gCli.Addr())
	}
	if got := h.Counters.FastPath.Load(); got != fp+2 {
		t.Fatalf("FastPath grew from %d to %d, want both packets bypassed", fp, got)
	}
	if c, _ := h.NAT().Lookup(nat.ProtoTCP, gCli, gVIP); c == nil {
		t.Fatal("the connection is gone")
	}
}

// sendVia makes d hand out frame and returns what the director wrote to
// want; a write to old instead (by the route before the change, say)
// fails the test.
func sendVia(t *testing.T, d *replayGSO, frame []byte, want, old *replayGSO) []byte {
	t.Helper()
	d.pkt, d.g = frame, tun.GSO{}
	d.kick <- struct{}{}
	select {
	case <-want.wrote:
		return want.out[:want.outLen]
	case <-old.wrote:
		t.Fatalf("written to %s, not to %s", old.name, want.name)
	case <-time.After(5 * time.Second):
		t.Fatalf("nothing written to %s in 5 s", want.name)
	}
	return nil
}

// A tunnel connection's real server is routed per packet too: after a
// route change its next packet, encapsulated, leaves by the new route,
// from the director's address there (the endpoint's entry is replaced,
// not kept from the first connection).
func TestTunnelFollowsRouteChange(t *testing.T) {
	enc := rules.Encap{Type: rules.TunIPIP}
	r := tunnelRig(t, tun.KindTUN, tun.KindTUN, false, enc)
	h := r.h
	rs2 := r.addRS2("172.16.9.1/24")
	p := ordinary(gCli, gVIP, nattest.SYN, 100, nil)
	out, _ := r.fromClient(p)
	decap(t, "before", out, enc, dipAddr, rsAddr, decTTL(p.pkt))

	if err := h.AddRoute(netip.PrefixFrom(rsAddr, 32), netip.Addr{}, "rs2"); err != nil {
		t.Fatal(err)
	}
	p = ordinary(gCli, gVIP, nattest.ACK, 101, data(100, 1))
	out = sendVia(t, r.in, r.frameIn(p.pkt), rs2, r.out)
	decap(t, "after", out, enc, netip.MustParseAddr("172.16.9.1"), rsAddr, decTTL(p.pkt))
}
