package netstack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// tnRouter is a router on the real server's link, between the director
// and a real server (for the test, the real server's link is where its
// errors come from).
var tnRouter = netip.MustParseAddr("172.16.1.254")

// tunnelErr sends the director, on the real server's link, the router's
// ICMP error about the encapsulated packet outer (as the director wrote
// it, without link header), and returns what the director writes on the
// client's link (without link header).
func (r *bypassRig) tunnelErr(outer []byte, typ, code uint8, info uint32) []byte {
	r.t.Helper()
	icmp := nattest.ICMPError(tnRouter, outer, typ, code, info, 576-28)
	got, _ := r.send(r.out, frame(r.outKind, r.outMAC, macRS, icmp), tun.GSO{}, r.in)
	if r.inKind == tun.KindTAP {
		got = checkEth(r.t.(*testing.T), "relayed error", got, macClient, r.inMAC)
	}
	return got
}

// A router's "fragmentation needed" about a tunnelled packet reaches the
// client, from the VIP, about its own packet, with the router's MTU less
// the encapsulation (ip_vs_in_icmp); the director then answers a packet
// as big itself, and cuts outer fragments without DF to the path MTU.
// "Time exceeded" is relayed as it is.
func TestTunnelErrorRelayed(t *testing.T) {
	for _, l := range []struct{ in, out tun.Kind }{{tun.KindTUN, tun.KindTUN}, {tun.KindTAP, tun.KindTAP}} {
		for _, enc := range encaps {
			r := tunnelRig(t, l.in, l.out, false, enc)
			what := l.in.String() + " " + enc.Type.String()
			hl := nat.EncapLen(enc, false)
			r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
			big := nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: 1400, DF: true})
			outer, _ := r.fromClient(gsoIn{pkt: big})
			if l.out == tun.KindTAP {
				outer = checkEth(t, what, outer, macRS, r.outMAC)
			}
			outer = append([]byte(nil), outer...)
			got := r.tunnelErr(outer, 3, 4, 1300)
			if len(got) < 48 || got[9] != 1 || got[20] != 3 || got[21] != 4 || ipSrc(got) != gVIP.Addr() || ipDst(got) != gCli.Addr() ||
				int(binary.BigEndian.Uint16(got[26:])) != 1300-hl || csumtest.Checksum(got[20:], 0) != 0 || csumtest.Checksum(got[:20], 0) != 0 {
				t.Fatalf("%s: relayed % x, want frag needed MTU %d from the VIP to the client", what, got[:min(len(got), 48)], 1300-hl)
			}
			// The quote is the client's packet as the router saw it
			// (TTL decremented by the director).
			if q := got[28:48]; ipSrc(q) != gCli.Addr() || ipDst(q) != gVIP.Addr() || q[8] != big[8]-1 {
				t.Errorf("%s: quote % x", what, q)
			}
			if c := r.h.Counters.TunnelICMPRelayed.Load(); c != 1 {
				t.Errorf("%s: TunnelICMPRelayed %d, want 1", what, c)
			}
			// The director answers the next one itself.
			tb, _ := r.send(r.in, r.frameIn(big), tun.GSO{}, r.in)
			if l.in == tun.KindTAP {
				tb = checkEth(t, what, tb, macClient, r.inMAC)
			}
			if len(tb) < 28 || tb[20] != 3 || tb[21] != 4 || int(binary.BigEndian.Uint16(tb[26:])) != 1300-hl {
				t.Fatalf("%s: after the error, a 1400-byte packet got % x, want frag needed %d", what, tb[:min(len(tb), 28)], 1300-hl)
			}
			// Without DF: outer fragments of at most the path MTU.
			r.out.frames = make(chan []byte, 16)
			nodf := nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: 1400})
			r.in.pkt, r.in.g = r.frameIn(nodf), tun.GSO{}
			r.in.kick <- struct{}{}
			total := 0
			for {
				var f []byte
				select {
				case f = <-r.out.frames:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: fragment after %d bytes not written", what, total)
				}
				if l.out == tun.KindTAP {
					f = f[14:]
				}
				if len(f) > 1300 {
					t.Fatalf("%s: outer fragment of %d bytes, path MTU 1300", what, len(f))
				}
				total += len(f) - 20
				if binary.BigEndian.Uint16(f[6:])&0x2000 == 0 {
					break
				}
			}
			if total != 1400+hl-20 {
				t.Errorf("%s: fragments carry %d bytes, want %d", what, total, 1400+hl-20)
			}
			r.out.frames = nil
			// Time exceeded: as it is.
			got = r.tunnelErr(outer, 11, 0, 0)
			if got[20] != 11 || got[21] != 0 || ipDst(got) != gCli.Addr() {
				t.Errorf("%s: time exceeded relayed as % x", what, got[:min(len(got), 28)])
			}
			if c := r.h.Counters.TunnelICMPRelayed.Load(); c != 2 {
				t.Errorf("%s: TunnelICMPRelayed %d, want 2", what, c)
			}
		}
	}
}

