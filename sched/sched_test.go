package sched

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeDest is a settable Dest. Its fields are atomics so the concurrency
// test can change counters while picks run, as the packet path would.
type fakeDest struct {
	name   string
	addr   netip.AddrPort
	weight atomic.Int64
	active atomic.Int64
	inact  atomic.Int64
	over   atomic.Bool
}

func (d *fakeDest) Weight() int          { return int(d.weight.Load()) }
func (d *fakeDest) ActiveConns() int     { return int(d.active.Load()) }
func (d *fakeDest) InactConns() int      { return int(d.inact.Load()) }
func (d *fakeDest) Overloaded() bool     { return d.over.Load() }
func (d *fakeDest) Addr() netip.AddrPort { return d.addr }

// String names the server, or "-" for none, in failure messages.
func (d *fakeDest) String() string {
	if d == nil {
		return "-"
	}
	return d.name + "@" + d.addr.String()
}

// newDest makes a server. A name like ".5" gets 10.0.0.5:80, so the lab
// cases read like the lab; other names get 10.0.1.n:80 (n < 256, and
// on through 10.0.2.0 and up for larger n).
func newDest(name string, n, weight int) *fakeDest {
	host := 1<<8 + n // unique for n < 65280; the same as 1<<8 | n below 256
	if v, err := strconv.Atoi(strings.TrimPrefix(name, ".")); err == nil && name[0] == '.' {
		host = v
	}
	d := &fakeDest{
		name: name,
		addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(host >> 8), byte(host)}), 80),
	}
	d.weight.Store(int64(weight))
	return d
}

// srv declares a server of a test case with its initial weight.
type srv struct {
	name string
	w    int
}

// env is one running test case: the scheduler, the servers by name and
// the list last given to Update.
type env struct {
	t     *testing.T
	s     Scheduler
	dests map[string]*fakeDest
	list  []Dest
}

func (e *env) dest(name string) *fakeDest {
	d, ok := e.dests[name]
	if !ok {
		e.t.Fatalf("no server %q in the case", name)
	}
	return d
}

// step is one action of a case.
type step func(e *env)

// update gives the scheduler the list "A B C" (list order, newest first),
// as the service does after an add, delete or edit. A fresh slice each
// time, as the contract lets the scheduler keep it.
func update(names string) step {
	return func(e *env) {
		e.list = []Dest{}
		for _, n := range strings.Fields(names) {
			e.list = append(e.list, e.dest(n))
		}
		e.s.Update(e.list)
	}
}

// weight sets a server's weight and calls Update with the same list, as
// the service does on an edit (the kernel's upd_dest).
func weight(name string, w int) step {
	return func(e *env) {
		e.dest(name).weight.Store(int64(w))
		e.s.Update(slices.Clone(e.list))
	}
}

// overload sets or clears the overload flag of servers; no Update, as the
// kernel flips IP_VS_DEST_F_OVERLOAD without telling the scheduler.
func overload(on bool, names string) step {
	return func(e *env) {
		for _, n := range strings.Fields(names) {
			e.dest(n).over.Store(on)
		}
	}
}

// conns sets a server's connection counts.
func conns(name string, active, inact int) step {
	return func(e *env) {
		d := e.dest(name)
		d.active.Store(int64(active))
		d.inact.Store(int64(inact))
	}
}

// picks runs one Pick per expected name ("-" for -1) and compares the
// whole sequence. With bump, each picked server gets one more active
// connection, as the connection it was picked for would add.
func pickSeq(want string, bump bool) step {
	return func(e *env) {
		e.t.Helper()
		w := strings.Fields(want)
		got := make([]string, 0, len(w))
		for range w {
			i := e.s.Pick(&Flow{})
			switch {
			case i == -1:
				got = append(got, "-")
			case i < 0 || i >= len(e.list):
				e.t.Fatalf("Pick returned %d with %d servers", i, len(e.list))
			default:
				d := e.list[i].(*fakeDest)
				got = append(got, d.name)
				if bump {
					d.active.Add(1)
				}
			}
		}
		if g := strings.Join(got, " "); g != strings.Join(w, " ") {
			e.t.Errorf("picks\n got: %s\nwant: %s", g, strings.Join(w, " "))
		}
	}
}

func picks(want string) step     { return pickSeq(want, false) }
func picksBump(want string) step { return pickSeq(want, true) }

type schedCase struct {
	name    string
	servers []srv
	steps   []step
}

