package nat_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

var (
	vip  = nattest.AP("172.16.1.100:80")
	rs1  = netip.MustParseAddr("172.16.1.5")
	rs2  = netip.MustParseAddr("172.16.1.6")
	cli  = nattest.AP("10.0.0.10:40000")
	vip6 = nattest.AP("[fd00::100]:80")
	rs6  = netip.MustParseAddr("fd00::5")
	cli6 = nattest.AP("[fd01::10]:40000")
)

const (
	A = nattest.ACK
	S = nattest.SYN
	F = nattest.FIN
	R = nattest.RST
)

type env struct {
	t   *testing.T
	tb  *nat.Table
	now int64
	p   nat.Packet
}

func newEnv(t *testing.T, cfg nat.Config, rules func(tb *nat.Table)) *env {
	t.Helper()
	tb := nat.New(cfg)
	rules(tb)
	return &env{t: t, tb: tb, now: time.Unix(1_000_000, 0).UnixNano()}
}

func twoServers(sched string, proto uint8) func(tb *nat.Table) {
	return func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: proto, Addr: vip.Addr(), Port: vip.Port(), Scheduler: sched}); err != nil {
			panic(err)
		}
		for _, d := range []netip.Addr{rs1, rs2} {
			if _, err := tb.AddDest(nat.ServiceKey{Proto: proto, Addr: vip.Addr(), Port: vip.Port()}, nat.DestConfig{Addr: d, Port: 8080, Weight: 1}); err != nil {
				panic(err)
			}
		}
	}
}

func (e *env) in(c netip.AddrPort, flags uint8) nat.Result {
	e.t.Helper()
	return e.tb.Process(nattest.TCP(c, vip, flags, 0), &e.p, e.now)
}

func (e *env) out(c netip.AddrPort, flags uint8) nat.Result {
	e.t.Helper()
	conn, _ := e.tb.Lookup(6, c, vip)
	if conn == nil {
		e.t.Fatalf("no connection for %v", c)
	}
	return e.tb.Process(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, flags, 0), &e.p, e.now)
}

func (e *env) advance(d time.Duration) { e.now += int64(d) }

func dest(t *testing.T, tb *nat.Table, a netip.Addr) *nat.Dest {
	t.Helper()
	for _, s := range tb.Services() {
		for _, d := range s.Dests() {
			if d.Addr == a {
				return d
			}
		}
	}
	t.Fatalf("no dest %v", a)
	return nil
}

