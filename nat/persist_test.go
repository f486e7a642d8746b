package nat_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// persistent is twoServers with -p (and -M as prefix bits) on rr, which
// would otherwise alternate.
func persistent(proto uint8, port uint16, timeout time.Duration, bits int, destPort uint16) func(tb *nat.Table) {
	return func(tb *nat.Table) {
		_, err := tb.AddService(nat.ServiceConfig{Proto: proto, Addr: vip.Addr(), Port: port, Scheduler: "rr",
			Persistent: true, PersistTimeout: timeout, PersistMaskBits: bits})
		if err != nil {
			panic(err)
		}
		for _, d := range []netip.Addr{rs1, rs2} {
			if _, err := tb.AddDest(nat.ServiceKey{Proto: proto, Addr: vip.Addr(), Port: port}, nat.DestConfig{Addr: d, Port: destPort, Weight: 1}); err != nil {
				panic(err)
			}
		}
	}
}

func templates(tb *nat.Table) []nat.ConnInfo {
	var ts []nat.ConnInfo
	tb.Conns(func(c *nat.Conn) {
		if i := c.Info(); i.Template {
			ts = append(ts, i)
		}
	})
	return ts
}

func (e *env) syn(c, v netip.AddrPort) nat.Result {
	e.t.Helper()
	r := e.tb.Process(nattest.TCP(c, v, S, 0), &e.p, e.now)
	if r.Verdict != nat.Forward {
		e.t.Fatalf("SYN %v -> %v: %+v", c, v, r)
	}
	return r
}

func (e *env) sweep() { e.tb.SweepAll(e.now) }

// run advances the clock a second at a time, sweeping as the daemon does.
func (e *env) run(d time.Duration) {
	for end := e.now + int64(d); e.now < end; {
		e.advance(time.Second)
		e.sweep()
	}
}

// Connections from one client go to one server; the template is listed as
// -Lnc lists it and counted in PersistConn, not in ActiveConn/InActConn.
func TestPersistSameDest(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 80, 0, 0, 8080))
	first := e.syn(cli, vip).Conn.Dest()
	for i := range 4 {
		c := netip.AddrPortFrom(cli.Addr(), uint16(41000+i))
		if d := e.syn(c, vip).Conn.Dest(); d != first {
			t.Fatalf("connection %d went to %v, not %v", i, d.Addr, first.Addr)
		}
	}
	// Another client gets a template of its own, from rr: the other
	// server.
	other := e.syn(nattest.AP("10.0.0.11:5000"), vip).Conn.Dest()
	if other == first {
		t.Error("second client's template went to the same server (rr should alternate)")
	}
	if first.PersistConns() != 1 || other.PersistConns() != 1 {
		t.Errorf("PersistConns %d/%d, want 1/1", first.PersistConns(), other.PersistConns())
	}
	if first.ActiveConns()+first.InactConns() != 5 {
		t.Errorf("first server counts %d/%d, want 5 connections (templates not counted)", first.ActiveConns(), first.InactConns())
	}
	if e.tb.Len() != 6+2 {
		t.Errorf("Len %d, want 6 connections + 2 templates", e.tb.Len())
	}
	ts := templates(e.tb)
	if len(ts) != 2 {
		t.Fatalf("%d templates listed", len(ts))
	}
	for _, ti := range ts {
		if ti.Client.Port() != 0 || ti.Virtual != vip || ti.Dest.Port() != 8080 || ti.State != nat.StateNone || ti.Proto != 6 {
			t.Errorf("template %+v", ti)
		}
		if ti.State.String() != "NONE" {
			t.Errorf("template state %q", ti.State)
		}
		if want := e.now + int64(nat.DefaultPersistTimeout); ti.Expires.UnixNano() != want {
			t.Errorf("template expires %v, want 300 s from now", ti.Expires)
		}
	}
}