func runCases(t *testing.T, sched string, cases []schedCase) {
	t.Helper()
	runCasesFlags(t, sched, 0, cases)
}

// runCasesFlags is runCases for a scheduler made with -b flags.
func runCasesFlags(t *testing.T, sched string, flags Flags, cases []schedCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := NewWithFlags(sched, flags)
			if err != nil {
				t.Fatal(err)
			}
			e := &env{t: t, s: s, dests: map[string]*fakeDest{}}
			for i, sv := range c.servers {
				e.dests[sv.name] = newDest(sv.name, i+1, sv.w)
			}
			for _, st := range c.steps {
				st(e)
			}
		})
	}
}

func TestRR(t *testing.T) {
	// rr keeps a pointer that starts at the list head. A pick walks on
	// from the pointer, wrapping past the head, to the first server that
	// is not overloaded and has weight > 0, and leaves the pointer there
	// (ip_vs_rr_schedule). Deleting the pointer's server moves the
	// pointer to its predecessor (ip_vs_rr_del_dest).
	runCases(t, "rr", []schedCase{
		{
			// ipvsadm -a .5, then -a .6: list_add puts .6 at the
			// head, so the list is [.6 .5] and the first pick from
			// the head is .6.
			name:    "lab .5 then .6",
			servers: []srv{{".5", 1}, {".6", 1}},
			steps: []step{
				update(".5"),
				update(".6 .5"),
				picks(".6 .5 .6 .5 .6"),
			},
		},
		{
			// Added the other way round: list [.5 .6].
			name:    "lab .6 then .5",
			servers: []srv{{".5", 1}, {".6", 1}},
			steps: []step{
				update(".6"),
				update(".5 .6"),
				picks(".5 .6 .5 .6"),
			},
		},
		{
			// Weights do not matter to rr beyond > 0.
			name:    "weights ignored",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A B C A B C A"),
			},
		},
		{
			// After A B C A the pointer is on A. Adding D puts it at
			// the head without moving the pointer, so the walk goes
			// on B C, then wraps to D and A.
			name:    "add while walking",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}, {"D", 1}},
			steps: []step{
				update("A B C"),
				picks("A B C A"),
				update("D A B C"),
				picks("B C D A B"),
			},
		},
		{
			// B has weight 0 (quiesced): the walk skips it.
			name:    "weight 0 skipped",
			servers: []srv{{"A", 1}, {"B", 0}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("A C A C"),
				// Un-quiescing B: pointer is on C, walk wraps to A,
				// then B comes in turn.
				weight("B", 1),
				picks("A B C A"),
			},
		},
		{
			// B overloaded is skipped; once cleared, with the
			// pointer on A after A C A, B is next.
			name:    "overloaded skipped",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				overload(true, "B"),
				picks("A C A"),
				overload(false, "B"),
				picks("B C A"),
			},
		},
		{
			// A lone available server: the walk ends by looking at
			// the pointer's own server again, so A is picked again.
			name:    "lone server repeats",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				overload(true, "B"),
				picks("A A A"),
			},
		},
		{
			// All quiesced: -1, and a failed pick leaves the pointer
			// where it was (on B after A B), so C comes next.
			name:    "all quiesced",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("A B"),
				weight("A", 0), weight("B", 0), weight("C", 0),
				picks("- -"),
				weight("A", 1), weight("B", 1), weight("C", 1),
				picks("C A B"),
			},
		},
		{
			name:    "all overloaded",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				picks("A"),
				overload(true, "A B"),
				picks("- -"),
				overload(false, "A B"),
				picks("B A"),
			},
		},
		{
			name:  "empty",
			steps: []step{update(""), picks("- -")},
		},
		{
			// Pointer on B (after A B); B is deleted, the pointer
			// moves to A, so the walk resumes at C, the server that
			// followed B. (Keeping the old index 1 would give D.)
			name:    "remove current mid-list",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}, {"D", 1}},
			steps: []step{
				update("A B C D"),
				picks("A B"),
				update("A C D"),
				picks("C D A C"),
			},
		},
		{
			// Pointer on A, the first entry; A is deleted, the
			// pointer goes to the head, so B, now first, is next.
			name:    "remove current first",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("A"),
				update("B C"),
				picks("B C B"),
			},
		},
		{
			// Pointer on C, the last entry; C is deleted, the
			// pointer goes to B, so the walk wraps to A.
			name:    "remove current last",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("A B C"),
				update("A B"),
				picks("A B A"),
			},
		},
		{
			// Deleting another server does not move the pointer: it
			// stays on C, now at index 1.
			name:    "remove other",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}, {"D", 1}},
			steps: []step{
				update("A B C D"),
				picks("A B C"),
				update("B C D"),
				picks("D B C D"),
			},
		},
		{
			// Pointer on C; B and C go in one Update. Whatever the
			// kernel's order of the two deletions, the pointer ends
			// on A, the nearest surviving predecessor, so D is next.
			name:    "remove current and predecessor",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}, {"D", 1}},
			steps: []step{
				update("A B C D"),
				picks("A B C"),
				update("A D"),
				picks("D A D"),
			},
		},
		{
			// Pointer on B; every server goes: head. The re-added B
			// is then first.
			name:    "remove all",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				picks("A B"),
				update(""),
				picks("-"),
				update("B"),
				picks("B B"),
			},
		},
	})
}