// A whole TCP connection through the NAT: DNAT, SNAT, the kernel's state
// walk and the active/inactive counts at each step.
func TestTCPConnectionLifecycle(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	steps := []struct {
		in     bool
		flags  uint8
		state  nat.State
		active int
	}{
		{true, S, nat.StateSynRecv, 1},
		{false, S | A, nat.StateSynRecv, 1},
		{true, A, nat.StateEstablished, 1},
		{true, A, nat.StateEstablished, 1},
		{false, A, nat.StateEstablished, 1},
		{true, F | A, nat.StateCloseWait, 0},
		{false, A, nat.StateCloseWait, 0},
		{false, F | A, nat.StateTimeWait, 0},
		{true, A, nat.StateTimeWait, 0},
	}
	var d *nat.Dest
	for i, s := range steps {
		var r nat.Result
		if s.in {
			r = e.in(cli, s.flags)
			if r.Verdict != nat.Forward || r.Dir != nat.DirIn {
				t.Fatalf("step %d: %+v", i, r)
			}
			// DNAT: destination is the real server, port mapped.
			if e.p.Dst() != r.Conn.DAddr() || e.p.DstPort != 8080 || e.p.Src() != cli.Addr() || e.p.SrcPort != cli.Port() {
				t.Fatalf("step %d: DNAT gave %v:%d -> %v:%d", i, e.p.Src(), e.p.SrcPort, e.p.Dst(), e.p.DstPort)
			}
		} else {
			r = e.out(cli, s.flags)
			if r.Verdict != nat.Forward || r.Dir != nat.DirOut {
				t.Fatalf("step %d: %+v", i, r)
			}
			// SNAT: the client sees the VIP.
			if e.p.Src() != vip.Addr() || e.p.SrcPort != vip.Port() || e.p.Dst() != cli.Addr() {
				t.Fatalf("step %d: SNAT gave %v:%d -> %v", i, e.p.Src(), e.p.SrcPort, e.p.Dst())
			}
		}
		if !e.p.VerifyL4Checksum() {
			t.Fatalf("step %d: checksum wrong after rewrite", i)
		}
		if got := r.Conn.State(); got != s.state {
			t.Errorf("step %d: state %v, want %v", i, got, s.state)
		}
		d = r.Conn.Dest()
		if d.ActiveConns() != s.active || d.InactConns() != 1-s.active {
			t.Errorf("step %d: active/inactive %d/%d, want %d/%d", i, d.ActiveConns(), d.InactConns(), s.active, 1-s.active)
		}
	}
	// rr: the first connection goes to the server added last.
	if d.Addr != rs2 {
		t.Errorf("first connection went to %v, want %v (the last added)", d.Addr, rs2)
	}
	st := d.Stats.Snapshot()
	if st.Conns != 1 || st.InPkts != 5 || st.OutPkts != 4 || st.InBytes != 5*40 || st.OutBytes != 4*40 {
		t.Errorf("dest stats %+v", st)
	}
	// TIME_WAIT expires after its 120 s, not before.
	e.advance(119 * time.Second)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 1 {
		t.Fatal("expired early")
	}
	e.advance(2 * time.Second)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 0 || d.InactConns() != 0 || d.ActiveConns() != 0 {
		t.Errorf("after TIME_WAIT: %d conns, dest %d/%d", e.tb.Len(), d.ActiveConns(), d.InactConns())
	}
}

// Every transition of the kernel's table, spot-checked through packets:
// a RST from either side closes; a SYN reusing a TIME_WAIT connection's
// ports is a new connection (conn_reuse_mode).
func TestTCPStatesAndReuse(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	r := e.in(cli, S)
	first := r.Conn
	e.out(cli, S|A)
	e.in(cli, A)
	if r := e.out(cli, R); r.Conn.State() != nat.StateClose {
		t.Errorf("RST from server: %v", r.Conn.State())
	}
	if first.Dest().ActiveConns() != 0 {
		t.Error("closed connection still active")
	}
	// CLOSE times out after 10 s.
	e.advance(11 * time.Second)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 0 {
		t.Fatal("CLOSE did not expire after 10 s")
	}

	// Reuse: same client port, TIME_WAIT, new SYN -> scheduled again.
	c2 := nattest.AP("10.0.0.10:40001")
	a := e.in(c2, S).Conn
	e.out(c2, S|A)
	e.in(c2, A)
	e.in(c2, F|A)
	e.out(c2, F|A)
	if a.State() != nat.StateTimeWait {
		t.Fatalf("want TIME_WAIT, got %v", a.State())
	}
	b := e.in(c2, S).Conn
	if b == a || b.State() != nat.StateSynRecv {
		t.Errorf("SYN on a TIME_WAIT connection was not a new connection")
	}
	if e.tb.Len() != 1 {
		t.Errorf("old connection not replaced: %d conns", e.tb.Len())
	}
}

// A non-SYN packet to the VIP without a connection is left to the stack
// (which resets it), as the kernel leaves it to its own stack.
func TestNonSYNDoesNotSchedule(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	if r := e.in(cli, A); r.Verdict != nat.Pass {
		t.Errorf("ACK without connection: %+v", r)
	}
	if e.tb.Len() != 0 {
		t.Error("connection made by a non-SYN")
	}
	// Traffic to other addresses is not the NAT's business.
	b := nattest.TCP(cli, nattest.AP("172.16.1.99:80"), S, 0)
	if r := e.tb.Process(b, &e.p, e.now); r.Verdict != nat.Pass {
		t.Errorf("non-service traffic: %+v", r)
	}
}

