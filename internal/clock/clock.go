// Package clock is the time the director's timers run on: the real clock
// in production, a Manual one in tests, which advance it instead of
// sleeping and so assert exact times rather than wall-clock bounds.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer on this clock.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that timers here share.
type Timer interface {
	// C delivers the time the timer fired at, once per firing.
	C() <-chan time.Time
	// Reset and Stop are time.Timer's (Go 1.23 semantics: no stale
	// value is received after either returns).
	Reset(d time.Duration) bool
	Stop() bool
}

// Real is the system clock.
var Real Clock = realClock{}

// Or returns c, or Real if c is nil: the default for an optional Clock.
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
func (r realTimer) Stop() bool                 { return r.t.Stop() }

// Manual is a clock that moves only when told to (Advance). Its timers
// fire from Advance, in the order of their deadlines, each at most once
// per arming, into a channel with room for one value as time.Timer's.
// Timers armed with a duration of zero or less fire at once.
type Manual struct {
	mu      sync.Mutex
	now     time.Time
	armed   map[*manualTimer]struct{}
	changed chan struct{} // closed and replaced when the armed set changes
}

// NewManual returns a Manual clock reading start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, armed: map[*manualTimer]struct{}{}, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// NewTimer makes a timer that fires d after the clock's time.
func (m *Manual) NewTimer(d time.Duration) Timer {
	t := &manualTimer{m: m, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// Advance moves the clock d forward and fires, in deadline order, every
// timer whose deadline it passed or reached.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = m.now.Add(d)
	var due []*manualTimer
	for t := range m.armed {
		if !t.when.After(m.now) {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].when.Before(due[j].when) })
	for _, t := range due {
		m.fireLocked(t)
	}
}

// Armed returns how many timers are waiting to fire.
func (m *Manual) Armed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.armed)
}

// WaitArmed blocks until at least n timers are waiting to fire, or the
// timeout (real time: a guard against a test that hangs, not part of
// what is tested) passes; it reports which. A test calls it to know that
// the goroutines it drives have finished reacting to the last Advance and
// armed their next timers.
func (m *Manual) WaitArmed(n int, timeout time.Duration) bool {
	guard := time.NewTimer(timeout)
	defer guard.Stop()
	for {
		m.mu.Lock()
		ok, ch := len(m.armed) >= n, m.changed
		m.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-guard.C:
			return false
		}
	}
}

// fireLocked disarms t and delivers the clock's time, dropping it if the
// last one was not received (as time.Timer's channel holds one value).
func (m *Manual) fireLocked(t *manualTimer) {
	m.disarmLocked(t)
	select {
	case t.c <- m.now:
	default:
	}
}

func (m *Manual) disarmLocked(t *manualTimer) bool {
	if _, ok := m.armed[t]; !ok {
		return false
	}
	delete(m.armed, t)
	m.notifyLocked()
	return true
}

func (m *Manual) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

type manualTimer struct {
	m    *Manual
	c    chan time.Time
	when time.Time // under m.mu
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

func (t *manualTimer) Reset(d time.Duration) bool {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.disarmLocked(t)
	t.drain()
	t.when = m.now.Add(d)
	if d <= 0 {
		m.fireLocked(t)
		return was
	}
	m.armed[t] = struct{}{}
	m.notifyLocked()
	return was
}

func (t *manualTimer) Stop() bool {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.disarmLocked(t)
	t.drain()
	return was
}

// drain empties the channel, for Go 1.23's guarantee that no value from
// before a Reset or Stop is received after it.
func (t *manualTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
