package netstack_test

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// routeRig is a bypass rig whose real server is direct routing (-g), on
// the VIP's port.
func routeRig(t testing.TB, inKind, outKind tun.Kind, hairpin bool) *bypassRig {
	t.Helper()
	r := newBypassRig(t, inKind, outKind, hairpin)
	tb := r.h.NAT()
	k := nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}
	if err := tb.DelDest(k, gRS); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: gRS.Addr(), Port: gVIP.Port(), Weight: 1, Method: rules.Route}); err != nil {
		t.Fatal(err)
	}
	return r
}

// Direct routing on a TAP: the client's packet leaves unchanged but for
// its TTL (still to the VIP; decrement_ttl in ip_vs_dr_xmit's
// __ip_vs_get_out_rt) in a frame to the real
// server's MAC from the director's, one-armed and across two TAPs, and
// never reaches the stack that owns the VIP. An unknown MAC is resolved
// by ARP, the packet meanwhile dropped and counted.
func TestRouteOnTAP(t *testing.T) {
	for _, hairpin := range []bool{false, true} {
		r := routeRig(t, tun.KindTAP, tun.KindTAP, hairpin)
		h := r.h
		for i, flags := range []uint8{nattest.SYN, nattest.ACK, nattest.ACK} {
			p := ordinary(gCli, gVIP, flags, uint32(100+i), []byte("x"))
			want := decTTL(p.pkt)
			out, _ := r.fromClient(p)
			ip := checkEth(t, "to the real server", out, macRS, r.outMAC)
			if string(ip) != string(want) {
				t.Fatalf("hairpin=%v: packet %d changed:\n% x\nwant\n% x", hairpin, i, ip, want)
			}
		}
		if fp, del, dr := h.Counters.FastPath.Load(), h.Counters.Delivered.Load(), h.Counters.RouteDrops.Load(); fp != 3 || del != 0 || dr != 0 {
			t.Fatalf("hairpin=%v: FastPath %d, Delivered %d, RouteDrops %d; want 3, 0, 0", hairpin, fp, del, dr)
		}
		c, _ := h.NAT().Lookup(6, gCli, gVIP)
		if c == nil || !c.Routed() || c.State() != nat.StateEstablished {
			t.Fatalf("hairpin=%v: connection %+v", hairpin, c)
		}
	}

	// The real server's MAC unknown: an ARP request goes out, the
	// packet is dropped (counted), and the next one goes to the answer.
	r := routeRig(t, tun.KindTAP, tun.KindTAP, true)
	if err := r.h.Stack().RemoveNeighbor(r.nicID("lan"), ipv4.ProtocolNumber, tcpip.AddrFrom4(rsAddr.As4())); err != nil {
		t.Fatal(err)
	}
	arp, _ := r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	if len(arp) < 42 || binary.BigEndian.Uint16(arp[12:]) != 0x0806 || netip.AddrFrom4([4]byte(arp[38:42])) != rsAddr {
		t.Fatalf("wrote % x, want an ARP request for %v", arp[:min(len(arp), 42)], rsAddr)
	}
	waitCounter(t, &r.h.Counters.RouteDrops, 1)
	r.out.pkt, r.out.g = arpReply(r.outMAC, macRS3, rsAddr, dipAddr), tun.GSO{}
	r.out.kick <- struct{}{}
	r.waitNeighbour(rsAddr, stack.Reachable)
	del := r.h.Counters.Delivered.Load() // the ARP reply
	out, _ := r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	checkEth(t, "after ARP", out, macRS3, r.outMAC)
	if d := r.h.Counters.Delivered.Load(); d != del || del > 1 {
		t.Errorf("%d packets delivered to the stack, want only the ARP reply", d)
	}
}

// -g towards a TUN (no Ethernet) is refused packet by packet: dropped and
// counted, never delivered to the VIP's own stack.
func TestRouteOnTUNDropped(t *testing.T) {
	r := routeRig(t, tun.KindTAP, tun.KindTUN, false)
	p := ordinary(gCli, gVIP, nattest.SYN, 100, nil)
	r.in.pkt, r.in.g = r.frameIn(p.pkt), p.g
	r.in.kick <- struct{}{}
	waitCounter(t, &r.h.Counters.RouteDrops, 1)
	if fp, del := r.h.Counters.FastPath.Load(), r.h.Counters.Delivered.Load(); fp != 0 || del != 0 {
		t.Errorf("FastPath %d, Delivered %d; want 0, 0", fp, del)
	}
}

// TestRouteAllocatesNothing: a direct-routing packet through a TAP
// allocates nothing.
func TestRouteAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r := routeRig(t, tun.KindTAP, tun.KindTAP, true)
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	p := ordinary(gCli, gVIP, nattest.ACK, 101, []byte("data"))
	r.fromClient(p)
	frame := r.frameIn(p.pkt)
	if allocs := testing.AllocsPerRun(200, func() { r.send(r.in, frame, p.g, r.out) }); allocs != 0 {
		t.Errorf("a direct-routing frame allocates %.2f times, want 0", allocs)
	}
}

// waitCounter waits, up to 5 s, for c to reach n.
func waitCounter(t *testing.T, c interface{ Load() uint64 }, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("counter at %d, want %d", c.Load(), n)
		}
	}
}

// CheckDirect takes a real server on a TAP link's segment only, and says
// why not otherwise.
func TestCheckDirect(t *testing.T) {
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	if err := r.h.CheckDirect(rsAddr); err != nil {
		t.Errorf("on the TAP segment: %v", err)
	}
	for _, c := range []struct{ addr, want string }{
		{"10.9.9.9", "through a gateway"},
		{"172.16.1.3", "an address of the director's"},
		{"fd00::5", "no route"},
	} {
		if err := r.h.CheckDirect(netip.MustParseAddr(c.addr)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.addr, err, c.want)
		}
	}
	r = newBypassRig(t, tun.KindTAP, tun.KindTUN, false)
	if err := r.h.CheckDirect(rsAddr); err == nil || !strings.Contains(err.Error(), "TUN link") {
		t.Errorf("behind a TUN: %v", err)
	}
}