func TestUDPAndTimeouts(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 17))
	b := nattest.UDP(cli, vip, []byte("ping"))
	r := e.tb.Process(b, &e.p, e.now)
	if r.Verdict != nat.Forward || r.Conn.State() != nat.StateUDP {
		t.Fatalf("%+v", r)
	}
	d := r.Conn.Dest()
	if d.ActiveConns() != 0 || d.InactConns() != 1 {
		t.Errorf("UDP counts as active/inactive %d/%d, want 0/1 (IPVS)", d.ActiveConns(), d.InactConns())
	}
	reply := nattest.UDP(netip.AddrPortFrom(r.Conn.DAddr(), r.Conn.DPort), cli, []byte("pong"))
	if r := e.tb.Process(reply, &e.p, e.now); r.Verdict != nat.Forward || e.p.Src() != vip.Addr() || e.p.SrcPort != 80 {
		t.Fatalf("reply: %+v from %v:%d", r, e.p.Src(), e.p.SrcPort)
	}
	e.tb.SetTimeouts(0, 0, 5*time.Second)
	e.tb.Process(nattest.UDP(cli, vip, []byte("x")), &e.p, e.now) // takes the new timeout
	e.advance(4 * time.Second)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 1 {
		t.Fatal("UDP expired early")
	}
	e.advance(2 * time.Second)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 0 || d.InactConns() != 0 {
		t.Error("UDP did not expire")
	}
}

func TestIPv6(t *testing.T) {
	tb := nat.New(nat.Config{})
	tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip6.Addr(), Port: 80, Scheduler: "rr"})
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip6.Addr(), Port: 80}, nat.DestConfig{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}); !errors.Is(err, nat.ErrInvalid) {
		t.Errorf("IPv4 server in an IPv6 service: %v", err)
	}
	tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip6.Addr(), Port: 80}, nat.DestConfig{Addr: rs6, Weight: 1})
	var p nat.Packet
	r := tb.Process(nattest.TCP(cli6, vip6, S, 0), &p, 0)
	if r.Verdict != nat.Forward || p.Dst() != rs6 || p.DstPort != 80 || !p.VerifyL4Checksum() {
		t.Fatalf("%+v dst %v", r, p.Dst())
	}
	r = tb.Process(nattest.TCP(netip.AddrPortFrom(rs6, 80), cli6, S|A, 0), &p, 0)
	if r.Verdict != nat.Forward || p.Src() != vip6.Addr() || !p.VerifyL4Checksum() {
		t.Fatalf("%+v src %v", r, p.Src())
	}
}

// Weight 0 quiesces: no new connections, existing ones go on. With every
// server quiesced a new connection is refused with a port unreachable.
func TestQuiesce(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("wrr", 6))
	c := e.in(cli, S).Conn
	if err := e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: c.DAddr(), Port: 8080, Weight: 0}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		cc := netip.AddrPortFrom(cli.Addr(), uint16(41000+i))
		if r := e.in(cc, S); r.Conn.DAddr() == c.DAddr() {
			t.Fatalf("quiesced server got connection %d", i)
		}
	}
	if r := e.out(cli, S|A); r.Verdict != nat.Forward {
		t.Error("existing connection to a quiesced server broke")
	}
	other := rs1
	if c.DAddr() == rs1 {
		other = rs2
	}
	e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: other, Port: 8080, Weight: 0})
	r := e.in(nattest.AP("10.0.0.10:42000"), S)
	if r.Verdict != nat.Drop || r.Reason != nat.DropNoDest || !r.Unreachable {
		t.Errorf("all quiesced: %+v", r)
	}
	if e.tb.Drops(nat.DropNoDest) != 1 {
		t.Error("no_dest not counted")
	}
}

