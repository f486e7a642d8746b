package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

var (
	lad4 = []netip.Addr{netip.MustParseAddr("192.168.50.1"), netip.MustParseAddr("192.168.50.2")}
	lad6 = []netip.Addr{netip.MustParseAddr("fd50::1"), netip.MustParseAddr("fd50::2")}
)

// fullNATService adds a full-NAT TCP or UDP service on v with real servers
// rss (on port 8080) and local addresses lads.
func fullNATService(t testing.TB, tb *nat.Table, proto uint8, v netip.AddrPort, lads []netip.Addr, rss ...netip.Addr) {
	t.Helper()
	if _, err := tb.AddService(nat.ServiceConfig{Proto: proto, Addr: v.Addr(), Port: v.Port(), Scheduler: "rr", LocalAddrs: lads}); err != nil {
		t.Fatal(err)
	}
	for _, rs := range rss {
		if _, err := tb.AddDest(nat.ServiceKey{Proto: proto, Addr: v.Addr(), Port: v.Port()},
			nat.DestConfig{Addr: rs, Port: 8080, Weight: 1, Method: rules.FullNAT}); err != nil {
			t.Fatal(err)
		}
	}
}

// The four tuples: client -> VIP goes out as LADDR:lport -> RS, and
// RS -> LADDR:lport comes back as VIP -> client, checksums right, in both
// families and for TCP and UDP.
func TestFullNATRewrite(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{6, 17} {
			t.Run(fmt.Sprintf("v6=%v/proto=%d", v6, proto), func(t *testing.T) {
				v, c, rs, lads := vip, cli, rs1, lad4
				if v6 {
					v, c, rs, lads = vip6, cli6, rs6, lad6
				}
				tb := nat.New(nat.Config{Seed: 3})
				fullNATService(t, tb, proto, v, lads, rs)
				var p nat.Packet
				in := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: proto, Flags: S, Size: 100})
				r := tb.Process(in, &p, 1)
				if r.Verdict != nat.Forward || r.Dir != nat.DirIn {
					t.Fatalf("first packet: %+v", r)
				}
				l := r.Conn.Local()
				if !r.Conn.FullNAT() || l.Addr() != lads[0] || l.Port() < nat.DefaultLocalPortMin {
					t.Fatalf("local tuple %v", l)
				}
				if p.Src() != l.Addr() || p.SrcPort != l.Port() || p.Dst() != rs || p.DstPort != 8080 || !p.VerifyL4Checksum() {
					t.Fatalf("in: %v:%d -> %v:%d, checksum ok %v", p.Src(), p.SrcPort, p.Dst(), p.DstPort, p.VerifyL4Checksum())
				}
				if !v6 && !nattest.IPv4HeaderOK(in) {
					t.Fatal("in: IPv4 header checksum")
				}
				out := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs, 8080), Dst: l, Proto: proto, Flags: S | A, Size: 100})
				r = tb.Process(out, &p, 2)
				if r.Verdict != nat.Forward || r.Dir != nat.DirOut {
					t.Fatalf("reply: %+v", r)
				}
				if p.Src() != v.Addr() || p.SrcPort != v.Port() || p.Dst() != c.Addr() || p.DstPort != c.Port() || !p.VerifyL4Checksum() {
					t.Fatalf("out: %v:%d -> %v:%d, checksum ok %v", p.Src(), p.SrcPort, p.Dst(), p.DstPort, p.VerifyL4Checksum())
				}
				// A reply to the client's own address is not this
				// connection's: the real server never sees it.
				stray := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs, 8080), Dst: c, Proto: proto, Flags: A})
				if r := tb.Process(stray, &p, 3); r.Verdict == nat.Forward {
					t.Fatalf("reply to the client's address forwarded: %+v", r)
				}
				info := r.Conn.Info()
				if info.Local != l || info.Client != c {
					t.Fatalf("info %+v", info)
				}
			})
		}
	}
}