func TestWRR(t *testing.T) {
	// wrr (ip_vs_wrr.c) state: cl (last pick or head), cw (current
	// weight), mw (max weight - (di - 1)), di (gcd of positive weights).
	// A pick scans the servers after cl for one not overloaded with
	// weight >= cw; passing the head lowers cw by di, and cw <= 0 wraps
	// to mw. Every Update is ip_vs_wrr_dest_changed: cl = head, di and mw
	// recomputed, cw = mw if cw > mw or cw == 0, else aligned to di.
	runCases(t, "wrr", []schedCase{
		{
			// One Update with [A4 B3 C2]: di 1, mw 4, cw 0 -> 4.
			// cw 4: A | cw 3: A B | cw 2: A B C | cw 1: A B C |
			// cw 0 -> 4 (restart): A, and again.
			name:    "classic 4 3 2",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B A B C A B C A A B A B C A B C"),
			},
		},
		{
			// The same servers added one at a time as ipvsadm -a
			// does (C, then B, then A). dest_changed per add:
			// [C2]: di 2, mw 1, cw 0 -> 1; [B3 C2]: di 1, mw 3, cw 1
			// kept; [A4 B3 C2]: mw 4, cw 1 kept. So the walk starts
			// in the weight-1 pass: A B C, then wraps to cw 4 and
			// runs the classic cycle.
			name:    "classic added one by one",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("C"),
				update("B C"),
				update("A B C"),
				picks("A B C A A B A B C A B C A"),
			},
		},
		{
			// After A A B A B: cl B, cw 2. B 3 -> 2 makes [4 2 2]:
			// di 2, mw 4-1 = 3, cw 2 <= 3 and di > 1 so cw = 2/2*2+1
			// = 3; cl = head. cw 3: A | cw 1: A B C | cw -1 -> 3:
			// A | cw 1: A B C. Ratio 2:1:1.
			name:    "weight change mid-cycle, gcd 2",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B A B"),
				weight("B", 2),
				picks("A A B C A A B C"),
			},
		},
		{
			// After A: cl A, cw 4. A 4 -> 1 makes [1 3 2]: di 1, mw
			// 3, cw 4 > 3 so cw = 3; cl = head. cw 3: B | cw 2: B C
			// | cw 1: A B C | cw 0 -> 3: B ...
			name:    "weight change lowers max",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A"),
				weight("A", 1),
				picks("B B C A B C B B C A B C"),
			},
		},
		{
			// After A A B: cl B, cw 3. An edit that changes nothing
			// still runs dest_changed: cl = head, cw 3 kept. So A
			// (not C, as continuing from B at cw 2 would give).
			// cw 3: A B | cw 2: A B C | cw 1: A B C | cw 4: A ...
			name:    "no-op edit resets position",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B"),
				weight("B", 3),
				picks("A B A B C A B C A A B"),
			},
		},
		{
			// After A A B: cl B, cw 3. Adding D3 at the head: di 1,
			// mw 4, cw 3 kept, cl = head. cw 3: D A B | cw 2: D A B
			// C | cw 1: D A B C | cw 4: A | cw 3: D A B ...
			name:    "add mid-cycle",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}, {"D", 3}},
			steps: []step{
				update("A B C"),
				picks("A A B"),
				update("D A B C"),
				picks("D A B D A B C D A B C A D A B"),
			},
		},
		{
			// After A A B: cl B, cw 3. Deleting A: [B3 C2], di 1,
			// mw 3, cw 3 kept, cl = head. cw 3: B | cw 2: B C |
			// cw 1: B C | cw 3: B.
			name:    "remove mid-cycle",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B"),
				update("B C"),
				picks("B B C B C B"),
			},
		},
		{
			// [6 4 2]: di 2, mw 5, cw 5. cw 5: A | cw 3: A B |
			// cw 1: A B C | cw -1 -> 5: A. Same as 3 2 1.
			name:    "gcd 2",
			servers: []srv{{"A", 6}, {"B", 4}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B A B C A A B A B C"),
			},
		},
		{
			// Z has weight 0: gcd and max ignore it (di 2, mw 3) and
			// weight >= cw >= 1 never holds for it. cw 3: A |
			// cw 1: A C | cw -1 -> 3: A ...
			name:    "weight 0",
			servers: []srv{{"A", 4}, {"Z", 0}, {"C", 2}},
			steps: []step{
				update("A Z C"),
				picks("A A C A A C"),
			},
		},
		{
			// All weights 0: max 0, mw 0, -1 at once. Two edits
			// restore [2 1], each its own dest_changed: [A2 B0]: di 2,
			// mw 2-1 = 1, cw 0 -> 1; [A2 B1]: di 1, mw 2, cw 1 kept.
			// cw 1: A B | cw 0 -> 2: A | cw 1: A B ...
			// (One Update with [2 1] would start at cw 2: A A B.)
			name:    "all quiesced",
			servers: []srv{{"A", 0}, {"B", 0}},
			steps: []step{
				update("A B"),
				picks("- -"),
				weight("A", 2),
				weight("B", 1),
				picks("A B A A B A"),
			},
		},
		{
			// After A A: cl A, cw 3. Quiescing one by one: [0 3 2]:
			// di 1, mw 3, cw 3 kept; [0 0 2]: di 2, mw 1, cw 3 > 1 so
			// 1; [0 0 0]: mw 0, cw 1 > 0 so 0. Restoring one by
			// one: [4 0 0]: di 4, mw 1, cw 0 -> 1; [4 3 0] and
			// [4 3 2]: di 1, mw 4, cw 1 kept. So the weight-1 pass
			// first: A B C | cw 4: A | cw 3: A B | cw 2: A B C.
			name:    "quiesce all mid-cycle",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A"),
				weight("A", 0), weight("B", 0), weight("C", 0),
				picks("-"),
				weight("A", 4), weight("B", 3), weight("C", 2),
				picks("A B C A A B A B C"),
			},
		},
		{
			// A overloaded from the start. cw 4: none | cw 3: B |
			// cw 2: B C | cw 1: B C | cw 4: none | cw 3: B ...
			name:    "overloaded skipped",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				overload(true, "A"),
				picks("B B C B C B B C B C"),
			},
		},
		{
			// After A A B: cl B, cw 3; all overloaded. Scan from B:
			// C no; cw 2, scan; cw 1 (last_pass), scan all; cw 0 ->
			// 4 with last_pass set: err_over with the walk at the
			// head, so cl = head and cw = 4. Once cleared the
			// classic cycle restarts at A A B, not at C.
			name:    "all overloaded resets to head",
			servers: []srv{{"A", 4}, {"B", 3}, {"C", 2}},
			steps: []step{
				update("A B C"),
				picks("A A B"),
				overload(true, "A B C"),
				picks("- -"),
				overload(false, "A B C"),
				picks("A A B A B C A B C"),
			},
		},
		{
			// [A1 B3 C1]: di 1, mw 3. cw 3: B | cw 2: B | cw 1: A B
			// C -> cl C, cw 1. Then B, C overloaded: from C cw
			// 0 -> 3 (restarted), scans at 3 and 2 find nothing;
			// cw 1 is the last pass and, restarted from a server,
			// sets stop = C; A (1 >= 1) is found. From A again: the
			// same way round, A. Then A overloaded too: the last
			// pass reaches stop = A: err_over leaves cl = A, cw 1.
			// Cleared, the walk goes on from A at cw 1: B C, then
			// cw 3: B | cw 2: B | cw 1: A B C.
			name:    "restart and stop",
			servers: []srv{{"A", 1}, {"B", 3}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("B B A B C"),
				overload(true, "B C"),
				picks("A A"),
				overload(true, "A"),
				picks("- -"),
				overload(false, "A B C"),
				picks("B C B B A B C"),
			},
		},
		{
			// [A1 B3 C1] after B B: cl B, cw 2. All overloaded: from
			// B, C no; cw 1 is the last pass but nothing restarted,
			// so no stop; full scan fails; cw 0 -> 3 with last_pass
			// set: err_over at the head, cl = head, cw 3. Cleared:
			// the cycle from its start, B B A B C.
			name:    "last pass from a server",
			servers: []srv{{"A", 1}, {"B", 3}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picks("B B"),
				overload(true, "A B C"),
				picks("-"),
				overload(false, "A B C"),
				picks("B B A B C"),
			},
		},
		{
			// The lab pair with wrr, added .5 then .6, weight 1 each:
			// [.5]: di 1, mw 1, cw 1; [.6 .5]: cw 1 kept. cw 1: .6
			// .5 | cw 0 -> 1: .6 .5 ...
			name:    "lab .5 then .6",
			servers: []srv{{".5", 1}, {".6", 1}},
			steps: []step{
				update(".5"),
				update(".6 .5"),
				picks(".6 .5 .6 .5"),
			},
		},
		{
			name:  "empty",
			steps: []step{update(""), picks("-")},
		},
	})
}