// Removing a server, with expire_nodest_conn=0 (the default): its
// connections stay in the table, the server's replies still get through,
// but Linux 6.1 drops every client-side packet of them (ip_vs_in_hook,
// "the destination server is not available").
func TestDelDestKeepsConnections(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	c := e.in(cli, S).Conn
	if err := e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(c.DAddr(), 8080)); err != nil {
		t.Fatal(err)
	}
	if r := e.out(cli, S|A); r.Verdict != nat.Forward {
		t.Fatal("reply of a removed server's connection dropped")
	}
	if r := e.in(cli, A); r.Verdict != nat.Drop || r.Reason != nat.DropDestUnavailable {
		t.Fatalf("client packet to a removed server: %+v", r)
	}
	if e.tb.Len() != 1 || e.tb.Drops(nat.DropDestUnavailable) != 1 {
		t.Errorf("connection gone or drop not counted: %d conns", e.tb.Len())
	}
	if r := e.in(nattest.AP("10.0.0.11:1"), S); r.Conn.DAddr() == c.DAddr() {
		t.Error("removed server scheduled")
	}
}

// Past its bound the table refuses new flows and keeps the old ones.
func TestTableFull(t *testing.T) {
	e := newEnv(t, nat.Config{MaxConns: 3}, twoServers("rr", 6))
	e.tb.SetSynProxy(nat.SynProxyOff) // the bound itself, not the cookies past it
	// Established, so that early drop (which frees half-open and closing
	// entries for a new connection) has nothing to take.
	for i := range 3 {
		if r := e.handshake(netip.AddrPortFrom(cli.Addr(), uint16(1000+i))); r.Verdict != nat.Forward {
			t.Fatal(r)
		}
	}
	r := e.in(netip.AddrPortFrom(cli.Addr(), 2000), S)
	if r.Verdict != nat.Drop || r.Reason != nat.DropTableFull {
		t.Fatalf("4th connection: %+v", r)
	}
	if e.tb.Drops(nat.DropTableFull) != 1 {
		t.Error("table_full not counted")
	}
	if r := e.in(netip.AddrPortFrom(cli.Addr(), 1000), A); r.Verdict != nat.Forward {
		t.Error("existing connection broke when the table was full")
	}
}

func TestMalformedCounted(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	good := nattest.TCP(cli, vip, S, 0)
	bad := append([]byte(nil), good...)
	bad[10] ^= 0xff // IPv4 header checksum
	cases := []struct {
		b    []byte
		want nat.DropReason
	}{
		{good[:10], nat.DropTruncated},
		{[]byte{0x75, 0, 0, 20}, nat.DropBadVersion},
		{bad, nat.DropBadChecksum},
	}
	for _, c := range cases {
		if r := e.tb.Process(c.b, &e.p, e.now); r.Verdict != nat.Drop || r.Reason != c.want {
			t.Errorf("want %v, got %+v", c.want, r)
		}
		if e.tb.Drops(c.want) == 0 {
			t.Errorf("%v not counted", c.want)
		}
	}
	// A bad TCP checksum on a SYN does not open a connection.
	b := nattest.TCP(cli, vip, S, 0)
	b[len(b)-4] ^= 0x55
	if r := e.tb.Process(b, &e.p, e.now); r.Reason != nat.DropBadChecksum || e.tb.Len() != 0 {
		t.Errorf("bad L4 checksum: %+v", r)
	}
	// Fragments of service traffic cannot be NATed without reassembly.
	f := nattest.TCP(cli, vip, S, 0)
	binary.BigEndian.PutUint16(f[6:], 0x2000) // MF
	f[10], f[11] = 0, 0
	binary.BigEndian.PutUint16(f[10:], nattest.Checksum(f[:20], 0))
	if r := e.tb.Process(f, &e.p, e.now); r.Reason != nat.DropFragment {
		t.Errorf("fragment: %+v", r)
	}
}

