package nat_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// expire_nodest_conn=1: removing a server expires its connections and
// templates at once (ip_vs_expire_nodest_conn_flush).
func TestExpireNodestConnFlush(t *testing.T) {
	e := newEnv(t, nat.Config{ExpireNodestConn: true}, persistent(6, 80, 0, 0, 8080))
	c := e.syn(cli, vip).Conn
	d := c.Dest()
	e.syn(nattest.AP("10.0.0.10:2"), vip)
	other := e.syn(nattest.AP("10.0.0.11:1"), vip).Conn
	if other.Dest() == d {
		t.Fatal("rr did not alternate")
	}
	if err := e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(d.Addr, 8080)); err != nil {
		t.Fatal(err)
	}
	if e.tb.Len() != 2 || d.TotalConns() != 0 || d.PersistConns() != 0 {
		t.Errorf("after -d: %d entries, dest total %d persist %d", e.tb.Len(), d.TotalConns(), d.PersistConns())
	}
	// The other server's connection and template are untouched.
	if cc, _ := e.tb.Lookup(6, nattest.AP("10.0.0.11:1"), vip); cc != other {
		t.Error("other server's connection flushed")
	}
}

// A packet that still finds a connection of a removed server (the knob
// turned on after the removal): a TCP non-SYN expires it and goes to the
// local stack, a SYN or a UDP datagram is scheduled again.
func TestExpireNodestConnPacket(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	c := e.in(cli, S).Conn
	c2 := nattest.AP("10.0.0.10:40001")
	e.in(c2, S)
	d := c.Dest()
	e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(d.Addr, 8080))
	e.tb.SetExpireNodestConn(true)
	if r := e.in(cli, A); r.Verdict != nat.Pass {
		t.Errorf("ACK on a removed server's connection: %+v", r)
	}
	if cc, _ := e.tb.Lookup(6, cli, vip); cc != nil {
		t.Error("connection not expired")
	}
	if r := e.in(c2, S); r.Verdict != nat.Forward || r.Conn.Dest() == d {
		t.Errorf("SYN on a removed server's connection: %+v", r)
	}

	u := newEnv(t, nat.Config{}, twoServers("rr", 17))
	r := u.tb.Process(nattest.UDP(cli, vip, []byte("a")), &u.p, u.now)
	ud := r.Conn.Dest()
	u.tb.DelDest(nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(ud.Addr, 8080))
	if r := u.tb.Process(nattest.UDP(cli, vip, []byte("b")), &u.p, u.now); r.Verdict != nat.Drop || r.Reason != nat.DropDestUnavailable {
		t.Errorf("default: datagram to a removed server: %+v", r)
	}
	u.tb.SetExpireNodestConn(true)
	if r := u.tb.Process(nattest.UDP(cli, vip, []byte("c")), &u.p, u.now); r.Verdict != nat.Forward || r.Conn.Dest() == ud {
		t.Errorf("expire_nodest_conn: datagram not rescheduled: %+v", r)
	}
	if u.tb.Len() != 1 || ud.TotalConns() != 0 {
		t.Errorf("%d conns, removed dest still holds %d", u.tb.Len(), ud.TotalConns())
	}
}

// expire_nodest_conn=1 also reschedules a SYN that finds a connection to a
// server of weight 0, whatever its state; with the default it goes on.
func TestExpireNodestConnQuiesced(t *testing.T) {
	for _, on := range []bool{false, true} {
		e := newEnv(t, nat.Config{ExpireNodestConn: on}, twoServers("rr", 6))
		c := e.in(cli, S).Conn
		e.out(cli, S|A)
		e.in(cli, A)
		e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: c.DAddr(), Port: 8080, Weight: 0})
		if r := e.in(cli, A); r.Conn != c {
			t.Errorf("on=%v: established packet moved", on)
		}
		r := e.in(cli, S)
		if moved := r.Conn != c; moved != on {
			t.Errorf("expire_nodest_conn=%v: SYN on a quiesced server's connection moved=%v", on, moved)
		}
	}
}

// Adding a removed server back revives it from the trash, as the kernel
// does: its connections flow again and its counts and counters are kept.
// Once unused for 120 s it is gone and comes back new.
func TestDestTrash(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	c := e.in(cli, S).Conn
	e.out(cli, S|A)
	e.in(cli, A)
	d := c.Dest()
	dc := nat.DestConfig{Addr: d.Addr, Port: 8080, Weight: 1}
	e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(d.Addr, 8080))
	if r := e.in(cli, A); r.Reason != nat.DropDestUnavailable {
		t.Fatalf("%+v", r)
	}
	if d.Available() {
		t.Error("removed dest available")
	}
	nd, err := e.tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, dc)
	if err != nil {
		t.Fatal(err)
	}
	if nd != d || !d.Available() || d.ActiveConns() != 1 || d.Stats.Snapshot().Conns != 1 {
		t.Fatalf("not revived: same=%v active=%d", nd == d, d.ActiveConns())
	}
	if r := e.in(cli, A); r.Verdict != nat.Forward || r.Conn != c {
		t.Errorf("revived server's connection: %+v", r)
	}

	// Removed again, the service too, and re-made: revived into the new
	// service with its counters zeroed.
	e.tb.DelService(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80})
	twoServers("rr", 6)(e.tb)
	if d2 := dest(t, e.tb, d.Addr); d2 != d || d.Stats.Snapshot().Conns != 0 || d.Service() != e.tb.Service(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}) {
		t.Errorf("revived into a new service: same=%v stats %+v", d2 == d, d.Stats.Snapshot())
	}

	// Unused for the trash period: forgotten.
	e.tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(d.Addr, 8080))
	e.out(cli, R)
	e.run(11 * time.Second) // CLOSE expires
	if d.TotalConns() != 0 {
		t.Fatal(d.TotalConns())
	}
	e.run(121 * time.Second)
	nd, _ = e.tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, dc)
	if nd == d {
		t.Error("dest unused for 120 s still revived")
	}
}

// ExpireDest drops a server's connections and templates at once; the next
// datagram of the flow is scheduled again.
func TestExpireDest(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 17))
	b := nattest.UDP(cli, vip, []byte("x"))
	first := e.tb.Process(append([]byte(nil), b...), &e.p, e.now).Conn
	d := first.Dest()
	if n := e.tb.ExpireDest(d); n != 1 {
		t.Fatalf("expired %d connections, want 1", n)
	}
	if d.InactConns() != 0 || e.tb.Len() != 0 {
		t.Errorf("after ExpireDest: %d conns, dest inactive %d", e.tb.Len(), d.InactConns())
	}
	again := e.tb.Process(append([]byte(nil), b...), &e.p, e.now).Conn
	if again == first || again.Dest() == d {
		t.Errorf("flow stayed on the expired server's connection")
	}
}