// -M 255.255.255.0: one template per /24.
func TestPersistNetmask(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 80, 0, 24, 8080))
	a := e.syn(nattest.AP("10.0.0.10:1000"), vip).Conn.Dest()
	if b := e.syn(nattest.AP("10.0.0.99:1000"), vip).Conn.Dest(); b != a {
		t.Error("same /24 went to another server")
	}
	if c := e.syn(nattest.AP("10.0.1.10:1000"), vip).Conn.Dest(); c == a {
		t.Error("another /24 shared the template")
	}
	var nets []netip.Addr
	for _, ti := range templates(e.tb) {
		nets = append(nets, ti.Client.Addr())
	}
	if len(nets) != 2 || !(nets[0] == netip.MustParseAddr("10.0.0.0") || nets[1] == netip.MustParseAddr("10.0.0.0")) {
		t.Errorf("template clients %v, want the masked networks", nets)
	}
	if _, err := e.tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 81, Persistent: true, PersistMaskBits: 33}); err == nil {
		t.Error("a /33 netmask accepted for IPv4")
	}
}

// The template outlives its connections by the persistence timeout from its
// last use; while it still controls a connection its timer is put off 60 s
// at a time (ip_vs_conn_expire), and a new connection refreshes it.
func TestPersistTemplateExpiry(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(17, 80, 100*time.Second, 0, 8080))
	udp := func(c netip.AddrPort) nat.Result {
		t.Helper()
		r := e.tb.Process(nattest.UDP(c, vip, []byte("q")), &e.p, e.now)
		if r.Verdict != nat.Forward {
			t.Fatalf("%+v", r)
		}
		return r
	}
	d := udp(cli).Conn.Dest()
	// The UDP connection times out after 300 s; the template's 100 s
	// come first, but it still controls the connection.
	e.run(101 * time.Second)
	ts := templates(e.tb)
	if len(ts) != 1 || d.PersistConns() != 1 {
		t.Fatal("template expired while it controlled a connection")
	}
	if want := e.now + int64(59*time.Second); ts[0].Expires.UnixNano() != want {
		t.Errorf("template put off to %v, want 60 s after 100 s", ts[0].Expires.Sub(time.Unix(0, e.now)))
	}
	// The connection expires 300 s after its packet; the template, put
	// off at 160, 220 and 280 s, goes at 340 s: at its next 60 s check,
	// not 100 s after the connection.
	e.run(199 * time.Second) // t = 300 s
	if e.tb.Len() != 1 {
		t.Fatalf("%d entries, want the template alone", e.tb.Len())
	}
	e.run(39 * time.Second)
	if e.tb.Len() != 1 {
		t.Fatal("template went before its 60 s check")
	}
	e.run(time.Second)
	if e.tb.Len() != 0 || d.PersistConns() != 0 {
		t.Fatalf("template did not expire: %d entries, PersistConns %d", e.tb.Len(), d.PersistConns())
	}

	// Short connections: the template lives its timeout from the last
	// new connection, not from the last packet.
	e.tb.SetTimeouts(0, 0, 10*time.Second)
	d = udp(cli).Conn.Dest()
	e.advance(50 * time.Second)
	e.sweep() // the connection is gone, the template stays
	if e.tb.Len() != 1 || len(templates(e.tb)) != 1 {
		t.Fatalf("%d entries after the connection ended", e.tb.Len())
	}
	if got := udp(nattest.AP("10.0.0.10:999")).Conn.Dest(); got != d {
		t.Error("new connection within the timeout went elsewhere")
	}
	e.advance(99 * time.Second) // 99 s after the refresh
	e.sweep()
	if len(templates(e.tb)) != 1 {
		t.Fatal("template expired before its timeout after its last use")
	}
	e.advance(2 * time.Second)
	e.sweep()
	if e.tb.Len() != 0 || d.PersistConns() != 0 {
		t.Errorf("template outlived its timeout: %d entries", e.tb.Len())
	}
}