// ICMP errors about a connection are translated both ways, inner header
// included, so path-MTU discovery works through the director.
func TestICMPTranslation(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	c := e.in(cli, S).Conn
	rip := netip.AddrPortFrom(c.DAddr(), c.DPort)
	router := netip.MustParseAddr("172.16.1.254")

	// From the real server's side: a router between director and server
	// says "fragmentation needed" about client -> real server. The client
	// must get it from the VIP, quoting client -> VIP.
	var op nat.Packet
	orig := nattest.Build(nattest.Seg{Src: cli, Dst: rip, Proto: 6, Flags: A, Size: 1500, DF: true})
	if nat.Parse(orig, &op) != nat.DropNone {
		t.Fatal("orig")
	}
	icmp := make([]byte, 1280)
	n := nat.BuildTooBig(icmp, &op, router, 1400)
	r := e.tb.Process(icmp[:n], &e.p, e.now)
	if r.Verdict != nat.Forward || r.Dir != nat.DirOut {
		t.Fatalf("server-side ICMP: %+v", r)
	}
	if e.p.Src() != vip.Addr() || e.p.Dst() != cli.Addr() || e.p.InnerSrc() != cli.Addr() || e.p.InnerDst() != vip.Addr() ||
		e.p.Inner.DstPort != vip.Port() || e.p.Inner.SrcPort != cli.Port() {
		t.Errorf("server-side ICMP became %v -> %v quoting %v:%d -> %v:%d", e.p.Src(), e.p.Dst(),
			e.p.InnerSrc(), e.p.Inner.SrcPort, e.p.InnerDst(), e.p.Inner.DstPort)
	}
	if !e.p.VerifyL4Checksum() {
		t.Error("ICMP checksum wrong after translation")
	}

	// From the client's side: an error about a reply VIP -> client must
	// reach the real server, quoting real server -> client.
	reply := nattest.Build(nattest.Seg{Src: vip, Dst: cli, Proto: 6, Flags: A, Size: 1500, DF: true})
	nat.Parse(reply, &op)
	n = nat.BuildTooBig(icmp, &op, netip.MustParseAddr("10.0.0.254"), 1300)
	r = e.tb.Process(icmp[:n], &e.p, e.now)
	if r.Verdict != nat.Forward || r.Dir != nat.DirIn {
		t.Fatalf("client-side ICMP: %+v", r)
	}
	if e.p.Dst() != c.DAddr() || e.p.InnerSrc() != c.DAddr() || e.p.Inner.SrcPort != c.DPort || e.p.InnerDst() != cli.Addr() {
		t.Errorf("client-side ICMP became -> %v quoting %v:%d -> %v", e.p.Dst(), e.p.InnerSrc(), e.p.Inner.SrcPort, e.p.InnerDst())
	}
	if !e.p.VerifyL4Checksum() {
		t.Error("ICMP checksum wrong after translation")
	}
}

// Oversized packets with DF set are answered with TooBig before any
// rewrite, as ip_vs_nat_xmit checks the MTU first.
func TestTooBig(t *testing.T) {
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int {
		if dst == cli.Addr() {
			return 1500
		}
		return 1280
	}})
	twoServers("rr", 6)(tb)
	var p nat.Packet
	tb.Process(nattest.TCP(cli, vip, S, 0), &p, 0)
	big := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: 1400, DF: true})
	r := tb.Process(big, &p, 0)
	if r.Verdict != nat.TooBig || r.MTU != 1280 {
		t.Fatalf("%+v", r)
	}
	if p.Dst() != vip.Addr() {
		t.Error("TooBig packet was rewritten; the ICMP must quote what the client sent")
	}
	ok := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: 1280, DF: true})
	if r := tb.Process(ok, &p, 0); r.Verdict != nat.Forward {
		t.Errorf("packet at the MTU: %+v", r)
	}
}

