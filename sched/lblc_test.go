package sched

import (
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a settable clock for lblc and lblcr.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

var clockBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// useClock makes the case's scheduler read c, starting at clockBase, and
// optionally sets the expiration sysctl (0: the default). It must come
// before the first update: the expiry timer starts then.
func useClock(c *fakeClock, expiration time.Duration) step {
	return func(e *env) {
		c.t = clockBase
		s := e.s.(*lblcScheduler)
		s.now = c.now
		if expiration > 0 {
			s.expiration = expiration
		}
	}
}

// at sets the clock to clockBase + d.
func at(c *fakeClock, d time.Duration) step {
	return func(*env) { c.t = clockBase.Add(d) }
}

// sameAddr gives server b the address and port of a, as a server
// deleted and added again (a new Dest value) has.
func sameAddr(b, a string) step {
	return func(e *env) { e.dest(b).addr = e.dest(a).addr }
}

func TestLBLC(t *testing.T) {
	// lblc (ip_vs_lblc.c): an entry per destination address remembers
	// one server. A hit is used while the server is still listed, has
	// weight > 0 and is not overloaded in the lblc sense (active >
	// weight while some listed server has active*2 < weight); otherwise
	// the wlc choice is taken and replaces the entry.
	x, y := to("10.9.0.1"), to("10.9.0.2")
	var c1, c2, c3, c4, c5, c6 fakeClock
	runCases(t, "lblc", []schedCase{
		{
			// Each pick adds an active connection; all to one
			// address. 1: A (wlc tie). 2: A, 1 active is not more
			// than weight 1. 3: A has 2 > 1 and B 0*2 < 1: wlc gives
			// B, which replaces A in the entry. 4: B (1 > 1 no). 5, 6:
			// B has 2 > 1 but no server is below half its weight, so
			// B stays.
			name:    "sticky until overloaded",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				picksBump("A A B B B B"),
			},
		},
		{
			// X is remembered on A; Y, new, gets the wlc choice B.
			name:    "per destination address",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A", x),
				conns("A", 1, 0),
				flowPicks("A B A", x, y, x),
			},
		},
		{
			// Quiesced: X moves to B, and the entry with it.
			name:    "quiesced server",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A", x),
				weight("A", 0),
				flowPicks("B", x),
				weight("A", 1),
				flowPicks("B", x),
			},
		},
		{
			// The IP_VS_DEST_F_OVERLOAD flag is not checked on a hit
			// (only wlc's choice skips it): X stays on A, Y gets B.
			name:    "overload flag ignored on a hit",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A", x),
				overload(true, "A"),
				flowPicks("A B", x, y),
			},
		},
		{
			// A deleted: the entry's server is not available, wlc
			// gives B and the entry follows. Re-adding A does not
			// bring X back.
			name:    "deleted server",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A", x),
				update("B"),
				flowPicks("B", x),
				update("A B"),
				flowPicks("B", x),
			},
		},
		{
			// A deleted and added again (a new Dest with A's address
			// and port) before X comes back: the kernel's entry holds
			// the old struct, which the re-add revives from the
			// trash, so X goes to A2 although wlc would pick B.
			name:    "re-added server revives the entry",
			servers: []srv{{"A", 1}, {"A2", 1}, {"B", 1}},
			steps: []step{
				sameAddr("A2", "A"),
				update("A B"),
				flowPicks("A", x),
				update("B"),
				update("A2 B"),
				conns("A2", 1, 0),
				flowPicks("A2 B", x, y),
			},
		},
		{
			// Expiration 10 min. The timer runs every 60 s from the
			// first update; every 30th run (t = 1800 s, 3600 s, ...)
			// drops entries unused for the expiration. X used at 0
			// and 1799 s survives the 1800 s run (1799 + 600 > 1800);
			// at 3599 s it is still there.
			name:    "expiry: kept",
			servers: []srv{{"A", 2}, {"B", 2}},
			steps: []step{
				useClock(&c1, 10*time.Minute),
				update("A B"),
				flowPicks("A", x),
				conns("A", 1, 0),
				at(&c1, 1799*time.Second),
				flowPicks("A", x),
				at(&c1, 3599*time.Second),
				flowPicks("A", x),
			},
		},
		{
			// Same, but X comes back at 3600 s: that run dropped it
			// (3600 >= 1799 + 600), so wlc chooses: B.
			name:    "expiry: dropped at the full check",
			servers: []srv{{"A", 2}, {"B", 2}},
			steps: []step{
				useClock(&c2, 10*time.Minute),
				update("A B"),
				flowPicks("A", x),
				conns("A", 1, 0),
				at(&c2, 1799*time.Second),
				flowPicks("A", x),
				at(&c2, 3600*time.Second),
				flowPicks("B", x),
			},
		},
		{
			// Default expiration 24 h: the full check at 86400 s
			// (the 1440th run) drops an entry last used at 0.
			name:    "expiry: default 24h",
			servers: []srv{{"A", 2}, {"B", 2}},
			steps: []step{
				useClock(&c3, 0),
				update("A B"),
				flowPicks("A A", x, y),
				conns("A", 1, 0),
				at(&c3, 86399*time.Second),
				flowPicks("A", x),
				at(&c3, 86400*time.Second),
				flowPicks("B", y),
			},
		},
		{
			// Several periods pass with an empty table (skipped in
			// one step), then X and Y are made at 5000 s. The full
			// checks stay on every 30th run: 5400 s keeps both (5000
			// + 600 > 5400), nothing runs a full check before 7200 s
			// (X is still there at 7199 s), and 7200 s drops Y, last
			// used at 5000 s, but not X, used at 7199 s.
			name:    "expiry: after idle periods",
			servers: []srv{{"A", 2}, {"B", 2}},
			steps: []step{
				useClock(&c4, 10*time.Minute),
				update("A B"),
				at(&c4, 5000*time.Second),
				flowPicks("A A", x, y),
				conns("A", 1, 0),
				at(&c4, 7199*time.Second),
				flowPicks("A", x),
				at(&c4, 7200*time.Second),
				flowPicks("B A", y, x),
			},
		},
		{
			name:    "none available",
			servers: []srv{{"Z", 0}, {"O", 1}},
			steps: []step{
				useClock(&c5, 0),
				update("Z O"),
				overload(true, "O"),
				flowPicks("-", x),
				update(""),
				flowPicks("-", x),
			},
		},
		{
			// The cached server is only checked for weight and the
			// lblc overload; with it quiesced and the rest
			// overloaded there is nothing, and the entry stays.
			name:    "no server, entry kept",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				useClock(&c6, 0),
				update("A B"),
				flowPicks("A", x),
				overload(true, "B"),
				weight("A", 0),
				flowPicks("-", x),
				weight("A", 1),
				conns("B", 0, 0),
				flowPicks("A", x),
			},
		},
	})
}

