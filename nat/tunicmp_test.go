package nat_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

var (
	tnDir    = netip.MustParseAddr("172.16.9.1")   // the director's address towards the real server
	tnRouter = netip.MustParseAddr("172.16.9.254") // a router on the way
)

// tnKinds are the encapsulations, as the dest and as nattest.Encap builds them.
var tnKinds = []struct {
	name string
	enc  rules.Encap
	kind int
	hl   int
}{
	{"ipip", rules.Encap{}, nattest.EncapIPIP, 20},
	{"gue", rules.Encap{Type: rules.TunGUE, Port: 6080}, nattest.EncapGUE, 32},
	{"gre", rules.Encap{Type: rules.TunGRE}, nattest.EncapGRE, 24},
	{"gre-csum", rules.Encap{Type: rules.TunGRE, Flags: rules.TunCsum}, nattest.EncapGRE, 28},
}

// A router's "fragmentation needed" about an encapsulated packet the
// director sent (ip_vs_in_icmp's tunnel case): the real server's path MTU
// is lowered (the director answers the next too-big packet itself) and
// the client hears of its own packet, from the VIP, with that MTU less
// the outer headers; its checksum right; other errors are relayed as they
// are; a wrong checksum is dropped.
func TestTunnelErrorFragNeeded(t *testing.T) {
	for _, k := range tnKinds {
		t.Run(k.name, func(t *testing.T) {
			e := newEnv(t, nat.Config{EgressMTU: func(netip.Addr) int { return 1500 }}, func(tb *nat.Table) {
				tunnelService(t, tb, 6, tnVIP, rs1, k.enc)
			})
			e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
			inner := nattest.Build(nattest.Seg{Src: cli, Dst: tnVIP, Proto: 6, Flags: A, Size: 1400, DF: true})
			if r := e.tb.Process(inner, &e.p, e.now); r.Verdict != nat.Forward {
				t.Fatalf("1400 bytes before: %+v", r)
			}
			outer := nattest.Encap(k.kind, tnDir, rs1, k.enc.Port, k.enc.Flags != 0, inner)
			icmp := nattest.ICMPError(tnRouter, outer, 3, 4, 1300, 576-28)
			var p, orig nat.Packet
			if r := nat.Parse(icmp, &p); r != nat.DropNone {
				t.Fatalf("parse: %v", r)
			}
			te, ok := e.tb.TunnelError(&p, &orig, e.now)
			if !ok || !te.Relay || te.Type != 3 || te.Code != 4 || te.Info != uint32(1300-k.hl) {
				t.Fatalf("%+v %v, want a relay with MTU %d", te, ok, 1300-k.hl)
			}
			if got := te.Conn.PathMTU(e.now); got != 1300 {
				t.Errorf("path MTU %d, want 1300", got)
			}
			out := make([]byte, 1280)
			n := te.Build(out, &orig)
			if n == 0 {
				t.Fatal("nothing built")
			}
			out = out[:n]
			var q nat.Packet
			if r := nat.Parse(out, &q); r != nat.DropNone || !q.ICMPError || q.Src() != tnVIP.Addr() || q.Dst() != cli.Addr() ||
				q.InnerSrc() != cli.Addr() || q.InnerDst() != tnVIP.Addr() || q.Inner.SrcPort != cli.Port() {
				t.Fatalf("relayed %v: %+v", r, q)
			}
			if got := binary.BigEndian.Uint16(out[26:]); got != uint16(1300-k.hl) {
				t.Errorf("relayed MTU %d", got)
			}
			if nattest.Checksum(out[20:], 0) != 0 {
				t.Errorf("relayed ICMP checksum wrong")
			}
			if !bytes.Equal(out[28:48], inner[:20]) {
				t.Errorf("quote %x, want the client's header %x", out[28:48], inner[:20])
			}
			// The next packet as big is answered by the director.
			if r := e.tb.Process(inner, &e.p, e.now); r.Verdict != nat.TooBig || r.MTU != 1300-k.hl {
				t.Errorf("1400 bytes after: %+v, want TooBig %d", r, 1300-k.hl)
			}
			// It expires with the kernel's ip_rt_mtu_expires.
			later := e.now + 601e9
			if te.Conn.PathMTU(later) != 0 {
				t.Errorf("path MTU still %d after 10 minutes", te.Conn.PathMTU(later))
			}
			if r := e.tb.Process(inner, &e.p, later); r.Verdict != nat.Forward {
				t.Errorf("1400 bytes after expiry: %+v", r)
			}

			// Time exceeded: relayed as it is.
			icmp = nattest.ICMPError(tnRouter, outer, 11, 0, 0, 100)
			nat.Parse(icmp, &p)
			if te, ok := e.tb.TunnelError(&p, &orig, e.now); !ok || !te.Relay || te.Type != 11 || te.Code != 0 || te.Info != 0 {
				t.Errorf("time exceeded: %+v %v", te, ok)
			}
			// A wrong checksum: dropped.
			icmp[22] ^= 0xff
			nat.Parse(icmp, &p)
			if te, ok := e.tb.TunnelError(&p, &orig, e.now); !ok || te.Relay || te.Reason != nat.TunnelICMPBadChecksum {
				t.Errorf("bad checksum: %+v %v", te, ok)
			}
		})
	}
}

