package nat_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/sched"
)

func thresholds(u1, l1 int) func(tb *nat.Table) {
	return func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: "rr"}); err != nil {
			panic(err)
		}
		// rs1 (with thresholds) is added last: rr tries it first.
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs2, Port: 8080, Weight: 1}); err != nil {
			panic(err)
		}
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, UThreshold: u1, LThreshold: l1}); err != nil {
			panic(err)
		}
	}
}

// close ends a connection with a RST from the server and lets CLOSE (10 s)
// expire.
func (e *env) close(c netip.AddrPort) {
	e.t.Helper()
	e.out(c, R)
	e.advance(11 * time.Second)
	e.sweep()
}

func TestUpperThreshold(t *testing.T) {
	e := newEnv(t, nat.Config{}, thresholds(2, 0))
	d := dest(t, e.tb, rs1)
	var to []netip.Addr
	for i := range 6 {
		to = append(to, e.in(netip.AddrPortFrom(cli.Addr(), uint16(1000+i)), S).Conn.DAddr())
	}
	// rs1, rs2, rs1 (now at its -x 2: overloaded), rs2, rs2, rs2.
	want := []netip.Addr{rs1, rs2, rs1, rs2, rs2, rs2}
	for i := range want {
		if to[i] != want[i] {
			t.Fatalf("connections went to %v, want %v", to, want)
		}
	}
	if !d.Overloaded() || d.TotalConns() != 2 {
		t.Errorf("overloaded %v with %d connections", d.Overloaded(), d.TotalConns())
	}
	// -x 2 without -y: the lower mark is 2 - 2>>2 = 2; one connection
	// ending (2 -> 1) clears it.
	e.close(netip.AddrPortFrom(cli.Addr(), 1000))
	if d.Overloaded() {
		t.Error("still overloaded below 3/4 of -x")
	}
}

// Without -y the flag clears below 3/4 of -x (l_threshold_val); with -y
// below -y. EditDest re-evaluates when a threshold changes.
func TestOverloadClears(t *testing.T) {
	for _, c := range []struct {
		u, l      int
		clearedAt int // connections left when the flag clears
	}{
		{4, 0, 2}, // 4 - 4>>2 = 3: clears going from 3 to 2
		{8, 0, 5}, // 8 - 2 = 6
		{4, 1, 0}, // -y 1: clears going from 1 to 0
		{4, 4, 3},
	} {
		e := newEnv(t, nat.Config{}, func(tb *nat.Table) {
			tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: "rr"})
			tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, UThreshold: c.u, LThreshold: c.l})
		})
		d := dest(t, e.tb, rs1)
		for i := range c.u {
			if d.Overloaded() {
				t.Fatalf("-x %d: overloaded at %d", c.u, i)
			}
			cc := netip.AddrPortFrom(cli.Addr(), uint16(1000+i))
			e.in(cc, S)
			e.out(cc, S|A)
			e.in(cc, A) // ESTABLISHED: outlives the closes below
		}
		if !d.Overloaded() {
			t.Fatalf("-x %d: not overloaded at %d", c.u, c.u)
		}
		if r := e.in(nattest.AP("10.0.0.99:1"), S); r.Reason != nat.DropNoDest {
			t.Errorf("-x %d: the only server overloaded, got %+v", c.u, r)
		}
		for i := range c.u {
			e.close(netip.AddrPortFrom(cli.Addr(), uint16(1000+i)))
			left := c.u - 1 - i
			if want := left > c.clearedAt; d.Overloaded() != want {
				t.Fatalf("-x %d -y %d: overloaded=%v with %d connections", c.u, c.l, d.Overloaded(), left)
			}
		}
	}
}

func TestEditThresholds(t *testing.T) {
	e := newEnv(t, nat.Config{}, thresholds(0, 0))
	d := dest(t, e.tb, rs1)
	for i := range 6 {
		e.in(netip.AddrPortFrom(cli.Addr(), uint16(1000+i)), S)
	}
	if d.TotalConns() != 3 || d.Overloaded() {
		t.Fatalf("%d conns, overloaded %v", d.TotalConns(), d.Overloaded())
	}
	edit := func(u, l int) error {
		return e.tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, UThreshold: u, LThreshold: l})
	}
	steps := []struct {
		u, l int
		want bool
	}{
		{3, 0, true},   // conns >= u: set
		{4, 0, true},   // l_val 3 <= conns < u: left as it is
		{10, 0, false}, // conns < l_val 8: cleared
		{4, 0, false},  // left as it is (clear)
		{4, 2, false},
		{2, 1, true},
		{0, 0, false}, // no threshold
	}
	for _, s := range steps {
		if err := edit(s.u, s.l); err != nil {
			t.Fatal(err)
		}
		if d.Overloaded() != s.want || d.UThreshold() != s.u || d.LThreshold() != s.l {
			t.Errorf("-x %d -y %d: overloaded %v, want %v", s.u, s.l, d.Overloaded(), s.want)
		}
	}
	if err := edit(2, 3); !errors.Is(err, nat.ErrInvalid) {
		t.Errorf("-y above -x: %v", err)
	}
	if err := edit(-1, 0); !errors.Is(err, nat.ErrInvalid) {
		t.Errorf("negative -x: %v", err)
	}
}

// -b flags reach the scheduler; EditService changing only them takes.
func TestSchedFlags(t *testing.T) {
	tb := nat.New(nat.Config{})
	name := "rr"
	for _, n := range sched.Names() {
		if n == "sh" {
			name = n
		}
	}
	c := nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: name, SchedFlags: sched.FlagSched1}
	s, err := tb.AddService(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Config().SchedFlags != sched.FlagSched1 {
		t.Error("flags not kept")
	}
	c.SchedFlags = sched.FlagSched1 | sched.FlagSched2
	if err := tb.EditService(c); err != nil {
		t.Fatal(err)
	}
	if got := s.Config(); got.SchedFlags != c.SchedFlags || got.Scheduler != name {
		t.Errorf("after -E: %+v", got)
	}
}