// A packet whose TTL would run out here is answered before any rewrite,
// as IPVS's decrement_ttl does.
func TestTTLExpires(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	e.in(cli, S)
	b := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, TTL: 1})
	r := e.tb.Process(b, &e.p, e.now)
	if r.Verdict != nat.TimeExceeded || e.p.Dst() != vip.Addr() {
		t.Fatalf("%+v, dst %v", r, e.p.Dst())
	}
	icmp := make([]byte, 1280)
	n := nat.BuildTimeExceeded(icmp, &e.p, netip.MustParseAddr("10.0.0.1"))
	var q nat.Packet
	if n == 0 || nat.Parse(icmp[:n], &q) != nat.DropNone || !q.ICMPError || q.ICMPType != 11 || q.InnerDst() != vip.Addr() {
		t.Errorf("time exceeded: n=%d %+v", n, q)
	}
	if e.tb.Drops(nat.DropTTL) != 1 {
		t.Error("ttl_exceeded not counted")
	}
}

// The per-packet path of an established flow allocates nothing.
func TestEstablishedPathAllocatesNothing(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	e.in(cli, S)
	conn, _ := e.tb.Lookup(6, cli, vip)
	in := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: 1400})
	out := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(conn.DAddr(), conn.DPort), Dst: cli, Proto: 6, Flags: A, Size: 1400})
	bi := make([]byte, len(in))
	bo := make([]byte, len(out))
	var p nat.Packet
	allocs := testing.AllocsPerRun(1000, func() {
		copy(bi, in)
		copy(bo, out)
		if e.tb.Process(bi, &p, e.now).Verdict != nat.Forward || e.tb.Process(bo, &p, e.now).Verdict != nat.Forward {
			panic("not forwarded")
		}
	})
	if allocs != 0 {
		t.Errorf("established path allocates %.1f per packet pair", allocs)
	}
}

