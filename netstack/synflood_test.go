package netstack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// floodRig is a bypass rig whose service answers every SYN with a cookie
// (synproxy=2), with a route to the flood's spoofed sources (10.1.0.0/16)
// by the client's link, and n of the flood's SYNs, each from its own
// spoofed address and port, as they arrive.
func floodRig(tb testing.TB, kind tun.Kind, n int) (*bypassRig, [][]byte) {
	r := newBypassRig(tb, kind, tun.KindTUN, false)
	r.h.NAT().SetSynProxy(nat.SynProxyAlways)
	if err := r.h.AddRoute(netip.MustParsePrefix("10.1.0.0/16"), netip.MustParseAddr("10.0.0.2"), "client"); err != nil {
		tb.Fatal(err)
	}
	if kind == tun.KindTAP {
		r.neighbour("client", "10.0.0.2", macClient)
	}
	syns := make([][]byte, n)
	for i := range syns {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(1024+i))
		syns[i] = r.frameIn(nattest.Build(nattest.Seg{Src: src, Dst: gVIP, Proto: 6, Flags: nattest.SYN, Seq: uint32(i),
			Options: []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}}))
	}
	return r, syns
}

// A flood SYN from a spoofed source, each from another address, is
// answered with a cookie SYN-ACK back out of the link it came by, to its
// sender, and nothing in the process allocates for it: not the NAT, not
// the MSS the SYN-ACK offers (which once looked the spoofed source's
// route up, and a spoofed source is never in the route cache), not the
// write.
func TestCookieSYNAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	for _, kind := range []tun.Kind{tun.KindTUN, tun.KindTAP} {
		t.Run(kind.String(), func(t *testing.T) {
			r, syns := floodRig(t, kind, 4096)
			i := 0
			round := func() {
				out, _ := r.send(r.in, syns[i%len(syns)], tun.GSO{}, r.in)
				i++
				if kind == tun.KindTAP {
					out = out[14:]
				}
				if len(out) < 40 || out[33] != nattest.SYN|nattest.ACK ||
					binary.BigEndian.Uint32(out[28:]) != uint32(i) || !nattest.L4ChecksumOK(out) {
					t.Fatalf("reply %x: want the cookie SYN-ACK acknowledging %d", out, i)
				}
			}
			round() // warm up
			if allocs := testing.AllocsPerRun(2000, round); allocs != 0 {
				t.Errorf("a cookie SYN allocates %.2f times, want 0", allocs)
			}
			if n := r.h.Counters.Replies.Load(); n != 2002 {
				t.Errorf("%d replies, want 2002", n)
			}
		})
	}
}

// BenchmarkCookieSYN is the director's cost of one flood SYN with the SYN
// proxy on, through the host: read, the NAT's cookie, the SYN-ACK back out
// of the same link, each SYN from another spoofed address.
func BenchmarkCookieSYN(b *testing.B) {
	r, syns := floodRig(b, tun.KindTUN, 65536)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.send(r.in, syns[i%len(syns)], tun.GSO{}, r.in)
		i++
	}
}