// Port allocation: unique per (local address, real server), each local
// address in turn; refused and counted when every port is taken; free
// again when the connection expires. Another real server has its own
// ports.
func TestFullNATPortAllocation(t *testing.T) {
	const lo, hi = 40000, 40003 // 4 ports
	vipB := nattest.AP("172.16.1.101:80")
	cases := []struct {
		name  string
		lads  []netip.Addr
		conns int // connections that must succeed per service
	}{
		{"one local address", lad4[:1], 4},
		{"two local addresses", lad4, 8},
		{"none", nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := nat.New(nat.Config{LocalPortMin: lo, LocalPortMax: hi})
			fullNATService(t, tb, 6, vip, tc.lads, rs1)
			fullNATService(t, tb, 6, vipB, tc.lads, rs2)
			var p nat.Packet
			for _, v := range []netip.AddrPort{vip, vipB} {
				seen := map[netip.AddrPort]bool{}
				perAddr := map[netip.Addr]int{}
				for i := range tc.conns {
					c := netip.AddrPortFrom(cli.Addr(), uint16(1000+i))
					r := tb.Process(nattest.TCP(c, v, S, 0), &p, 1)
					if r.Verdict != nat.Forward {
						t.Fatalf("%v connection %d: %+v", v, i, r)
					}
					l := r.Conn.Local()
					if seen[l] || l.Port() < lo || l.Port() > hi {
						t.Fatalf("%v connection %d: local tuple %v taken or out of range", v, i, l)
					}
					seen[l] = true
					perAddr[l.Addr()]++
				}
				for _, a := range tc.lads {
					if perAddr[a] != tc.conns/len(tc.lads) {
						t.Errorf("%v: local address %v has %d connections, want %d", v, a, perAddr[a], tc.conns/len(tc.lads))
					}
				}
			}
			// Exhausted: refused and counted, nothing added.
			n := tb.Len()
			r := tb.Process(nattest.TCP(nattest.AP("10.0.0.11:5555"), vip, S, 0), &p, 1)
			if r.Verdict != nat.Drop || r.Reason != nat.DropNoLocalPort || tb.Drops(nat.DropNoLocalPort) != 1 || tb.Len() != n {
				t.Fatalf("exhausted: %+v, %d counted, %d connections (was %d)", r, tb.Drops(nat.DropNoLocalPort), tb.Len(), n)
			}
			if tc.conns == 0 {
				return
			}
			// --get-laddr's counters: the connections per address, and
			// the ports found taken (the refused SYN tried them all).
			var conns int64
			var conflicts uint64
			for _, l := range tb.Service(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}).LocalAddrs() {
				conns += l.Conns
				conflicts += l.Conflicts
			}
			if conns != int64(tc.conns) || conflicts < uint64(tc.conns) {
				t.Errorf("local address counters: %d connections, %d conflicts", conns, conflicts)
			}
			// Expired connections give their ports back.
			tb.SweepAll(int64(1e18))
			if tb.Len() != 0 {
				t.Fatalf("%d connections after expiry", tb.Len())
			}
			for _, l := range tb.Service(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}).LocalAddrs() {
				if l.Conns != 0 {
					t.Errorf("%v: %d connections after expiry", l.Addr, l.Conns)
				}
			}
			for i := range tc.conns {
				c := netip.AddrPortFrom(cli.Addr(), uint16(2000+i))
				if r := tb.Process(nattest.TCP(c, vip, S, 0), &p, int64(1e18)+1); r.Verdict != nat.Forward {
					t.Fatalf("after expiry, connection %d: %+v", i, r)
				}
			}
		})
	}
}