// A client that does not set DF: the path MTU is lowered, nothing is
// relayed. Below ip_rt_min_pmtu the path MTU is 552; never raised.
func TestTunnelErrorNoDF(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) { tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{}) })
	e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
	inner := nattest.Build(nattest.Seg{Src: cli, Dst: tnVIP, Proto: 6, Flags: A, Size: 1400})
	var p, orig nat.Packet
	for _, s := range []struct{ report, want int }{{300, 552}, {1400, 552}} {
		nat.Parse(nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapIPIP, tnDir, rs1, 0, false, inner), 3, 4, uint32(s.report), 100), &p)
		te, ok := e.tb.TunnelError(&p, &orig, e.now)
		if !ok || te.Relay || te.Reason != nat.TunnelICMPNoDF || te.Conn.PathMTU(e.now) != s.want {
			t.Errorf("report %d: %+v %v, path MTU %d, want %d", s.report, te, ok, te.Conn.PathMTU(e.now), s.want)
		}
	}
}

// What is not an error about the director's tunnel packets is left to
// the stack: another protocol, another real server, a GUE port or
// encapsulation the dest does not use, no connection, parameter problem.
func TestTunnelErrorNotOurs(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) {
		tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{Type: rules.TunGUE, Port: 6080})
	})
	e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
	inner := nattest.Build(nattest.Seg{Src: cli, Dst: tnVIP, Proto: 6, Flags: A, Size: 1400, DF: true})
	other := nattest.Build(nattest.Seg{Src: nattest.AP("10.0.0.11:1"), Dst: tnVIP, Proto: 6, Flags: A, Size: 1400, DF: true})
	for name, icmp := range map[string][]byte{
		"ipip to a gue dest": nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapIPIP, tnDir, rs1, 0, false, inner), 3, 4, 1300, 0),
		"other port":         nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGUE, tnDir, rs1, 6081, false, inner), 3, 4, 1300, 0),
		"other real server":  nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGUE, tnDir, rs2, 6080, false, inner), 3, 4, 1300, 0),
		"no connection":      nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGUE, tnDir, rs1, 6080, false, other), 3, 4, 1300, 0),
		"parameter problem":  nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGUE, tnDir, rs1, 6080, false, inner), 12, 0, 0, 0),
		"short quote":        nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGUE, tnDir, rs1, 6080, false, inner), 3, 4, 1300, 40),
		"plain tcp":          nattest.ICMPError(tnRouter, inner, 3, 4, 1300, 0),
	} {
		var p, orig nat.Packet
		if r := nat.Parse(icmp, &p); r != nat.DropNone {
			t.Fatalf("%s: parse %v", name, r)
		}
		if te, ok := e.tb.TunnelError(&p, &orig, e.now); ok {
			t.Errorf("%s: %+v", name, te)
		}
	}
}