func TestWLC(t *testing.T) {
	// wlc (ip_vs_wlc.c): the first server neither overloaded nor
	// quiesced is the candidate; each later server that is not
	// overloaded replaces it when loh*w(dest) > doh*w(least), strictly.
	// Overhead (ip_vs_dest_conn_overhead in the reference tree) is
	// active<<8 + totalconns = 257*active + inactive.
	runCases(t, "wlc", []schedCase{
		{
			// Each pick opens an active connection (+257).
			// 1: all 0, tie, A.          A=257
			// 2: A 257*2 > 0*1: B; C 0*1 > 0*2 no. B=257
			// 3: A->B (514 > 257) -> C (257*1 > 0*2). C=257
			// 4: A->B (514 > 257); C 257 > 514 no: B. B=514
			// 5: A 257*2 > 514*1 no; C 257 > 257 no: A. A=514
			// 6: B (1028 > 514); C 514 > 514 no: B. B=771
			// 7: B (1028 > 771); C 771 > 514: C. C=514
			// 8: B (1028 > 771); C 771 > 1028 no: B.
			name:    "weights 1 2 1 with growing load",
			servers: []srv{{"A", 1}, {"B", 2}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picksBump("A B C B A B C B"),
			},
		},
		{
			// A 10/0 = 2570, B 0/100 = 100, C 1/0 = 257: B.
			name:    "active outweighs inactive",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				conns("A", 10, 0), conns("B", 0, 100), conns("C", 1, 0),
				picks("B B"),
			},
		},
		{
			// A w3 10/0 = 2570; B w1 3/0 = 771: 2570*1 > 771*3 =
			// 2313, B; C w2 6/10 = 1552: 771*2 = 1542 > 1552 no: B.
			name:    "weighted",
			servers: []srv{{"A", 3}, {"B", 1}, {"C", 2}},
			steps: []step{
				update("A B C"),
				conns("A", 10, 0), conns("B", 3, 0), conns("C", 6, 10),
				picks("B"),
			},
		},
		{
			// A w2 1/0 = 257, B w4 2/0 = 514: 257*4 > 514*2 is
			// 1028 > 1028, false: the earlier one stays, whichever
			// it is.
			name:    "weighted tie keeps earlier",
			servers: []srv{{"A", 2}, {"B", 4}},
			steps: []step{
				conns("A", 1, 0), conns("B", 2, 0),
				update("A B"),
				picks("A"),
				update("B A"),
				picks("B"),
			},
		},
		{
			// Idle servers tie at 0: the list's first, the newest.
			name:    "lab idle tie",
			servers: []srv{{".5", 1}, {".6", 1}},
			steps: []step{
				update(".5"),
				update(".6 .5"),
				picks(".6 .6"),
			},
		},
		{
			// A 1/0 = 256+1 = 257, B 0/256 = 256: B. With the
			// older kernels' active<<8 + inactconns both are 256
			// and A would stay; this pins the reference tree's
			// totalconns formula.
			name:    "active is 257 inactive",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("A", 1, 0), conns("B", 0, 256),
				picks("B"),
				conns("B", 0, 257),
				picks("A"),
			},
		},
		{
			// Z (weight 0) is skipped as the first candidate, and
			// later it cannot win: loh*0 > doh*w never holds.
			name:    "weight 0",
			servers: []srv{{"A", 1}, {"Z", 0}},
			steps: []step{
				update("Z A"),
				conns("A", 5, 0),
				picks("A"),
				update("A Z"),
				picks("A"),
			},
		},
		{
			name:    "overloaded skipped",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("A", 0, 0), conns("B", 9, 0),
				overload(true, "A"),
				picks("B"),
				overload(false, "A"),
				overload(true, "B"),
				conns("A", 9, 0), conns("B", 0, 0),
				picks("A"),
			},
		},
		{
			name:    "none available",
			servers: []srv{{"Z", 0}, {"O", 1}},
			steps: []step{
				update("Z O"),
				overload(true, "O"),
				picks("-"),
				update(""),
				picks("-"),
			},
		},
	})
}

