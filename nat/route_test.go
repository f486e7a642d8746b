package nat_test

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// routeEnv is a service whose two real servers are direct routing (-g):
// their port is the service's, as ipvsadm makes it.
func routeEnv(t *testing.T) *env {
	return newEnv(t, nat.Config{}, func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr"}); err != nil {
			t.Fatal(err)
		}
		for _, d := range []nat.DestConfig{{Addr: rs1, Port: vip.Port(), Weight: 1, Method: rules.Route}, {Addr: rs2, Port: vip.Port(), Weight: 1, Method: rules.Route}} {
			if _, err := tb.AddDest(svcKey(), d); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// Direct routing: the client's packets are forwarded unchanged (the host
// rewrites only the Ethernet destination); the connection is tracked by
// them alone, in the kernel's INPUT-ONLY state table, where a client's
// FIN on ESTABLISHED goes to FIN_WAIT (INPUT would say CLOSE_WAIT); the
// real server's first packet, if one ever passes, moves it to the
// ordinary tables.
func TestRouteForwardsUnchanged(t *testing.T) {
	e := routeEnv(t)
	b := nattest.TCP(cli, vip, S, 0)
	orig := append([]byte(nil), b...)
	r := e.tb.Process(b, &e.p, e.now)
	if r.Verdict != nat.Forward || r.Dir != nat.DirIn || !r.Conn.Routed() {
		t.Fatalf("SYN: %+v", r)
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("a direct-routing packet was rewritten")
	}
	c := r.Conn
	if c.State() != nat.StateSynRecv || c.DAddr() != rs1 && c.DAddr() != rs2 {
		t.Fatalf("after SYN: %v to %v", c.State(), c.DAddr())
	}
	for _, s := range []struct {
		flags uint8
		want  nat.State
	}{{A, nat.StateEstablished}, {A, nat.StateEstablished}, {F | A, nat.StateFinWait}, {A, nat.StateFinWait}} {
		b := nattest.TCP(cli, vip, s.flags, 10)
		orig := append([]byte(nil), b...)
		if r := e.tb.Process(b, &e.p, e.now); r.Verdict != nat.Forward || r.Conn != c || !bytes.Equal(b, orig) {
			t.Fatalf("flags %#x: %+v, rewritten %v", s.flags, r, !bytes.Equal(b, orig))
		}
		if c.State() != s.want {
			t.Fatalf("flags %#x: state %v, want %v (INPUT-ONLY table)", s.flags, c.State(), s.want)
		}
	}
	d := dest(t, e.tb, c.DAddr())
	if d.Method() != rules.Route || d.Stats.Snapshot().InPkts != 5 {
		t.Errorf("dest method %v, %d packets in", d.Method(), d.Stats.Snapshot().InPkts)
	}
	// A second client goes to the other server: the scheduler is as ever.
	r2 := e.tb.Process(nattest.TCP(nattest.AP("10.0.0.11:40000"), vip, S, 0), &e.p, e.now)
	if r2.Verdict != nat.Forward || r2.Conn.DAddr() == c.DAddr() {
		t.Errorf("second SYN: %+v to %v, the first went to %v", r2, r2.Conn.DAddr(), c.DAddr())
	}
}

// The direct-routing path allocates nothing for an established connection.
func TestRouteAllocatesNothing(t *testing.T) {
	e := routeEnv(t)
	e.tb.Process(nattest.TCP(cli, vip, S, 0), &e.p, e.now)
	b := nattest.TCP(cli, vip, A, 100)
	var p nat.Packet
	if n := testing.AllocsPerRun(1000, func() {
		if r := e.tb.Process(b, &p, e.now); r.Verdict != nat.Forward {
			t.Fatalf("%+v", r)
		}
	}); n != 0 {
		t.Errorf("%v allocations per direct-routing packet", n)
	}
}

// The host's DirectRoute refuses a -g real server it cannot reach on an
// Ethernet segment: the change is refused with its reason and the table
// is as it was; -m for the same address is taken.
func TestRouteRefusedByHost(t *testing.T) {
	tb := nat.New(nat.Config{DirectRoute: func(dst netip.Addr) error {
		if dst == rs2 {
			return errors.New("it is reached by a TUN link")
		}
		return nil
	}})
	k := rules.Service{ServiceKey: svcKey(), Scheduler: "rr"}
	ok := rules.Diff{{Kind: rules.AddService, Service: k},
		{Kind: rules.AddServer, Service: k, Server: rules.Server{Addr: netip.AddrPortFrom(rs1, 80), Method: rules.Route, Weight: 1}}}
	if err := tb.Apply(ok); err != nil {
		t.Fatal(err)
	}
	before := tb.Rules()
	err := tb.Apply(rules.Diff{{Kind: rules.AddServer, Service: k, Server: rules.Server{Addr: netip.AddrPortFrom(rs2, 80), Method: rules.Route, Weight: 1}}})
	if err == nil || !strings.Contains(err.Error(), "TUN link") {
		t.Fatalf("-g behind a TUN: %v", err)
	}
	if !reflect.DeepEqual(tb.Rules(), before) {
		t.Error("a refused change changed the table")
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.AddServer, Service: k, Server: rules.Server{Addr: netip.AddrPortFrom(rs2, 80), Weight: 1}}}); err != nil {
		t.Errorf("-m: %v", err)
	}
}
