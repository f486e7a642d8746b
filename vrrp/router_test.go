package vrrp

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/clock"
)

// fakeLink records what a router does to its link.
type fakeLink struct {
	primary netip.Addr
	mu      sync.Mutex
	frames  [][]byte
	master  bool
	vmac    MAC
}

func (l *fakeLink) WriteFrame(f []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frames = append(l.frames, append([]byte(nil), f...))
	return nil
}

func (l *fakeLink) Primary(v6 bool) (netip.Addr, error) {
	if l.primary.Is6() != v6 {
		return netip.Addr{}, ErrNoAddress
	}
	return l.primary, nil
}

func (l *fakeLink) SetMaster(vmac MAC, _ []netip.Prefix, master bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.master, l.vmac = master, vmac
	return nil
}

// adverts are the priorities of the adverts sent so far, taken.
func (l *fakeLink) adverts(t *testing.T) (prios []uint8, garps int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.frames {
		if MAC(f[6:12]) != l.vmac {
			t.Fatalf("frame from %v, not the virtual MAC %v", MAC(f[6:12]), l.vmac)
		}
		if !IsVRRP(f[ethLen:]) {
			garps++
			continue
		}
		ip, err := ParseIP(f[ethLen:])
		if err != nil {
			t.Fatal(err)
		}
		var a Advert
		if err := a.Decode(ip.Payload, ip.Src, ip.Dst); err != nil {
			t.Fatal(err)
		}
		prios = append(prios, a.Priority)
	}
	l.frames = nil
	return prios, garps
}

type harness struct {
	t      *testing.T
	clk    *clock.Manual
	link   *fakeLink
	r      *Router
	states chan State
	rc     *Receiver
	peer   netip.Addr
	rx     uint64
}

func newHarness(t *testing.T, cfg Config, primary string) *harness {
	t.Helper()
	h := &harness{t: t, clk: clock.NewManual(time.Unix(1000, 0)), link: &fakeLink{primary: netip.MustParseAddr(primary)},
		states: make(chan State, 16), rc: NewReceiver()}
	if cfg.Link == "" {
		cfg.Link = "lan"
	}
	if cfg.Name == "" {
		cfg.Name = "VI_1"
	}
	r, err := New(cfg, h.link, Options{Clock: h.clk, OnState: func(s State) { h.states <- s }})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	h.rc.Add(r)
	r.Start()
	t.Cleanup(r.Stop)
	return h
}

func (h *harness) want(s State) {
	h.t.Helper()
	select {
	case got := <-h.states:
		if got != s {
			h.t.Fatalf("state %v, want %v", got, s)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("no transition to %v", s)
	}
}

func (h *harness) none() {
	h.t.Helper()
	select {
	case got := <-h.states:
		h.t.Fatalf("unexpected transition to %v", got)
	default:
	}
}

// advance moves the clock and waits until the router has armed its
// timer again (one of its two is always armed while it runs).
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.clk.Advance(d)
	if !h.clk.WaitArmed(1, 10*time.Second) {
		h.t.Fatal("router armed no timer")
	}
}

// from sends the router an advert from addr with the priority, through
// the receiver, and waits until the router has handled it.
func (h *harness) from(addr string, prio uint8, iv uint16) {
	h.t.Helper()
	src := netip.MustParseAddr(addr)
	cfg := h.r.Config()
	a := Advert{VRID: cfg.VRID, Priority: prio, Interval: iv}
	for _, v := range cfg.VIPs {
		a.Addrs = append(a.Addrs, v.Addr())
	}
	f := AppendAdvertFrame(nil, &a, VirtualMAC(cfg.VRID, src.Is6()), src)
	h.rc.Receive(cfg.Link, f[ethLen:])
	h.rx++
	deadline := time.Now().Add(10 * time.Second)
	for h.r.Stats.AdvertsReceived.Load() < h.rx {
		if time.Now().After(deadline) {
			h.t.Fatal("advert not handled")
		}
		time.Sleep(time.Millisecond)
	}
}

var vip = []netip.Prefix{netip.MustParsePrefix("10.0.0.100/24")}