// allNames are the schedulers this package must provide.
var allNames = []string{"rr", "wrr", "wlc", "lc", "sed", "nq", "sh", "dh", "mh", "lblc", "lblcr", "fo", "ovf", "twos"}

func TestRegistry(t *testing.T) {
	if len(Names()) != len(allNames) {
		t.Errorf("Names() = %v, want %v", Names(), allNames)
	}
	for _, n := range allNames {
		s, err := New(n)
		if err != nil {
			t.Fatalf("New(%q): %v", n, err)
		}
		if s.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, s.Name())
		}
		if !slices.Contains(Names(), n) {
			t.Errorf("Names() = %v lacks %q", Names(), n)
		}
		// A fresh scheduler with no Update has no servers.
		if i := s.Pick(&Flow{}); i != -1 {
			t.Errorf("%s: Pick before Update = %d, want -1", n, i)
		}
	}
	if _, err := New("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("New(nope) error = %v, want ErrUnknown", err)
	}
}

// TestIndependentState checks that two schedulers of one kind share no
// state: interleaved picks give each its own sequence.
func TestIndependentState(t *testing.T) {
	for _, n := range allNames {
		if n == "twos" {
			continue // random by design
		}
		a, _ := New(n)
		b, _ := New(n)
		ds := []Dest{newDest("A", 1, 2), newDest("B", 2, 1)}
		a.Update(ds)
		b.Update(ds)
		var ga, gb []int
		for range 6 {
			ga = append(ga, a.Pick(nil))
			ga = append(ga, a.Pick(nil))
			gb = append(gb, b.Pick(nil))
		}
		c, _ := New(n)
		c.Update(ds)
		for i := range gb {
			if want := c.Pick(nil); gb[i] != want {
				t.Fatalf("%s: second scheduler pick %d = %d, want %d (a: %v)", n, i, gb[i], want, ga)
			}
		}
	}
}

