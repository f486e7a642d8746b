package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// state is everything a refused change must leave as it was: the
// configuration, every counter, every connection.
func state(tb *nat.Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%+v\n", tb.Rules())
	for _, s := range tb.Services() {
		fmt.Fprintf(&b, "%v %+v %v\n", s.AddrPort(), s.Stats.Snapshot(), s.SchedulerName())
		for _, d := range s.Dests() {
			fmt.Fprintf(&b, "  %v w%d a%d i%d p%d %+v %v\n", d.AddrPort(), d.Weight(), d.ActiveConns(), d.InactConns(),
				d.PersistConns(), d.Stats.Snapshot(), d.Available())
		}
	}
	var conns []string
	tb.Conns(func(c *nat.Conn) { conns = append(conns, fmt.Sprintf("%+v", c.Info())) })
	fmt.Fprintf(&b, "%d %v\n", tb.Len(), conns)
	return b.String()
}

// A diff refused at its last change leaves the table exactly as it was,
// though its earlier changes were all acceptable: Apply checks the whole
// before it touches anything.
func TestApplyRefusedLeavesTable(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	for i := range 4 {
		e.in(netip.AddrPortFrom(cli.Addr(), uint16(40000+i)), S)
	}
	before := state(e.tb)
	k := nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}
	k2 := nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 53}
	bad := []rules.Change{
		{Kind: rules.AddService, Service: rules.Service{ServiceKey: k}},
		{Kind: rules.DelServer, Service: rules.Service{ServiceKey: k}, Server: rules.Server{Addr: netip.AddrPortFrom(rs1, 1)}},
		{Kind: rules.AddService, Service: rules.Service{ServiceKey: k2, Scheduler: "nope"}},
		{Kind: rules.SetSysctl, Sysctl: "conn_reuse_mode", Value: 9},
		{Kind: rules.AddServer, Service: rules.Service{ServiceKey: k}, Server: rules.Server{Addr: netip.AddrPortFrom(rs1, 8080)}},
	}
	for _, b := range bad {
		d := rules.Diff{
			{Kind: rules.DelServer, Service: rules.Service{ServiceKey: k}, Server: rules.Server{Addr: netip.AddrPortFrom(rs2, 8080)}},
			{Kind: rules.EditService, Service: rules.Service{ServiceKey: k, Scheduler: "wlc"}},
			{Kind: rules.AddService, Service: rules.Service{ServiceKey: k2}},
			{Kind: rules.SetTimeouts, Timeouts: rules.Timeouts{rules.TimeoutUDP: time.Second}},
			{Kind: rules.SetSysctl, Sysctl: "expire_nodest_conn", Value: 1},
			{Kind: rules.Zero},
			b,
		}
		err := e.tb.Apply(d)
		var ce *rules.ChangeError
		if !errors.As(err, &ce) || ce.Index != len(d)-1 {
			t.Fatalf("%v: %v, want the last change refused", b.Kind, err)
		}
		if after := state(e.tb); after != before {
			t.Fatalf("refused %v changed the table:\n%s\nwas\n%s", b.Kind, after, before)
		}
	}
	// The same diff without the bad change applies whole.
	if err := e.tb.Apply(rules.Diff{
		{Kind: rules.DelServer, Service: rules.Service{ServiceKey: k}, Server: rules.Server{Addr: netip.AddrPortFrom(rs2, 8080)}},
		{Kind: rules.AddService, Service: rules.Service{ServiceKey: k2}},
		{Kind: rules.SetSysctl, Sysctl: "expire_nodest_conn", Value: 1},
	}); err != nil {
		t.Fatal(err)
	}
	if len(e.tb.Services()) != 2 || len(e.tb.Service(k).Dests()) != 1 || !e.tb.ExpireNodestConn() {
		t.Fatalf("not applied: %s", state(e.tb))
	}
}

// The table's rules, diffed against what a caller wants and applied, give
// what the caller wants; the diff of the result is empty.
func TestApplyDiff(t *testing.T) {
	tb := nat.New(nat.Config{})
	want := rules.Rules{
		Services: []rules.Service{{ServiceKey: nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, Scheduler: "rr",
			Servers: []rules.Server{{Addr: netip.AddrPortFrom(rs1, 8080), Weight: 1}, {Addr: netip.AddrPortFrom(rs2, 8080), Weight: 3, UThreshold: 9}}}},
		Sysctls:  map[string]int{"conn_reuse_mode": 0},
		Timeouts: rules.Timeouts{rules.TimeoutTCP: time.Hour},
	}
	if err := tb.Apply(tb.Rules().Diff(want)); err != nil {
		t.Fatal(err)
	}
	got := tb.Rules()
	if !reflect.DeepEqual(got.Services, want.Services) || got.Sysctls["conn_reuse_mode"] != 0 ||
		tb.Timeouts()[nat.StateEstablished] != time.Hour {
		t.Fatalf("got %+v", got)
	}
	if d := got.Diff(want); len(d) != 0 {
		t.Fatalf("diff after apply: %+v", d)
	}
	// The table's list is newest first, as IPVS's.
	if ds := tb.Services()[0].Dests(); ds[0].Addr != rs2 {
		t.Fatalf("list order %v", ds)
	}
}

// Every knob of rules.SysctlTable is in the table, with its default.
func TestSysctlTable(t *testing.T) {
	tb := nat.New(nat.Config{})
	for _, s := range rules.SysctlTable {
		v, ok := tb.Sysctl(s.Name)
		if !ok {
			t.Errorf("%s: nat has no setter", s.Name)
			continue
		}
		if v != s.Default {
			t.Errorf("%s = %d on a new table, want the default %d", s.Name, v, s.Default)
		}
		for _, x := range []int{s.Min, s.Max} {
			if err := tb.Apply(rules.Diff{{Kind: rules.SetSysctl, Sysctl: s.Name, Value: x}}); err != nil {
				t.Fatal(err)
			}
			if v, _ := tb.Sysctl(s.Name); v != x {
				t.Errorf("%s set to %d reads %d", s.Name, x, v)
			}
		}
	}
	if got := len(rules.StateNames); got != len(nat.DefaultTimeouts) {
		t.Fatalf("%d state names for %d states", got, len(nat.DefaultTimeouts))
	}
	for i, n := range rules.StateNames {
		if nat.State(i).String() != n {
			t.Errorf("state %d is %s in nat, %s in rules", i, nat.State(i), n)
		}
	}
}

// Packets flow while the configuration changes (run with -race).
func TestApplyWhileForwarding(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	k := nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			w := i % 3
			_ = e.tb.Apply(rules.Diff{{Kind: rules.EditServer, Service: rules.Service{ServiceKey: k},
				Server: rules.Server{Addr: netip.AddrPortFrom(rs1, 8080), Weight: w}}})
		}
	}()
	var p nat.Packet
	for i := range 200 {
		e.tb.Process(nattest.TCP(netip.AddrPortFrom(cli.Addr(), uint16(1000+i)), vip, S, 0), &p, e.now)
	}
	<-done
}