// Process never panics and keeps its invariants on any input.
func FuzzProcess(f *testing.F) {
	seeds := [][]byte{
		nattest.TCP(cli, vip, S, 0),
		nattest.TCP(cli, vip, A, 200),
		nattest.UDP(cli, vip, []byte("hello")),
		nattest.TCP(cli6, vip6, S, 0),
		nattest.UDP(cli6, vip6, []byte("hello")),
		nattest.TCP(cli, fnVIP, S, 0),
		nattest.UDP(cli6, fnVIP6, []byte("hello")),
		nattest.TCP(netip.AddrPortFrom(rs1, 8080), netip.AddrPortFrom(lad4[0], 40000), S|A, 0),
		// The PROXY protocol connection's first data, a later
		// segment, and the real server's SYN-ACK and SACK.
		nattest.Build(nattest.Seg{Src: cli, Dst: ppVIP, Proto: 6, Flags: A, Seq: 1001, Payload: []byte("GET / HTTP/1.1\r\n")}),
		nattest.Build(nattest.Seg{Src: cli, Dst: ppVIP, Proto: 6, Flags: A, Seq: 1001, Payload: []byte("PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\nGET")}),
		nattest.Build(nattest.Seg{Src: cli, Dst: ppVIP, Proto: 6, Flags: A, Seq: 2001, Payload: []byte("x")}),
		nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs2, 8080), Dst: netip.AddrPortFrom(lad4[1], 40000), Proto: 6, Flags: S | A, Ack: 1001, Options: []byte{2, 4, 5, 0xb4}}),
		nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs2, 8080), Dst: netip.AddrPortFrom(lad4[1], 40000), Proto: 6, Flags: A, Ack: 1100,
			Options: []byte{1, 1, 5, 10, 0, 0, 4, 0, 0, 0, 5, 0}}),
		// The SYN proxy's service (spVIP): a SYN, segments of a pending
		// and of an established connection, the server's SYN-ACK.
		nattest.Build(nattest.Seg{Src: cli, Dst: spVIP, Proto: 6, Flags: S, Options: synOpts(1460, 5, 0, 7)}),
		nattest.Build(nattest.Seg{Src: cli, Dst: spVIP, Proto: 6, Flags: A, Seq: 11, Options: tsOpts(6, 7), Size: 300}),
		nattest.Build(nattest.Seg{Src: spCli2, Dst: spVIP, Proto: 6, Flags: A, Seq: 11, Options: tsOpts(6, 7), Size: 300}),
		nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: cli, Proto: 6, Flags: S | A, Ack: 11, Options: synOpts(1460, 5, 6, 7)}),
		nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: spCli2, Proto: 6, Flags: A, Seq: 4001, Ack: 11, Options: tsOpts(6, 7), Size: 200}),
		nattest.TCP(cli, tnVIP, S, 0),
		nattest.UDP(cli6, tnVIP6, []byte("hello")),
	}
	var op nat.Packet
	nat.Parse(nattest.Build(nattest.Seg{Src: cli, Dst: netip.AddrPortFrom(rs1, 8080), Proto: 6, Size: 600}), &op)
	icmp := make([]byte, 1280)
	n := nat.BuildTooBig(icmp, &op, netip.MustParseAddr("172.16.1.254"), 1400)
	seeds = append(seeds, icmp[:n])
	// An error about the PROXY connection's shifted segment.
	nat.Parse(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(lad4[1], 40000), Dst: netip.AddrPortFrom(rs2, 8080), Proto: 6, Seq: 1500, Size: 600}), &op)
	icmp2 := make([]byte, 1280)
	seeds = append(seeds, icmp2[:nat.BuildTooBig(icmp2, &op, netip.MustParseAddr("172.16.1.254"), 1400)])
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// One local port: full NAT's replies have a known address.
		tb := nat.New(nat.Config{MaxConns: 16, Seed: 7, LocalPortMin: 40000, LocalPortMax: 40000})
		twoServers("rr", 6)(tb)
		twoServers6(tb)
		// Full NAT, TCP over IPv4 and UDP over IPv6.
		fullNATService(t, tb, 6, fnVIP, lad4[:1], rs1)
		fullNATService(t, tb, 17, fnVIP6, lad6[:1], rs6)
		// The PROXY protocol, with a connection open.
		tb.AddService(nat.ServiceConfig{Proto: 6, Addr: ppVIP.Addr(), Port: ppVIP.Port(), Scheduler: "rr", LocalAddrs: lad4[1:2], ProxyProtocol: rules.ProxyV1})
		tb.AddDest(nat.ServiceKey{Proto: 6, Addr: ppVIP.Addr(), Port: ppVIP.Port()}, nat.DestConfig{Addr: rs2, Port: 8080, Weight: 1, Method: rules.FullNAT})
		var sp nat.Packet
		tb.Process(nattest.Build(nattest.Seg{Src: cli, Dst: ppVIP, Proto: 6, Flags: S, Seq: 1000}), &sp, 0)
		// Persistence, one-packet scheduling and a port-zero service,
		// on the UDP seeds.
		tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip.Addr(), Port: 80, Scheduler: "rr", Persistent: true, PersistMaskBits: 24, OnePacket: true})
		tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, UThreshold: 1})
		tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs2, Weight: 1})
		tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip6.Addr(), Port: 0, Scheduler: "wlc", Persistent: true})
		tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip6.Addr(), Port: 0}, nat.DestConfig{Addr: rs6, Weight: 1})
		// The SYN proxy, with one connection waiting for its server and
		// one established.
		spService(t, tb)
		spHandshake(t, tb, cli, false)
		spHandshake(t, tb, spCli2, true)
		// Tunnelling (-i), TCP over IPv4 and UDP over IPv6.
		tunnelService(t, tb, 6, tnVIP, rs1, rules.Encap{Type: rules.TunGUE, Port: 6080})
		tunnelService(t, tb, 17, tnVIP6, rs6, rules.Encap{Type: rules.TunGRE, Flags: rules.TunCsum})
		orig := append([]byte(nil), b...)
		var p nat.Packet
		before := len(b)
		valid := false
		if nat.Parse(append([]byte(nil), b...), &p) == nat.DropNone {
			valid = p.VerifyL4Checksum()
		}
		if len(b)%2 == 0 {
			b = roomy(b) // room to rebuild in place, or none
		}
		r := tb.Process(b, &p, 1)
		if len(b) != before {
			t.Fatal("length changed")
		}
		if r.Rebuilt && (r.Verdict != nat.Forward && r.Verdict != nat.Reply || !p.VerifyL4Checksum()) {
			t.Fatalf("rebuilt packet: %+v, checksum %v", r, p.VerifyL4Checksum())
		}
		if r.Verdict == nat.Forward && r.Dir == nat.DirIn && r.Conn.FullNAT() && p.Proto != 1 && p.Proto != 58 &&
			(p.Src() != r.Conn.Local().Addr() || p.SrcPort != r.Conn.Local().Port()) {
			t.Fatalf("full NAT: source %v:%d, want the local tuple %v", p.Src(), p.SrcPort, r.Conn.Local())
		}
		if r.Verdict == nat.Forward && r.Dir == nat.DirIn && r.Conn.Tunnelled() && !bytes.Equal(b, orig) {
			t.Fatal("a tunnelled packet was rewritten")
		}
		if r.Verdict == nat.Forward && valid && !p.VerifyL4Checksum() {
			t.Fatalf("a valid packet has a bad checksum after the rewrite")
		}
		if r.Proxy {
			dst := make([]byte, len(b)+nat.ProxyMaxLen)
			n := nat.InsertProxy(dst, &p, r.Conn)
			if n == 0 || !bytes.HasPrefix(p.Payload(), []byte("PROXY TCP4 10.0.0.10 172.16.1.102 ")) {
				t.Fatalf("InsertProxy: %d, payload %q", n, p.Payload())
			}
			if valid && !p.VerifyL4Checksum() {
				t.Fatal("a valid first segment has a bad checksum with the header in")
			}
		}
		if tb.Len() > 16 {
			t.Fatal("table past its bound")
		}
	})
}

