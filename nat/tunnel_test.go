package nat_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

var (
	tnVIP  = nattest.AP("172.16.1.103:80")
	tnVIP6 = nattest.AP("[fd00::103]:5353")
)

// tunnelService adds a service whose one real server tunnels with enc.
func tunnelService(t testing.TB, tb *nat.Table, proto uint8, vip netip.AddrPort, rs netip.Addr, enc rules.Encap) {
	t.Helper()
	k := nat.ServiceKey{Proto: proto, Addr: vip.Addr(), Port: vip.Port()}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: proto, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: rs, Port: vip.Port(), Weight: 1, Method: rules.Tunnel, Tun: enc}); err != nil {
		t.Fatal(err)
	}
}

// Tunnelling: the client's packets are forwarded unchanged (the host
// encapsulates them), tracked by them alone in the INPUT-ONLY table as
// direct routing is (__ip_vs_update_dest sets NOOUTPUT for every method
// but masquerading); the dest's encapsulation is what its connections
// use, an -e included.
func TestTunnelForwardsUnchanged(t *testing.T) {
	enc := rules.Encap{Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum}
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) { tunnelService(t, tb, 6, tnVIP, rs1, enc) })
	b := nattest.TCP(cli, tnVIP, S, 0)
	orig := append([]byte(nil), b...)
	r := e.tb.Process(b, &e.p, e.now)
	if r.Verdict != nat.Forward || r.Dir != nat.DirIn || !r.Conn.Tunnelled() || r.Conn.Routed() || !bytes.Equal(b, orig) {
		t.Fatalf("SYN: %+v, rewritten %v", r, !bytes.Equal(b, orig))
	}
	c := r.Conn
	if c.DAddr() != rs1 || c.Encap() != enc || c.EncapLen() != 20+8+4 {
		t.Fatalf("to %v with %+v (%d bytes)", c.DAddr(), c.Encap(), c.EncapLen())
	}
	for _, s := range []struct {
		flags uint8
		want  nat.State
	}{{A, nat.StateEstablished}, {F | A, nat.StateFinWait}} {
		if r := e.tb.Process(nattest.TCP(cli, tnVIP, s.flags, 10), &e.p, e.now); r.Verdict != nat.Forward || c.State() != s.want {
			t.Fatalf("flags %#x: %+v, state %v, want %v", s.flags, r, c.State(), s.want)
		}
	}
	d := dest(t, e.tb, rs1)
	if d.Method() != rules.Tunnel {
		t.Errorf("method %v", d.Method())
	}
	if err := e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: tnVIP.Addr(), Port: tnVIP.Port()}, nat.DestConfig{Addr: rs1, Port: tnVIP.Port(), Weight: 1, Method: rules.Tunnel, Tun: rules.Encap{Type: rules.TunGRE}}); err != nil {
		t.Fatal(err)
	}
	if c.Encap().Type != rules.TunGRE || c.EncapLen() != 24 {
		t.Errorf("after -e: %+v, %d bytes", c.Encap(), c.EncapLen())
	}
}

// The MTU check subtracts the encapsulation from the route's MTU
// (__ip_vs_get_out_rt): too big with DF is TooBig with that MTU; an MTU
// below 68 after it drops the packet (tunnel_mtu).
func TestTunnelMTU(t *testing.T) {
	for _, c := range []struct {
		enc  rules.Encap
		v6   bool
		over int
	}{
		{rules.Encap{}, false, 20},
		{rules.Encap{Type: rules.TunGUE, Port: 1}, false, 32},
		{rules.Encap{Type: rules.TunGRE, Flags: rules.TunCsum}, false, 28},
		{rules.Encap{Type: rules.TunGRE}, true, 44},
		{rules.Encap{}, true, 40},
	} {
		if n := nat.EncapLen(c.enc, c.v6); n != c.over {
			t.Errorf("EncapLen(%+v, v6 %v) = %d, want %d", c.enc, c.v6, n, c.over)
		}
	}
	mtu := 1400
	e := newEnv(t, nat.Config{EgressMTU: func(netip.Addr) int { return mtu }}, func(tb *nat.Table) {
		tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{Type: rules.TunGUE, Port: 6080})
	})
	e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
	for _, s := range []struct {
		size int
		df   bool
		want nat.Verdict
	}{{1368, true, nat.Forward}, {1369, true, nat.TooBig}, {1369, false, nat.Forward}} {
		b := nattest.Build(nattest.Seg{Src: cli, Dst: tnVIP, Proto: 6, Flags: A, Size: s.size, DF: s.df})
		r := e.tb.Process(b, &e.p, e.now)
		if r.Verdict != s.want || r.Verdict == nat.TooBig && r.MTU != 1368 {
			t.Errorf("%d bytes, DF %v: %+v, want %v", s.size, s.df, r, s.want)
		}
	}
	mtu = 99
	e2 := newEnv(t, nat.Config{EgressMTU: func(netip.Addr) int { return mtu }}, func(tb *nat.Table) {
		tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{Type: rules.TunGUE, Port: 6080})
	})
	if r := e2.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e2.p, e2.now); r.Verdict != nat.Drop || r.Reason != nat.DropTunnelMTU {
		t.Errorf("MTU 99 - 32: %+v, want a tunnel_mtu drop", r)
	}
}

// The tunnel path allocates nothing for an established connection.
func TestTunnelAllocatesNothing(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) { tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{}) })
	e.tb.Process(nattest.TCP(cli, tnVIP, S, 0), &e.p, e.now)
	b := nattest.TCP(cli, tnVIP, A, 100)
	var p nat.Packet
	if n := testing.AllocsPerRun(1000, func() {
		if r := e.tb.Process(b, &p, e.now); r.Verdict != nat.Forward {
			t.Fatalf("%+v", r)
		}
	}); n != 0 {
		t.Errorf("%v allocations per tunnelled packet", n)
	}
}