// ICMP errors both ways: a "too big" from the real server's side quoting
// LADDR:lport -> RS reaches the client quoting client -> VIP; one from the
// client's side quoting VIP -> client reaches the real server from LADDR,
// quoting RS -> LADDR:lport.
func TestFullNATICMP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		v, c, rs, lads, router := vip, cli, rs1, lad4, netip.MustParseAddr("172.16.1.254")
		crouter := netip.MustParseAddr("10.0.0.254")
		if v6 {
			v, c, rs, lads, router, crouter = vip6, cli6, rs6, lad6, netip.MustParseAddr("fd00::fe"), netip.MustParseAddr("fd01::fe")
		}
		tb := nat.New(nat.Config{})
		fullNATService(t, tb, 6, v, lads, rs)
		var p nat.Packet
		first := nattest.TCP(c, v, S, 0)
		r := tb.Process(first, &p, 1)
		if r.Verdict != nat.Forward {
			t.Fatal(r)
		}
		l, rsp := r.Conn.Local(), netip.AddrPortFrom(rs, 8080)

		// From the real server's side, about what the director sent.
		var q nat.Packet
		nat.Parse(nattest.Build(nattest.Seg{Src: l, Dst: rsp, Proto: 6, Flags: A, Size: 1400}), &q)
		e := make([]byte, 1500)
		e = e[:nat.BuildTooBig(e, &q, router, 1300)]
		r = tb.Process(e, &p, 2)
		if r.Verdict != nat.Forward || r.Dir != nat.DirOut || !p.VerifyL4Checksum() {
			t.Fatalf("v6=%v out: %+v, checksum ok %v", v6, r, p.VerifyL4Checksum())
		}
		if p.Src() != v.Addr() || p.Dst() != c.Addr() || p.InnerSrc() != c.Addr() || p.Inner.SrcPort != c.Port() ||
			p.InnerDst() != v.Addr() || p.Inner.DstPort != v.Port() {
			t.Fatalf("v6=%v out: %v -> %v quoting %v:%d -> %v:%d", v6, p.Src(), p.Dst(), p.InnerSrc(), p.Inner.SrcPort, p.InnerDst(), p.Inner.DstPort)
		}

		// From the client's side, about a reply.
		nat.Parse(nattest.Build(nattest.Seg{Src: v, Dst: c, Proto: 6, Flags: A, Size: 1400}), &q)
		e = make([]byte, 1500)
		e = e[:nat.BuildTooBig(e, &q, crouter, 1300)]
		r = tb.Process(e, &p, 3)
		if r.Verdict != nat.Forward || r.Dir != nat.DirIn || !p.VerifyL4Checksum() {
			t.Fatalf("v6=%v in: %+v, checksum ok %v", v6, r, p.VerifyL4Checksum())
		}
		if p.Src() != l.Addr() || p.Dst() != rs || p.InnerSrc() != rs || p.Inner.SrcPort != 8080 ||
			p.InnerDst() != l.Addr() || p.Inner.DstPort != l.Port() {
			t.Fatalf("v6=%v in: %v -> %v quoting %v:%d -> %v:%d", v6, p.Src(), p.Dst(), p.InnerSrc(), p.Inner.SrcPort, p.InnerDst(), p.Inner.DstPort)
		}
	}
}

// establishedFullNAT is a table with one full-NAT connection of cli and a
// segment of size bytes of it each way.
func establishedFullNAT(t testing.TB, size int) (tb *nat.Table, in, out []byte) {
	tb = nat.New(nat.Config{})
	fullNATService(t, tb, 6, vip, lad4, rs1)
	var p nat.Packet
	r := tb.Process(nattest.TCP(cli, vip, S, 0), &p, 0)
	in = nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: size})
	out = nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: r.Conn.Local(), Proto: 6, Flags: A, Size: size})
	return tb, in, out
}

// An established full-NAT connection's packets allocate nothing.
func TestFullNATAllocatesNothing(t *testing.T) {
	tb, in, out := establishedFullNAT(t, 1400)
	var p nat.Packet
	bi, bo := make([]byte, len(in)), make([]byte, len(out))
	allocs := testing.AllocsPerRun(1000, func() {
		copy(bi, in)
		copy(bo, out)
		if tb.Process(bi, &p, 0).Verdict != nat.Forward || tb.Process(bo, &p, 0).Verdict != nat.Forward {
			panic("not forwarded")
		}
	})
	if allocs != 0 {
		t.Errorf("full-NAT established path allocates %.1f per packet pair", allocs)
	}
}

// Persistence holds for full NAT: a client's connections go to one real
// server, each with its own local port.
func TestFullNATPersistence(t *testing.T) {
	tb := nat.New(nat.Config{})
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: "rr", Persistent: true, LocalAddrs: lad4}); err != nil {
		t.Fatal(err)
	}
	for _, rs := range []netip.Addr{rs1, rs2} {
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs, Port: 80, Weight: 1, Method: rules.FullNAT}); err != nil {
			t.Fatal(err)
		}
	}
	var p nat.Packet
	var d *nat.Dest
	seen := map[netip.AddrPort]bool{}
	for i := range 10 {
		r := tb.Process(nattest.TCP(netip.AddrPortFrom(cli.Addr(), uint16(3000+i)), vip, S, 0), &p, 1)
		if r.Verdict != nat.Forward || (d != nil && r.Conn.Dest() != d) || seen[r.Conn.Local()] {
			t.Fatalf("connection %d: %+v to %v from %v", i, r, r.Conn.Dest().AddrPort(), r.Conn.Local())
		}
		d = r.Conn.Dest()
		seen[r.Conn.Local()] = true
	}
}