func twoServers6(tb *nat.Table) {
	tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip6.Addr(), Port: 80, Scheduler: "rr"})
	tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip6.Addr(), Port: 80}, nat.DestConfig{Addr: rs6, Weight: 1})
}

func BenchmarkEstablished(b *testing.B) {
	tb := nat.New(nat.Config{})
	twoServers("rr", 6)(tb)
	var p nat.Packet
	tb.Process(nattest.TCP(cli, vip, S, 0), &p, 0)
	in := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: 1500})
	buf := make([]byte, len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, in)
		tb.Process(buf, &p, 0)
	}
}

// The same client port reaching the same real server through a second
// virtual service while the first connection sits in TIME_WAIT: the kernel
// makes the new connection (found by the parity harness), and replies go
// to the newest.
func TestReplyKeyCollision(t *testing.T) {
	tb := nat.New(nat.Config{})
	vip2 := nattest.AP("172.16.1.101:80")
	for _, v := range []netip.AddrPort{vip, vip2} {
		tb.AddService(nat.ServiceConfig{Proto: 6, Addr: v.Addr(), Port: 80, Scheduler: "rr"})
		tb.AddDest(nat.ServiceKey{Proto: 6, Addr: v.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 80, Weight: 1})
	}
	var p nat.Packet
	rip := netip.AddrPortFrom(rs1, 80)
	send := func(b []byte) nat.Result { return tb.Process(b, &p, 0) }
	first := send(nattest.TCP(cli, vip, S, 0)).Conn
	send(nattest.TCP(rip, cli, S|A, 0))
	send(nattest.TCP(cli, vip, F|A, 0))
	send(nattest.TCP(rip, cli, F|A, 0))
	if first.State() != nat.StateTimeWait {
		t.Fatalf("first connection %v", first.State())
	}
	r := send(nattest.TCP(cli, vip2, S, 0))
	if r.Verdict != nat.Forward || r.Conn == first {
		t.Fatalf("second connection refused: %+v", r)
	}
	if r := send(nattest.TCP(rip, cli, S|A, 0)); r.Verdict != nat.Forward || p.Src() != vip2.Addr() {
		t.Errorf("reply went to %v, want the newest connection's VIP %v", p.Src(), vip2.Addr())
	}
	if tb.Len() != 2 {
		t.Errorf("%d connections, want 2", tb.Len())
	}
}
