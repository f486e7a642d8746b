package health_test

import (
	"bytes"
	"encoding/json"
	. "github.com/tunvs/tunvs/health"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// The checks run on the test lab's manual clock, so the interval costs no
// time and the tests assert exact clock times. The timeouts are real (they
// bound a probe's network I/O): a check that passes must finish within
// tTimeout under the race detector on a loaded machine, and a UDP check of
// a stopped server waits tUDPTimeout out (no error comes back), so the UDP
// tests keep it short.
const (
	tInterval   = time.Second
	tTimeout    = time.Second
	tUDPTimeout = 250 * time.Millisecond
)

// A TCP check with inhibit: the server that stops listening gets weight 0
// within fall × interval, and its weight back within rise × interval of
// listening again; the events, counters and snapshot say so.
func TestInhibitAndRecover(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Inhibit,
		Default: &Check{Kind: KindTCP, Interval: tInterval, Timeout: tTimeout, Fall: 3, Rise: 2},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	rs1 := tl.rs[0]
	d1 := tl.dest(t, nat.ProtoTCP, rs1.addr)
	for range 3 {
		tl.tick(t, 2, tInterval)
	}
	if d1.Weight() != 1 {
		t.Fatalf("weight %d before the failure", d1.Weight())
	}

	rs1.stop()
	e, took := tl.waitEvent(t, 2, events, EventDown, rs1.addr, tInterval, 3)
	t.Logf("down after %v: %+v", took, e)
	if took != 3*tInterval {
		t.Errorf("down after %v, want fall × interval = %v", took, 3*tInterval)
	}
	if d1.Weight() != 0 || e.Weight != 0 || !strings.Contains(e.Reason, "refused") {
		t.Errorf("weight %d, event %+v", d1.Weight(), e)
	}
	if d2 := tl.dest(t, nat.ProtoTCP, tl.rs[1].addr); d2.Weight() != 1 {
		t.Errorf("the other server's weight is %d", d2.Weight())
	}
	st, _ := m.Server(nat.ProtoTCP, testVIP, rs1.addr)
	if st.Up || st.Downs != 1 || st.FailRun < 3 || st.LastError == "" || st.Weight != 1 {
		t.Errorf("snapshot %+v", st)
	}
	// tunvsadm -L shows what keepalived's inhibit shows in the kernel's
	// table: the server with weight 0.
	var list bytes.Buffer
	admin.List(&list, tl.NAT(), admin.FmtNumeric)
	if !strings.Contains(list.String(), "  -> 172.16.1.5:8080              Masq    0 ") {
		t.Errorf("tunvsadm -L:\n%s", list.String())
	}
	list.Reset()
	List(&list, m.Snapshot(), tl.clock.Now())
	t.Logf("health listing:\n%s", list.String())
	if !strings.Contains(list.String(), "-> 172.16.1.5:8080         tcp     DOWN   1 ") {
		t.Errorf("health listing:\n%s", list.String())
	}
	js, err := json.Marshal(m.Snapshot())
	if err != nil || !strings.Contains(string(js), `"OnFail":"inhibit"`) || !strings.Contains(string(js), `"Server":"172.16.1.5:8080"`) {
		t.Errorf("json %s %v", js, err)
	}

	rs1.start()
	e, took = tl.waitEvent(t, 2, events, EventUp, rs1.addr, tInterval, 2)
	t.Logf("up after %v: %+v", took, e)
	if took != 2*tInterval {
		t.Errorf("up after %v, want rise × interval = %v", took, 2*tInterval)
	}
	if d1.Weight() != 1 || e.Weight != 1 {
		t.Errorf("weight %d after recovery", d1.Weight())
	}
	if m.Stats.Downs.Load() != 1 || m.Stats.Ups.Load() != 1 || m.Stats.Checks.Load() == 0 || m.Stats.Failures.Load() < 3 {
		t.Errorf("counters: downs %d ups %d checks %d failures %d", m.Stats.Downs.Load(), m.Stats.Ups.Load(), m.Stats.Checks.Load(), m.Stats.Failures.Load())
	}
}

// An HTTP check with remove: a server answering 500 leaves the service and
// comes back (as a new dest, at the head of the list) when it answers 200.
// Its weight as tunvsadm -e last set it is the one restored.
func TestHTTPStatusRemove(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	rs1 := tl.rs[0]
	if err := tl.NAT().EditDest(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: lab.VIP, Port: testPort}, nat.DestConfig{Addr: rs1.addr.Addr(), Port: testPort, Weight: 3}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Remove,
		Default: &Check{Kind: KindHTTP, Path: "/health", Status: []StatusRange{{Lo: 200, Hi: 299}}, Interval: tInterval, Timeout: tTimeout, Fall: 2, Rise: 2},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	tl.settle(t, 2)
	rs1.status.Store(500)
	e, _ := tl.waitEvent(t, 2, events, EventDown, rs1.addr, tInterval, 2)
	if !strings.Contains(e.Reason, "status 500") {
		t.Errorf("reason %q", e.Reason)
	}
	if tl.dest(t, nat.ProtoTCP, rs1.addr) != nil {
		t.Fatal("the failed server is still in the service")
	}
	rs1.status.Store(200)
	tl.waitEvent(t, 2, events, EventUp, rs1.addr, tInterval, 2)
	d := tl.dest(t, nat.ProtoTCP, rs1.addr)
	if d == nil || d.Weight() != 3 {
		t.Fatalf("after recovery: %v", d)
	}
}

// When every server is down the service loses quorum: an event, the flag,
// and the sorry server in the pool, by its own forwarding method
// (keepalived's sorry_server_lvs_method); when one is back, the sorry
// server leaves.
func TestQuorumAndSorry(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	sorry := netip.MustParseAddrPort("172.16.1.9:8080")
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Inhibit, Sorry: sorry, Quorum: 1,
		SorryMethod: rules.Tunnel, SorryTun: rules.Encap{Type: rules.TunGRE},
		Default: &Check{Kind: KindTCP, Interval: tInterval, Timeout: tTimeout, Fall: 2, Rise: 1},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	tl.settle(t, 2)
	tl.rs[0].stop()
	tl.waitEvent(t, 2, events, EventDown, tl.rs[0].addr, tInterval, 2)
	if s := m.Snapshot()[0]; !s.QuorumUp || s.SorryActive || s.LiveWeight != 1 {
		t.Errorf("one server down: %+v", s)
	}
	tl.rs[1].stop()
	e, _ := tl.waitEvent(t, 2, events, EventQuorumLost, netip.AddrPort{}, tInterval, 2)
	if e.Weight != 0 {
		t.Errorf("event %+v", e)
	}
	s := m.Snapshot()[0]
	if s.QuorumUp || !s.SorryActive {
		t.Errorf("snapshot %+v", s)
	}
	if d := tl.dest(t, nat.ProtoTCP, sorry); d == nil || d.Weight() != 1 || d.Method() != rules.Tunnel {
		t.Fatalf("sorry server not in the pool, tunnelled: %v", d)
	}
	tl.rs[1].start()
	tl.waitEvent(t, 2, events, EventQuorumUp, netip.AddrPort{}, tInterval, 1)
	// The event comes before the sorry server is taken out, within the
	// same check's record, which the tick waited for.
	if d := tl.dest(t, nat.ProtoTCP, sorry); d != nil {
		t.Error("sorry server still in the pool")
	}
	if s := m.Snapshot()[0]; !s.QuorumUp || s.SorryActive || m.Stats.QuorumLost.Load() != 1 || m.Stats.QuorumUp.Load() != 1 {
		t.Errorf("snapshot %+v", s)
	}
}

// A dynamic misc check sets the weight from its exit status; alpha starts
// a server down; Restore puts the table back.
func TestMiscDynamicAlphaRestore(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	rs1, rs2 := tl.rs[0].addr, tl.rs[1].addr
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Inhibit,
		Servers: []ServerConfig{
			{Addr: rs1, Check: &Check{Kind: KindMisc, Command: "exit 6", Dynamic: true, Interval: time.Second, Timeout: time.Second, Fall: 3, Rise: 1}},
			{Addr: rs2, Check: &Check{Kind: KindTCP, Port: 9, StartDown: true, Interval: tInterval, Timeout: tTimeout}},
		},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	if d := tl.dest(t, nat.ProtoTCP, rs2); d.Weight() != 0 {
		t.Errorf("alpha server has weight %d at start", d.Weight())
	}
	// (Forking a shell can take longer than the timeout on a loaded
	// machine; a failed run would bring the weight back by an up event
	// instead, so the test watches the table, for up to three checks.)
	tl.settle(t, 2)
	for i := 0; tl.dest(t, nat.ProtoTCP, rs1).Weight() != 4; i++ {
		if i == 3 {
			t.Fatalf("dynamic weight %d after %d checks, want 4", tl.dest(t, nat.ProtoTCP, rs1).Weight(), i+1)
		}
		tl.tick(t, 2, time.Second)
	}
	m.Stop()
	m.Restore()
	if w := tl.dest(t, nat.ProtoTCP, rs2).Weight(); w != 1 {
		t.Errorf("restored weight %d", w)
	}
}

type fakeExpirer struct {
	mu    sync.Mutex
	dests []netip.AddrPort
}

func (f *fakeExpirer) ExpireDest(d *nat.Dest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dests = append(f.dests, d.AddrPort())
	return 7
}

// With expire, a failed server's connections are expired through the
// ConnExpirer, once per failure.
func TestExpireCalled(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	fe := &fakeExpirer{}
	o := tl.opts(t, events)
	o.Expirer = fe
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoUDP, VIP: testVIP, OnFail: Inhibit, Expire: true,
		Default: &Check{Kind: KindUDP, Payload: []byte("hc"), Expect: []byte("hc"), Interval: tInterval, Timeout: tUDPTimeout, Fall: 2, Rise: 1},
	}}}, o)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	tl.settle(t, 2)
	tl.rs[0].stop()
	tl.waitEvent(t, 2, events, EventDown, tl.rs[0].addr, tInterval, 2)
	fe.mu.Lock()
	got := append([]netip.AddrPort(nil), fe.dests...)
	fe.mu.Unlock()
	if len(got) != 1 || got[0] != tl.rs[0].addr || m.Stats.Expired.Load() != 7 {
		t.Errorf("expired %v, counter %d", got, m.Stats.Expired.Load())
	}
}

