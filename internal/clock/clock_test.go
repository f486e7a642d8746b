package clock

import (
	"testing"
	"time"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(t Timer) (time.Time, bool) {
	select {
	case v := <-t.C():
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestManualFiresAtDeadline(t *testing.T) {
	m := NewManual(start)
	a := m.NewTimer(3 * time.Second)
	b := m.NewTimer(time.Second)
	if m.Armed() != 2 {
		t.Fatalf("armed %d", m.Armed())
	}
	m.Advance(999 * time.Millisecond)
	if _, ok := fired(b); ok {
		t.Fatal("fired before its deadline")
	}
	m.Advance(time.Millisecond)
	if v, ok := fired(b); !ok || !v.Equal(start.Add(time.Second)) {
		t.Fatalf("at its deadline: %v %v", v, ok)
	}
	if _, ok := fired(a); ok || m.Armed() != 1 {
		t.Fatalf("the later timer fired early (armed %d)", m.Armed())
	}
	// Past a deadline by a long way: fired once, with the clock's time.
	m.Advance(time.Hour)
	if v, ok := fired(a); !ok || !v.Equal(start.Add(time.Hour+time.Second)) {
		t.Fatalf("after passing it: %v %v", v, ok)
	}
	m.Advance(time.Hour)
	if _, ok := fired(a); ok || m.Armed() != 0 {
		t.Fatal("fired twice for one arming")
	}
	if got := m.Now(); !got.Equal(start.Add(2*time.Hour + time.Second)) {
		t.Fatalf("Now %v", got)
	}
}

func TestManualResetStop(t *testing.T) {
	m := NewManual(start)
	tm := m.NewTimer(time.Second)
	if !tm.Stop() || tm.Stop() || m.Armed() != 0 {
		t.Fatal("Stop of an armed timer reports true once")
	}
	m.Advance(2 * time.Second)
	if _, ok := fired(tm); ok {
		t.Fatal("a stopped timer fired")
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a stopped timer reports it armed")
	}
	m.Advance(time.Second) // fires, value left in the channel
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reports it armed")
	}
	if _, ok := fired(tm); ok {
		t.Fatal("a value from before Reset was received after it")
	}
	if !tm.Reset(5 * time.Second) {
		t.Fatal("Reset of an armed timer reports false")
	}
	m.Advance(time.Second)
	if _, ok := fired(tm); ok {
		t.Fatal("fired at the old deadline after Reset")
	}
	m.Advance(4 * time.Second)
	if _, ok := fired(tm); !ok {
		t.Fatal("did not fire at the new deadline")
	}
	// Zero and negative durations fire at once.
	for _, d := range []time.Duration{0, -time.Second} {
		if _, ok := fired(m.NewTimer(d)); !ok {
			t.Errorf("NewTimer(%v) did not fire at once", d)
		}
	}
}

func TestManualWaitArmed(t *testing.T) {
	m := NewManual(start)
	if m.WaitArmed(1, 10*time.Millisecond) {
		t.Fatal("WaitArmed(1) with no timer reported true")
	}
	done := make(chan bool)
	go func() { done <- m.WaitArmed(2, time.Minute) }()
	m.NewTimer(time.Second)
	m.NewTimer(time.Second)
	if !<-done {
		t.Fatal("WaitArmed did not see two armed timers")
	}
}

// The loop the health checker runs: fire, work, re-arm; the test steps it
// with WaitArmed and Advance.
func TestManualDrivesALoop(t *testing.T) {
	m := NewManual(start)
	var ticks []time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm := m.NewTimer(0)
		defer tm.Stop()
		for {
			select {
			case <-stop:
				return
			case v := <-tm.C():
				ticks = append(ticks, v)
				tm.Reset(time.Second)
			}
		}
	}()
	for range 5 {
		if !m.WaitArmed(1, time.Minute) {
			t.Fatal("the loop did not re-arm")
		}
		m.Advance(time.Second)
	}
	m.WaitArmed(1, time.Minute)
	close(stop)
	<-done
	if len(ticks) != 6 {
		t.Fatalf("%d ticks", len(ticks))
	}
	for i, v := range ticks {
		if want := start.Add(time.Duration(i) * time.Second); !v.Equal(want) {
			t.Errorf("tick %d at %v, want %v", i, v, want)
		}
	}
}

func TestOr(t *testing.T) {
	if Or(nil) != Real {
		t.Error("Or(nil) is not Real")
	}
	m := NewManual(start)
	if Or(m) != Clock(m) {
		t.Error("Or(m) is not m")
	}
}
