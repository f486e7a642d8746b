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
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/nat"
)

const (
	tInterval = 100 * time.Millisecond
	tTimeout  = 80 * time.Millisecond
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
	time.Sleep(3 * tInterval)
	if d1.Weight() != 1 {
		t.Fatalf("weight %d before the failure", d1.Weight())
	}

	stopped := time.Now()
	rs1.stop()
	e := waitEvent(t, events, EventDown, rs1.addr, 3*tInterval+time.Second)
	took := time.Since(stopped)
	t.Logf("down after %v: %+v", took, e)
	if took > 4*tInterval+200*time.Millisecond {
		t.Errorf("down after %v, want about fall × interval = %v", took, 3*tInterval)
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
	List(&list, m.Snapshot(), time.Now())
	t.Logf("health listing:\n%s", list.String())
	if !strings.Contains(list.String(), "-> 172.16.1.5:8080         tcp     DOWN   1 ") {
		t.Errorf("health listing:\n%s", list.String())
	}
	js, err := json.Marshal(m.Snapshot())
	if err != nil || !strings.Contains(string(js), `"OnFail":"inhibit"`) || !strings.Contains(string(js), `"Server":"172.16.1.5:8080"`) {
		t.Errorf("json %s %v", js, err)
	}

	restarted := time.Now()
	rs1.start()
	e = waitEvent(t, events, EventUp, rs1.addr, 2*tInterval+time.Second)
	took = time.Since(restarted)
	t.Logf("up after %v: %+v", took, e)
	if took > 3*tInterval+200*time.Millisecond {
		t.Errorf("up after %v, want about rise × interval = %v", took, 2*tInterval)
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
	rs1.status.Store(500)
	e := waitEvent(t, events, EventDown, rs1.addr, 2*tInterval+time.Second)
	if !strings.Contains(e.Reason, "status 500") {
		t.Errorf("reason %q", e.Reason)
	}
	if tl.dest(t, nat.ProtoTCP, rs1.addr) != nil {
		t.Fatal("the failed server is still in the service")
	}
	rs1.status.Store(200)
	waitEvent(t, events, EventUp, rs1.addr, 2*tInterval+time.Second)
	d := tl.dest(t, nat.ProtoTCP, rs1.addr)
	if d == nil || d.Weight() != 3 {
		t.Fatalf("after recovery: %v", d)
	}
}

// When every server is down the service loses quorum: an event, the flag,
// and the sorry server in the pool; when one is back, the sorry server
// leaves.
func TestQuorumAndSorry(t *testing.T) {
	tl := newTestLab(t, 2)
	events := make(chan Event, 64)
	sorry := netip.MustParseAddrPort("172.16.1.9:8080")
	m, err := New(Config{Services: []ServiceConfig{{
		Proto: nat.ProtoTCP, VIP: testVIP, OnFail: Inhibit, Sorry: sorry, Quorum: 1,
		Default: &Check{Kind: KindTCP, Interval: tInterval, Timeout: tTimeout, Fall: 2, Rise: 1},
	}}}, tl.opts(t, events))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	tl.rs[0].stop()
	waitEvent(t, events, EventDown, tl.rs[0].addr, time.Second)
	if s := m.Snapshot()[0]; !s.QuorumUp || s.SorryActive || s.LiveWeight != 1 {
		t.Errorf("one server down: %+v", s)
	}
	tl.rs[1].stop()
	e := waitEvent(t, events, EventQuorumLost, netip.AddrPort{}, time.Second)
	if e.Weight != 0 {
		t.Errorf("event %+v", e)
	}
	s := m.Snapshot()[0]
	if s.QuorumUp || !s.SorryActive {
		t.Errorf("snapshot %+v", s)
	}
	if d := tl.dest(t, nat.ProtoTCP, sorry); d == nil || d.Weight() != 1 {
		t.Fatalf("sorry server not in the pool: %v", d)
	}
	tl.rs[1].start()
	waitEvent(t, events, EventQuorumUp, netip.AddrPort{}, time.Second)
	// The event comes before the sorry server is taken out.
	for deadline := time.Now().Add(time.Second); tl.dest(t, nat.ProtoTCP, sorry) != nil && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
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
	// (Forking a shell can take longer than a short timeout on a loaded
	// machine; a failed run would bring the weight back by an up event
	// instead, so the test watches the table.)
	waitFor(t, 3*time.Second, "dynamic weight 4", func() bool {
		return tl.dest(t, nat.ProtoTCP, rs1).Weight() == 4
	})
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
		Default: &Check{Kind: KindUDP, Payload: []byte("hc"), Expect: []byte("hc"), Interval: tInterval, Timeout: tTimeout, Fall: 2, Rise: 1},
	}}}, o)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	tl.rs[0].stop()
	waitEvent(t, events, EventDown, tl.rs[0].addr, time.Second)
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
		c.Interval, c.Timeout, c.Fall, c.Rise = 10*time.Millisecond, 8*time.Millisecond, 1, 1
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
		time.Sleep(time.Duration(i%4) * 15 * time.Millisecond) // stop before, during and after checks
		maxEP = max(maxEP, len(st.RegisteredEndpoints()))
		m.Stop()
		m.Restore()
	}
	waitFor(t, 5*time.Second, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseG
	})
	if n := OpenConns(); n != 0 {
		t.Errorf("%d check sockets open", n)
	}
	waitFor(t, 5*time.Second, "director endpoints back to the baseline", func() bool {
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
