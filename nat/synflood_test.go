package nat_test

import (
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// The cookie SYN-ACK offers the MSS of the link the SYN came by
// (Offload.MTU), where it goes back and the client's segments arrive,
// and asks nothing of the route to the client: a flood's spoofed
// sources are new each time, and their route lookups were most of a
// cookie's cost. Without the link's MTU (Process) the route's is used.
func TestCookieMSSFromIngressLink(t *testing.T) {
	var routeAsked int
	tb := nat.New(nat.Config{EgressMTU: func(netip.Addr) int { routeAsked++; return 9000 }})
	tb.SetSynProxy(nat.SynProxyAlways)
	twoServers("rr", 6)(tb)
	for _, c := range []struct {
		name    string
		linkMTU int
		want    uint16
	}{{"link", 1400, 1360}, {"route", 0, 8960}} {
		t.Run(c.name, func(t *testing.T) {
			routeAsked = 0
			var p nat.Packet
			syn := roomy(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)}))
			if r := tb.ProcessOffload(syn, &p, 1, nat.Offload{MTU: c.linkMTU}); r.Verdict != nat.Reply {
				t.Fatalf("SYN: %+v", r)
			}
			s := readSeg(t, p.B)
			if s.flags != S|A || s.dst != cli {
				t.Fatalf("reply %+v, want a SYN-ACK to the client", s)
			}
			if got := uint16(s.opts[2][0])<<8 | uint16(s.opts[2][1]); got != c.want {
				t.Errorf("MSS offered %d, want %d", got, c.want)
			}
			if asked := routeAsked > 0; asked != (c.linkMTU == 0) {
				t.Errorf("route to the client asked %d times with the link's MTU %d", routeAsked, c.linkMTU)
			}
		})
	}
}