// Relaying a router's error allocates nothing.
func TestTunnelErrorAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	enc := rules.Encap{Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum}
	r := tunnelRig(t, tun.KindTAP, tun.KindTAP, false, enc)
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	big := nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: 1400, DF: true})
	outer, _ := r.fromClient(gsoIn{pkt: big})
	outer = append([]byte(nil), outer[14:]...)
	f := frame(r.outKind, r.outMAC, macRS, nattest.ICMPError(tnRouter, outer, 3, 4, 1300, 0))
	r.send(r.out, f, tun.GSO{}, r.in)
	if allocs := testing.AllocsPerRun(200, func() { r.send(r.out, f, tun.GSO{}, r.in) }); allocs != 0 {
		t.Errorf("a relayed error allocates %.2f times, want 0", allocs)
	}
	if c := r.h.Counters.TunnelICMPRelayed.Load(); c < 200 {
		t.Errorf("TunnelICMPRelayed %d", c)
	}
}

// Relayed errors are rate-limited as the director's own (icmplimit.go:
// per client a burst of 6), "fragmentation needed" never; a wrong ICMP
// checksum is dropped; each is counted.
func TestTunnelErrorLimited(t *testing.T) {
	r := tunnelRig(t, tun.KindTUN, tun.KindTUN, false, rules.Encap{Type: rules.TunGRE})
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	big := nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: 1400, DF: true})
	outer, _ := r.fromClient(gsoIn{pkt: big})
	outer = append([]byte(nil), outer...)
	r.in.frames = make(chan []byte, 64)
	c := &r.h.Counters
	burst := func(icmp []byte, n int) {
		t.Helper()
		start := c.TunnelICMPRelayed.Load() + c.TunnelICMPDrops.Load()
		// Set once: the reader copies it after each kick; the previous
		// burst's copies are done (its counts are in).
		r.out.pkt, r.out.g = icmp, tun.GSO{}
		for range n {
			r.out.kick <- struct{}{}
		}
		for deadline := time.Now().Add(5 * time.Second); c.TunnelICMPRelayed.Load()+c.TunnelICMPDrops.Load() < start+uint64(n); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d errors handled", c.TunnelICMPRelayed.Load()+c.TunnelICMPDrops.Load()-start, n)
			}
		}
	}
	burst(nattest.ICMPError(tnRouter, outer, 11, 0, 0, 0), 20)
	relayed, dropped := c.TunnelICMPRelayed.Load(), c.TunnelICMPDrops.Load()
	if relayed == 0 || relayed > 6 || relayed+dropped != 20 || c.ICMPLimited.Load() != dropped {
		t.Errorf("20 time exceeded: %d relayed, %d dropped, %d limited; want at most 6 relayed, the rest limited", relayed, dropped, c.ICMPLimited.Load())
	}
	burst(nattest.ICMPError(tnRouter, outer, 3, 4, 1300, 0), 20)
	if got := c.TunnelICMPRelayed.Load() - relayed; got != 20 {
		t.Errorf("20 frag needed: %d relayed, want all", got)
	}
	bad := nattest.ICMPError(tnRouter, outer, 3, 4, 1300, 0)
	bad[22] ^= 0xff
	before := c.TunnelICMPDrops.Load()
	burst(bad, 1)
	if c.TunnelICMPDrops.Load() != before+1 {
		t.Errorf("a wrong checksum not counted as dropped")
	}
	if n := len(r.in.frames); uint64(n) != c.TunnelICMPRelayed.Load() {
		t.Errorf("%d written to the client's link, %d counted relayed", n, c.TunnelICMPRelayed.Load())
	}
}