// TestLBLCPartialExpiry fills the table past its 16384-entry max_size and
// follows one partial run: goal = (entries - 16384)*4/3 (at most 8192),
// whole buckets from rover+1 dropping entries unused for 6 min, stopping
// after the bucket that reaches the goal. Bucket j is the one of
// hash_32(address, 10).
func TestLBLCPartialExpiry(t *testing.T) {
	var c fakeClock
	c.t = clockBase
	s := newLBLC(false)
	s.now = c.now
	d := newDest("A", 1, 1)
	s.Update([]Dest{d})
	const n = 16400
	per := map[int]int{}
	f := Flow{}
	for k := range n {
		f.Dst = netip.AddrFrom4([4]byte{10, 50, byte(k >> 8), byte(k)})
		per[lblcBucket(f.Dst)]++
		if s.Pick(&f) != 0 {
			t.Fatal("no server")
		}
	}
	if s.entries != n {
		t.Fatalf("entries %d, want %d", s.entries, n)
	}
	// Runs at 60..300 s: nothing is 6 minutes old.
	c.t = clockBase.Add(359 * time.Second)
	s.Update([]Dest{d})
	if s.entries != n || s.rover != 0 {
		t.Fatalf("before 6 min: entries %d rover %d", s.entries, s.rover)
	}
	// The run at 360 s: goal (16400-16384)*4/3 = 21.
	c.t = clockBase.Add(360 * time.Second)
	s.Update([]Dest{d})
	goal, j, dropped := 21, 0, 0
	for goal > 0 {
		j++
		goal -= per[j]
		dropped += per[j]
	}
	if s.entries != n-dropped || s.rover != j {
		t.Fatalf("after the partial run: entries %d rover %d, want %d and %d", s.entries, s.rover, n-dropped, j)
	}
}

// TestLBLCFull checks that no entry is added once the table holds 3/2 of
// max_size; the server is still returned.
func TestLBLCFull(t *testing.T) {
	for _, name := range []string{"lblc", "lblcr"} {
		s := newLBLC(name == "lblcr")
		s.now = func() time.Time { return clockBase }
		s.Update([]Dest{newDest("A", 1, 1)})
		f := Flow{}
		for k := range lblcMaxSize*3/2 + 10 {
			f.Dst = netip.AddrFrom4([4]byte{10, 60, byte(k >> 8), byte(k)})
			if s.Pick(&f) != 0 {
				t.Fatal("no server")
			}
		}
		if s.entries != lblcMaxSize*3/2 {
			t.Errorf("%s: %d entries, want %d", name, s.entries, lblcMaxSize*3/2)
		}
	}
}