// A backup that hears nothing becomes master after exactly
// Master_Down_Interval: 3 * 1 s + (256-100)/256 s.
func TestBackupTakesOverAfterMasterDownInterval(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 100, VIPs: vip, Preempt: true}, "10.0.0.2")
	h.want(Backup)
	mdi := 3*time.Second + time.Second*156/256
	h.advance(mdi - time.Nanosecond)
	h.none()
	if p, _ := h.link.adverts(t); len(p) != 0 {
		t.Fatalf("a backup sent adverts %v", p)
	}
	h.clk.Advance(time.Nanosecond)
	h.want(Master)
	p, garps := h.link.adverts(t)
	if len(p) != 1 || p[0] != 100 || garps != 1 || !h.link.master || h.link.vmac != VirtualMAC(51, false) {
		t.Fatalf("takeover: adverts %v, %d garps, master %v", p, garps, h.link.master)
	}
	// Then an advert every interval.
	for range 3 {
		h.advance(time.Second)
	}
	if p, _ := h.link.adverts(t); len(p) != 3 {
		t.Fatalf("adverts %v in 3 intervals", p)
	}
}

// A backup hearing a master of higher (or, without preemption, any)
// priority keeps waiting; the master's interval sets the wait.
func TestBackupFollowsMaster(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 100, VIPs: vip, Preempt: true}, "10.0.0.2")
	h.want(Backup)
	for range 10 {
		h.advance(3 * time.Second)
		h.from("10.0.0.3", 150, 300) // Max Adver Int 3 s
	}
	// Master_Down_Interval on the master's 3 s: 9 s + 3 s*156/256.
	h.advance(9*time.Second + 3*time.Second*156/256 - time.Nanosecond)
	h.none()
	h.clk.Advance(time.Nanosecond)
	h.want(Master)
}

// A master resigning (priority 0) is replaced after Skew_Time alone.
func TestPriorityZeroSkew(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 200, VIPs: vip, Preempt: true}, "10.0.0.2")
	h.want(Backup)
	h.from("10.0.0.3", 250, 100)
	h.from("10.0.0.3", 0, 100)
	h.advance(time.Second*56/256 - time.Nanosecond)
	h.none()
	h.clk.Advance(time.Nanosecond)
	h.want(Master)
}

// Preemption: a backup of higher priority does not follow a master of
// lower; it lets Master_Down_Interval run out and takes over. Without
// preemption it follows it.
func TestPreempt(t *testing.T) {
	for _, preempt := range []bool{true, false} {
		h := newHarness(t, Config{VRID: 51, Priority: 200, VIPs: vip, Preempt: preempt}, "10.0.0.2")
		h.want(Backup)
		mdi := 3*time.Second + time.Second*56/256
		for range 4 {
			h.advance(time.Second)
			h.from("10.0.0.3", 100, 100)
		}
		// 4 s have passed since start, the lower master's adverts
		// every second.
		if preempt {
			h.want(Master)
			continue
		}
		h.advance(mdi - time.Nanosecond)
		h.none()
		h.r.Stop()
	}
}

// preempt_delay: for that long after start a lower master is followed.
func TestPreemptDelay(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 200, VIPs: vip, Preempt: true, PreemptDelay: 10 * time.Second}, "10.0.0.2")
	h.want(Backup)
	for range 9 {
		h.advance(time.Second)
		h.from("10.0.0.3", 100, 100)
	}
	h.none()
	for range 5 {
		h.advance(time.Second)
		h.from("10.0.0.3", 100, 100)
	}
	h.want(Master)
}

// A master yields to a higher priority, and at equal priority to the
// greater primary address; it ignores a lower one.
func TestMasterYields(t *testing.T) {
	for _, tc := range []struct {
		from  string
		prio  uint8
		yield bool
	}{
		{"10.0.0.3", 101, true},
		{"10.0.0.3", 99, false},
		{"10.0.0.3", 100, true},
		{"10.0.0.1", 100, false},
	} {
		h := newHarness(t, Config{VRID: 51, Priority: 100, VIPs: vip, StartMaster: true}, "10.0.0.2")
		h.want(Master)
		h.link.adverts(t)
		h.from(tc.from, tc.prio, 100)
		if tc.yield {
			h.want(Backup)
			if h.link.master {
				t.Fatal("addresses kept after yielding")
			}
		} else {
			h.none()
		}
		h.r.Stop()
	}
}