// The full-NAT rewrite of an established connection, both directions.
func BenchmarkFullNAT(b *testing.B) {
	tb, in, out := establishedFullNAT(b, 1500)
	var p nat.Packet
	bi, bo := make([]byte, len(in)), make([]byte, len(out))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i&1 == 0 {
			copy(bi, in)
			tb.Process(bi, &p, 0)
		} else {
			copy(bo, out)
			tb.Process(bo, &p, 0)
		}
	}
}

// The full-NAT services of FuzzProcess.
var (
	fnVIP  = nattest.AP("172.16.1.100:443")
	fnVIP6 = nattest.AP("[fd00::100]:53")
)

// --add-laddr and --del-laddr through the table: -E keeps the local
// addresses, a removed one takes no new connection, the rules round-trip.
func TestFullNATLocalAddrChanges(t *testing.T) {
	tb := nat.New(nat.Config{})
	fullNATService(t, tb, 6, vip, nil, rs1)
	k := rules.Service{ServiceKey: nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}}
	var p nat.Packet
	if r := tb.Process(nattest.TCP(cli, vip, S, 0), &p, 1); r.Reason != nat.DropNoLocalPort {
		t.Fatalf("without a local address: %+v", r)
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.AddLocalAddr, Service: k, LocalAddr: lad4[0]}}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.AddLocalAddr, Service: k, LocalAddr: lad4[0]}}); !errors.Is(err, rules.ErrLocalAddrExists) {
		t.Fatalf("twice: %v", err)
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.AddLocalAddr, Service: k, LocalAddr: lad6[0]}}); !errors.Is(err, rules.ErrInvalid) {
		t.Fatalf("IPv6 local address of an IPv4 service: %v", err)
	}
	if err := tb.EditService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: "wlc"}); err != nil {
		t.Fatal(err)
	}
	r := tb.Process(nattest.TCP(cli, vip, S, 0), &p, 1)
	if r.Verdict != nat.Forward || r.Conn.Local().Addr() != lad4[0] {
		t.Fatalf("after --add-laddr and -E: %+v", r)
	}
	// A client may not use a local address.
	if r := tb.Process(nattest.TCP(netip.AddrPortFrom(lad4[0], 999), vip, S, 0), &p, 1); r.Reason != nat.DropOwnSource {
		t.Fatalf("from a local address: %+v", r)
	}
	got := tb.Rules()
	if s := got.Service(k.ServiceKey); len(s.LocalAddrs) != 1 || s.Servers[0].Method != rules.FullNAT {
		t.Fatalf("rules %+v", s)
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.DelLocalAddr, Service: k, LocalAddr: lad4[0]}}); err != nil {
		t.Fatal(err)
	}
	if r := tb.Process(nattest.TCP(nattest.AP("10.0.0.10:1"), vip, S, 0), &p, 1); r.Reason != nat.DropNoLocalPort {
		t.Fatalf("after --del-laddr: %+v", r)
	}
	// The connection made before keeps its local tuple.
	out := nattest.TCP(netip.AddrPortFrom(rs1, 8080), r0Local(t, tb), S|A, 0)
	if r := tb.Process(out, &p, 2); r.Verdict != nat.Forward || p.Dst() != cli.Addr() {
		t.Fatalf("reply after --del-laddr: %+v", r)
	}
}

func r0Local(t *testing.T, tb *nat.Table) netip.AddrPort {
	t.Helper()
	c, _ := tb.Lookup(6, cli, vip)
	if c == nil {
		t.Fatal("connection gone")
	}
	return c.Local()
}

// Every scheduler opens full-NAT connections: the method is the real
// server's, the choice the scheduler's.
func TestFullNATEveryScheduler(t *testing.T) {
	for _, name := range sched.Names() {
		tb := nat.New(nat.Config{})
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: name, LocalAddrs: lad4}); err != nil {
			t.Fatal(err)
		}
		for _, rs := range []netip.Addr{rs1, rs2} {
			if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs, Port: 80, Weight: 1, Method: rules.FullNAT}); err != nil {
				t.Fatal(err)
			}
		}
		var p nat.Packet
		for i := range 4 {
			c := netip.AddrPortFrom(cli.Addr(), uint16(5000+i))
			r := tb.Process(nattest.TCP(c, vip, S, 0), &p, 1)
			if r.Verdict != nat.Forward || !r.Conn.FullNAT() || p.Src() != r.Conn.Local().Addr() {
				t.Fatalf("%s, connection %d: %+v", name, i, r)
			}
		}
	}
}