// A persistent port-zero service: every port of the VIP, one template
// with virtual and real port 0, connections to different ports from one
// client on one server, each to the port the client asked for.
func TestPersistPortZero(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 0, 0, 0, 0))
	r := e.syn(cli, nattest.AP("172.16.1.100:443"))
	if e.p.DstPort != 443 {
		t.Errorf("dest port %d, want 443", e.p.DstPort)
	}
	d := r.Conn.Dest()
	for i, port := range []uint16{80, 22, 8443} {
		c := netip.AddrPortFrom(cli.Addr(), uint16(42000+i))
		r := e.syn(c, netip.AddrPortFrom(vip.Addr(), port))
		if r.Conn.Dest() != d || e.p.DstPort != port {
			t.Errorf("port %d: went to %v:%d", port, r.Conn.DAddr(), e.p.DstPort)
		}
	}
	ts := templates(e.tb)
	if len(ts) != 1 || ts[0].Virtual.Port() != 0 || ts[0].Dest.Port() != 0 || ts[0].Client != netip.AddrPortFrom(cli.Addr(), 0) {
		t.Errorf("templates %+v", ts)
	}
	if d.PersistConns() != 1 || d.ActiveConns() != 4 || d.InactConns() != 0 {
		t.Errorf("counts: persist %d active %d inactive %d", d.PersistConns(), d.ActiveConns(), d.InactConns())
	}

	// With a real port set, ip_vs_sched_persist still sends a port-zero
	// service's connections to the client's port (dport == svc->port
	// fails).
	e2 := newEnv(t, nat.Config{}, persistent(6, 0, 0, 0, 8080))
	e2.syn(cli, vip)
	if e2.p.DstPort != 80 {
		t.Errorf("port-zero service with real port 8080 sent to %d, want the client's 80", e2.p.DstPort)
	}

	// Not persistent, a port-zero service schedules nothing: the client
	// is told "port unreachable" (ip_vs_schedule, ip_vs_leave).
	e3 := newEnv(t, nat.Config{}, func(tb *nat.Table) {
		tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 0, Scheduler: "rr"})
		tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 0}, nat.DestConfig{Addr: rs1, Weight: 1})
	})
	if r := e3.in(cli, S); r.Verdict != nat.Drop || r.Reason != nat.DropNoDest || !r.Unreachable {
		t.Errorf("non-persistent port-zero service: %+v", r)
	}
}

// FTP (port 21): templates with ports 0, so a persistent FTP service's
// other ports share the control connection's template.
func TestPersistFTPTemplate(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 21, 0, 0, 21))
	e.syn(cli, nattest.AP("172.16.1.100:21"))
	ts := templates(e.tb)
	if len(ts) != 1 || ts[0].Virtual.Port() != 0 || ts[0].Dest.Port() != 0 {
		t.Errorf("FTP template %+v, want ports 0", ts)
	}
}

// A quiesced server keeps its clients with templates while
// expire_quiescent_template is 0 (the default); with it on, the template is
// invalidated (listed with ports 65535 until it expires) and the client
// scheduled afresh.
func TestPersistQuiesced(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 80, 0, 0, 8080))
	d := e.syn(cli, vip).Conn.Dest()
	if err := e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: d.Addr, Port: 8080, Weight: 0}); err != nil {
		t.Fatal(err)
	}
	if got := e.syn(nattest.AP("10.0.0.10:2"), vip).Conn.Dest(); got != d {
		t.Error("default: template did not keep the client on the quiesced server")
	}
	if got := e.syn(nattest.AP("10.0.0.12:2"), vip).Conn.Dest(); got == d {
		t.Error("a new client went to the quiesced server")
	}

	e.tb.SetExpireQuiescentTemplate(true)
	got := e.syn(nattest.AP("10.0.0.10:3"), vip).Conn.Dest()
	if got == d {
		t.Fatal("expire_quiescent_template: still sent to the quiesced server")
	}
	var stale, fresh int
	for _, ti := range templates(e.tb) {
		if ti.Client.Addr() != cli.Addr() {
			continue
		}
		if ti.Virtual.Port() == 65535 && ti.Dest.Port() == 65535 && ti.Dest.Addr() == d.Addr {
			stale++
		} else if ti.Dest.Addr() == got.Addr {
			fresh++
		}
	}
	if stale != 1 || fresh != 1 {
		t.Errorf("templates for the client: %d invalidated, %d new; want 1, 1", stale, fresh)
	}
	if d.PersistConns() != 1 {
		t.Errorf("invalidated template not counted until it expires: %d", d.PersistConns())
	}
	// The invalidated template goes when its timer runs out and nothing
	// controls it any more: its two connections are SYN_RECV (60 s).
	e.advance(301 * time.Second)
	e.sweep()
	if d.PersistConns() != 0 {
		t.Errorf("invalidated template still there: %d", d.PersistConns())
	}
}