// TestConcurrent runs each scheduler as a service would: Update and Pick
// serialised by the caller's lock, while another goroutine changes the
// servers' counters and overload flags without it, as the packet path
// does. The schedulers take no lock of their own; the race detector checks
// that they touch nothing shared beyond the Dest methods.
func TestConcurrent(t *testing.T) {
	for _, n := range allNames {
		t.Run(n, func(t *testing.T) {
			s, _ := New(n)
			all := make([]Dest, 8)
			fakes := make([]*fakeDest, len(all))
			for i := range all {
				fakes[i] = newDest("d"+strconv.Itoa(i), i+1, i%4)
				all[i] = fakes[i]
			}
			s.Update(slices.Clone(all))

			var stop atomic.Bool
			var writer sync.WaitGroup
			writer.Go(func() {
				for i := 0; !stop.Load(); i++ {
					d := fakes[i%len(fakes)]
					d.active.Add(1)
					d.inact.Store(int64(i % 7))
					d.over.Store(i%5 == 0)
				}
			})

			var mu sync.Mutex // the service's lock
			cur := len(all)   // length of the last Update, under mu
			var pickers sync.WaitGroup
			for g := range 4 {
				pickers.Go(func() {
					for i := range 2000 {
						mu.Lock()
						if g == 0 && i%100 == 0 {
							// A new slice each time: the old one
							// stays the scheduler's until now.
							cur = 1 + i/100%len(all)
							s.Update(slices.Clone(all[len(all)-cur:]))
						}
						p, k := s.Pick(nil), cur
						mu.Unlock()
						if p < -1 || p >= k {
							t.Errorf("Pick = %d", p)
						}
					}
				})
			}
			pickers.Wait()
			stop.Store(true)
			writer.Wait()
		})
	}
}