func TestLBLCR(t *testing.T) {
	// lblcr (ip_vs_lblcr.c): an entry per destination address holds a
	// set of servers (newest first). A hit takes the set's least loaded
	// available member (wlc rule); if it is overloaded in the lblc sense,
	// the wlc choice over all servers is added to the set and used.
	x, y := to("10.9.0.1"), to("10.9.0.2")
	var c1, c2, c3 fakeClock
	runCases(t, "lblcr", []schedCase{
		{
			// Each pick adds an active connection to X's server.
			// 1: A (wlc tie), set {A}. 2: A (1 > 1 no).
			// 3: A 2 > 1 with B below half: wlc B, set {B A}.
			// 4: set min B (257 vs 514), 1 > 1 no: B.
			// 5: B and A tie at 514, B first; B 2 > 1 with C idle:
			//    wlc C, set {C B A}. 6: C. 7: all at 514, C first;
			//    nobody below half its weight: C.
			// 8: C 771, B 514: B. 9: B 771, A 514: A.
			name:    "replication as load grows",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picksBump("A A B B C C C B A"),
			},
		},
		{
			// Set {B A} made at 10 s (lastmod). With expiration 10
			// min the set is not shrunk at 610 s (the kernel needs
			// now after lastmod + expiration): min is A (0 < 257).
			// Then A at 1 active and B idle: B, still in the set.
			name:    "set kept until expiration",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				useClock(&c1, 10*time.Minute),
				update("A B"),
				flowPicks("A", x),
				conns("A", 2, 0),
				at(&c1, 10*time.Second),
				flowPicks("B", x),
				conns("A", 0, 0), conns("B", 1, 0),
				at(&c1, 610*time.Second),
				flowPicks("A", x),
				conns("A", 1, 0), conns("B", 0, 0),
				flowPicks("B", x),
			},
		},
		{
			// At 611 s the set {B A}, unchanged since 10 s, loses its
			// most loaded member, B (257 against 0); the minimum A
			// was chosen first and is used. Afterwards the set is
			// {A}: with A at 1 active and B idle X still goes to A.
			name:    "set shrinks after expiration",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				useClock(&c2, 10*time.Minute),
				update("A B"),
				flowPicks("A", x),
				conns("A", 2, 0),
				at(&c2, 10*time.Second),
				flowPicks("B", x),
				conns("A", 0, 0), conns("B", 1, 0),
				at(&c2, 611*time.Second),
				flowPicks("A", x),
				conns("A", 1, 0), conns("B", 0, 0),
				flowPicks("A", x),
			},
		},
		{
			// Set {B A}; B deleted: the set's minimum skips it (not
			// available): A. C added; A flagged overloaded is skipped
			// by the set's minimum too, so wlc over [C A]: C, added
			// to the set {C B A}. A unflagged and C at 257: the
			// minimum passes over B (0, but not available) to A.
			name:    "unavailable members",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A", x),
				conns("A", 2, 0),
				flowPicks("B", x),
				conns("A", 0, 0),
				update("A"),
				flowPicks("A", x),
				update("C A"),
				conns("C", 0, 5),
				overload(true, "A"),
				flowPicks("C", x),
				overload(false, "A"),
				conns("C", 1, 0),
				flowPicks("A", x),
			},
		},
		{
			// Quiesced members are not the minimum: A quiesced, wlc
			// adds B to X's and Y's sets. A back at weight 1 and B
			// at 257: the set {B A} gives A.
			name:    "quiesced member",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				useClock(&c3, 0),
				update("A B"),
				flowPicks("A A", x, y),
				weight("A", 0),
				flowPicks("B B", x, y),
				weight("A", 1),
				conns("B", 1, 0),
				flowPicks("A", x),
			},
		},
		{
			name:    "none available",
			servers: []srv{{"Z", 0}, {"O", 1}},
			steps: []step{
				update("Z O"),
				overload(true, "O"),
				flowPicks("- -", x, y),
				update(""),
				flowPicks("-", x),
			},
		},
	})
}

// Without a test clock, lblc runs on the table's: the time of the packet
// being scheduled. Before any packet it has no reading, and its expiry
// runs start 60 s after the first packet's time, not the machine's.
func TestLBLCRunsOnFlowTime(t *testing.T) {
	for _, name := range []string{"lblc", "lblcr"} {
		s := newLBLC(name == "lblcr")
		s.Update([]Dest{newDest("A", 1, 1)})
		if s.started {
			t.Fatalf("%s: the expiry runs started without a packet", name)
		}
		t0 := time.Date(2020, 5, 1, 12, 0, 0, 0, time.UTC)
		f := to("10.9.0.1")
		f.Now = t0.UnixNano()
		if s.Pick(&f) != 0 {
			t.Fatalf("%s: no server", name)
		}
		if !s.started || !s.nextCheck.Equal(t0.Add(lblcCheckInterval)) {
			t.Fatalf("%s: next run at %v, want %v", name, s.nextCheck, t0.Add(lblcCheckInterval))
		}
		// Update reads the last packet's time: 10 runs later by it.
		f.Now = t0.Add(10*lblcCheckInterval + time.Second).UnixNano()
		s.Pick(&f)
		s.Update([]Dest{newDest("A", 1, 1)})
		if want := t0.Add(11 * lblcCheckInterval); !s.nextCheck.Equal(want) {
			t.Fatalf("%s: next run at %v, want %v", name, s.nextCheck, want)
		}
	}
}