// A removed server's template is invalid: the client goes elsewhere.
func TestPersistRemovedDest(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 80, 0, 0, 8080))
	d := e.syn(cli, vip).Conn.Dest()
	if err := e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(d.Addr, 8080)); err != nil {
		t.Fatal(err)
	}
	if got := e.syn(nattest.AP("10.0.0.10:2"), vip).Conn.Dest(); got == d {
		t.Error("template to a removed server used")
	}
}

// is_new_conn_expected: a SYN on a TIME_WAIT connection controlled by a
// template does not reschedule; it goes on along the old connection.
func TestPersistNoReuseOfControlled(t *testing.T) {
	e := newEnv(t, nat.Config{}, persistent(6, 80, 0, 0, 8080))
	a := e.syn(cli, vip).Conn
	e.out(cli, S|A)
	e.in(cli, A)
	e.in(cli, F|A)
	e.out(cli, F|A)
	if a.State() != nat.StateTimeWait {
		t.Fatalf("want TIME_WAIT, got %v", a.State())
	}
	if ts := templates(e.tb); len(ts) != 1 || ts[0].State != nat.StateAssured || ts[0].State.String() != "ASSURED" {
		t.Errorf("template not assured after ESTABLISHED: %+v", ts)
	}
	b := e.syn(cli, vip).Conn
	if b != a || a.State() != nat.StateSynRecv {
		t.Errorf("controlled connection was replaced (or state %v)", a.State())
	}
	if a.Controller() == nil || a.Controller().Controlled() != 1 {
		t.Error("controller not recorded")
	}

	// Not persistent, the same SYN replaces the connection.
	e2 := newEnv(t, nat.Config{}, twoServers("rr", 6))
	a = e2.in(cli, S).Conn
	e2.out(cli, S|A)
	e2.in(cli, A)
	e2.in(cli, F|A)
	e2.out(cli, F|A)
	if b := e2.in(cli, S).Conn; b == a {
		t.Error("uncontrolled TIME_WAIT connection not reused")
	}
	// conn_reuse_mode=0: no reuse.
	e3 := newEnv(t, nat.Config{ConnReuseMode: nat.ConnReuseOff}, twoServers("rr", 6))
	a = e3.in(cli, S).Conn
	e3.out(cli, R)
	if a.State() != nat.StateClose {
		t.Fatal(a.State())
	}
	if b := e3.in(cli, S).Conn; b != a {
		t.Error("conn_reuse_mode=0 rescheduled")
	}
	if e3.tb.ConnReuseMode() != 0 || e2.tb.ConnReuseMode() != 1 {
		t.Error("ConnReuseMode getter")
	}
}

// IPv6: -M as a prefix length; a UDP template is assured by a reply.
func TestPersistIPv6(t *testing.T) {
	tb := nat.New(nat.Config{})
	tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip6.Addr(), Port: 53, Scheduler: "rr", Persistent: true, PersistMaskBits: 64})
	for _, a := range []string{"fd00::5", "fd00::6"} {
		tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip6.Addr(), Port: 53}, nat.DestConfig{Addr: netip.MustParseAddr(a), Weight: 1})
	}
	var p nat.Packet
	v := netip.AddrPortFrom(vip6.Addr(), 53)
	r := tb.Process(nattest.UDP(nattest.AP("[fd01::1:10]:1000"), v, []byte("q")), &p, 0)
	d := r.Conn.Dest()
	if r2 := tb.Process(nattest.UDP(nattest.AP("[fd01::2:20]:1000"), v, []byte("q")), &p, 0); r2.Conn.Dest() != d {
		t.Error("same /64 went elsewhere")
	}
	if r3 := tb.Process(nattest.UDP(nattest.AP("[fd01:0:0:1::10]:1000"), v, []byte("q")), &p, 0); r3.Conn.Dest() == d {
		t.Error("another /64 shared the template")
	}
	tpl := r.Conn.Controller()
	if tpl == nil || tpl.Info().Client.Addr() != netip.MustParseAddr("fd01::") || tpl.State() != nat.StateNone {
		t.Fatalf("template %+v", tpl)
	}
	tb.Process(nattest.UDP(netip.AddrPortFrom(d.Addr, 53), nattest.AP("[fd01::1:10]:1000"), []byte("a")), &p, 0)
	if tpl.State() != nat.StateAssured {
		t.Error("UDP reply did not assure the template")
	}
}