// Many start/stop cycles of every kind of check leave no goroutine, no
// check socket and no endpoint of the director's stack behind.
func TestNoLeaks(t *testing.T) {
	tl := newTestLab(t, 2)
	st := tl.Director.Host.Stack()
	rs1, rs2 := tl.rs[0].addr, tl.rs[1].addr
	// Let the lab settle, then take the baselines.
	time.Sleep(100 * time.Millisecond)
	baseG := runtime.NumGoroutine()
	baseEP := len(st.RegisteredEndpoints())
	fast := func(c Check) *Check {
		c.Interval, c.Timeout, c.Fall, c.Rise = tInterval, tTimeout, 1, 1
		return &c
	}
	cfg := Config{Services: []ServiceConfig{
		{Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Inhibit, Sorry: netip.MustParseAddrPort("172.16.1.9:8080"), Servers: []ServerConfig{
			{Addr: rs1, Check: fast(Check{Kind: KindHTTP})},
			{Addr: rs2, Check: fast(Check{Kind: KindTCP, Port: 9})}, // fails: refused
		}},
		{Proto: nat.ProtoUDP, VIP: testVIP, OnFail: Remove, Servers: []ServerConfig{
			{Addr: rs1, Check: fast(Check{Kind: KindUDP})},
			{Addr: rs2, Check: fast(Check{Kind: KindPing})},
		}},
	}}
	o := tl.opts(t, nil)
	maxEP := 0
	for i := range 40 {
		m, err := New(cfg, o)
		if err != nil {
			t.Fatal(err)
		}
		m.Start()
		// Stop during the first checks, after them, during the
		// second ones and after them.
		switch i % 4 {
		case 1:
			tl.settle(t, 4)
		case 2:
			tl.settle(t, 4)
			tl.clock.Advance(tInterval)
		case 3:
			tl.tick(t, 4, tInterval)
		}
		maxEP = max(maxEP, len(st.RegisteredEndpoints()))
		m.Stop()
		m.Restore()
	}
	waitfor.Until(t, 5*time.Second, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseG
	})
	if n := OpenConns(); n != 0 {
		t.Errorf("%d check sockets open", n)
	}
	waitfor.Until(t, 5*time.Second, "director endpoints back to the baseline", func() bool {
		return len(st.RegisteredEndpoints()) <= baseEP
	})
	t.Logf("goroutines %d (baseline %d), endpoints %d (baseline %d, %d seen while checking), TCP established %d",
		runtime.NumGoroutine(), baseG, len(st.RegisteredEndpoints()), baseEP, maxEP, st.Stats().TCP.CurrentEstablished.Value())
	for _, p := range []uint8{nat.ProtoTCP, nat.ProtoUDP} {
		for _, d := range tl.NAT().Service(nat.ServiceKey{Proto: p, Addr: lab.VIP, Port: testPort}).Dests() {
			if d.Weight() != 1 || d.AddrPort() == netip.MustParseAddrPort("172.16.1.9:8080") {
				t.Errorf("after Restore: %v weight %d", d.AddrPort(), d.Weight())
			}
		}
	}
}