// Deciding and building allocate nothing.
func TestTunnelErrorAllocatesNothing(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) { tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{Type: rules.TunGRE}) })
	e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
	inner := nattest.Build(nattest.Seg{Src: cli, Dst: tnVIP, Proto: 6, Flags: A, Size: 1400, DF: true})
	icmp := nattest.ICMPError(tnRouter, nattest.Encap(nattest.EncapGRE, tnDir, rs1, 0, false, inner), 3, 4, 1300, 0)
	var p, orig nat.Packet
	out := make([]byte, 1280)
	if n := testing.AllocsPerRun(1000, func() {
		nat.Parse(icmp, &p)
		te, ok := e.tb.TunnelError(&p, &orig, e.now)
		if !ok || te.Build(out, &orig) == 0 {
			t.Fatalf("%+v %v", te, ok)
		}
	}); n != 0 {
		t.Errorf("%v allocations per error", n)
	}
}

// IPv6 in IPv6: ip_vs_in_icmp_v6 has no tunnel case, nor has tunvs; a
// router's "packet too big" about it is left to the stack.
func TestTunnelErrorNotIPv6(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) { tunnelService(t, tb, 6, tnVIP6, rs6, rules.Encap{}) })
	inner := nattest.Build(nattest.Seg{Src: cli6, Dst: tnVIP6, Proto: 6, Flags: S, Size: 1400})
	if r := e.tb.Process(inner, &e.p, e.now); r.Verdict != nat.Forward || !r.Conn.Tunnelled() {
		t.Fatalf("SYN: %+v", r)
	}
	outer := make([]byte, 40+len(inner))
	outer[0] = 0x60
	binary.BigEndian.PutUint16(outer[4:], uint16(len(inner)))
	outer[6], outer[7] = 41, 64
	copy(outer[8:24], netip.MustParseAddr("fd00::3").AsSlice())
	copy(outer[24:40], rs6.AsSlice())
	copy(outer[40:], inner)
	var po, p, orig nat.Packet
	if r := nat.Parse(outer, &po); r != nat.DropNone {
		t.Fatalf("outer: %v", r)
	}
	icmp := make([]byte, 1280)
	n := nat.BuildTooBig(icmp, &po, netip.MustParseAddr("fd00::fe"), 1300)
	if r := nat.Parse(icmp[:n], &p); n == 0 || r != nat.DropNone || !p.ICMPError || p.Inner.Proto != 41 {
		t.Fatalf("packet too big: %d bytes, %v, %+v", n, r, p)
	}
	if te, ok := e.tb.TunnelError(&p, &orig, e.now); ok {
		t.Errorf("IPv6 in IPv6: %+v", te)
	}
	if r := e.tb.Process(icmp[:n], &p, e.now); r.Verdict != nat.Pass {
		t.Errorf("the NAT: %+v, want Pass", r)
	}
}

// FuzzTunnelError: whatever the bytes, TunnelError and Build neither
// panic nor relay anything but an ICMP error from the VIP to the client
// of a tunnel connection.
func FuzzTunnelError(f *testing.F) {
	// Errors about the connection of each service (below).
	for i, k := range tnKinds[:3] {
		inner := nattest.Build(nattest.Seg{Src: cli, Dst: netip.AddrPortFrom(tnVIP.Addr(), uint16(80+i)), Proto: 6, Flags: A, Size: 600, DF: true})
		outer := nattest.Encap(k.kind, tnDir, rs1, 6080, false, inner)
		f.Add(nattest.ICMPError(tnRouter, outer, 3, 4, 1300, 0))
		f.Add(nattest.ICMPError(tnRouter, outer, 11, 0, 0, 60))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tb := nat.New(nat.Config{MaxConns: 16})
		for i, k := range tnKinds[:3] {
			tunnelService(t, tb, 6, netip.AddrPortFrom(tnVIP.Addr(), uint16(80+i)), rs1, k.enc)
		}
		var p, orig nat.Packet
		for i := range 3 {
			tb.Process(nattest.TCP(cli, netip.AddrPortFrom(tnVIP.Addr(), uint16(80+i)), S, 0), &p, 1e18)
		}
		if nat.Parse(b, &p) != nat.DropNone {
			return
		}
		te, ok := tb.TunnelError(&p, &orig, 1e18)
		if !ok || !te.Relay {
			return
		}
		out := make([]byte, 1280)
		n := te.Build(out, &orig)
		if n == 0 {
			return
		}
		var q nat.Packet
		if r := nat.Parse(out[:n], &q); r != nat.DropNone || !q.ICMPError || q.Src() != te.Conn.VAddr() || q.Dst() != te.Conn.CAddr() {
			t.Fatalf("relayed %v %+v", r, q)
		}
	})
}