// A master hearing a resignation answers at once; stopping, it resigns.
func TestMasterShutdown(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: OwnerPriority, VIPs: vip}, "10.0.0.2")
	h.want(Master)
	h.link.adverts(t)
	h.from("10.0.0.3", 0, 100)
	if p, _ := h.link.adverts(t); len(p) != 1 || p[0] != OwnerPriority {
		t.Fatalf("answer to a resignation: %v", p)
	}
	h.r.Stop()
	h.want(Init)
	if p, _ := h.link.adverts(t); len(p) != 1 || p[0] != 0 || h.link.master {
		t.Fatalf("shutdown adverts %v, master %v", p, h.link.master)
	}
}

// A master that lowers its priority below a preempting backup's is
// taken over; the new priority is in its adverts at once.
func TestSetPriority(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 150, VIPs: vip, StartMaster: true}, "10.0.0.2")
	h.want(Master)
	h.link.adverts(t)
	if err := h.r.SetPriority(50); err != nil {
		t.Fatal(err)
	}
	h.from("10.0.0.3", 100, 100)
	h.want(Backup)
	if p, _ := h.link.adverts(t); len(p) != 1 || p[0] != 50 {
		t.Fatalf("adverts %v", p)
	}
	if err := h.r.SetPriority(0); err == nil {
		t.Fatal("priority 0 accepted")
	}
}

func TestReceiverDrops(t *testing.T) {
	h := newHarness(t, Config{VRID: 51, Priority: 100, VIPs: vip}, "10.0.0.2")
	h.want(Backup)
	// Our own advert, another VRID, other addresses.
	a := Advert{VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.100")}}
	f := AppendAdvertFrame(nil, &a, VirtualMAC(51, false), netip.MustParseAddr("10.0.0.2"))
	h.rc.Receive("lan", f[ethLen:])
	a.VRID = 52
	f = AppendAdvertFrame(nil, &a, VirtualMAC(52, false), netip.MustParseAddr("10.0.0.3"))
	h.rc.Receive("lan", f[ethLen:])
	h.rc.Receive("other", f[ethLen:])
	a.VRID, a.Addrs = 51, []netip.Addr{netip.MustParseAddr("10.0.0.99")}
	f = AppendAdvertFrame(nil, &a, VirtualMAC(51, false), netip.MustParseAddr("10.0.0.3"))
	h.rc.Receive("lan", f[ethLen:])
	if h.rc.Drops(ReasonOwn) != 1 || h.rc.Drops(ReasonVRID) != 2 || h.rc.Drops(ReasonAddrs) != 1 {
		t.Fatalf("drops own %d vrid %d addrs %d", h.rc.Drops(ReasonOwn), h.rc.Drops(ReasonVRID), h.rc.Drops(ReasonAddrs))
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Link: "lan", VRID: 0, Priority: 100, VIPs: vip},
		{Link: "lan", VRID: 1, Priority: 0, VIPs: vip},
		{Link: "lan", VRID: 1, Priority: 100},
		{Link: "lan", VRID: 1, Priority: 100, VIPs: vip, Interval: 5 * time.Millisecond},
		{Link: "lan", VRID: 1, Priority: 100, VIPs: vip, Interval: 41 * time.Second},
		{Link: "lan", VRID: 1, Priority: 100, VIPs: []netip.Prefix{vip[0], netip.MustParsePrefix("2001:db8::1/128")}},
		{VRID: 1, Priority: 100, VIPs: vip},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := New(Config{Link: "lan", VRID: 1, Priority: 100, VIPs: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
		&fakeLink{primary: netip.MustParseAddr("10.0.0.2")}, Options{}); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("v6 router on a v4-only link: %v", err)
	}
}
