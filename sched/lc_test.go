package sched

import "testing"

func TestLC(t *testing.T) {
	// lc (ip_vs_lc.c): one pass over the servers not overloaded with
	// weight != 0; the smallest overhead active<<8 + total wins, compared
	// as unsigned ints, strictly, so the first on ties. Weights do not
	// scale the load.
	runCases(t, "lc", []schedCase{
		{
			// Each pick adds an active connection (+257). All tie at
			// 0: A; then B and C at 0: B; C; all at 257: A ...
			// Weights 1 2 1 change nothing.
			name:    "weights ignored, ties to the first",
			servers: []srv{{"A", 1}, {"B", 2}, {"C", 1}},
			steps: []step{
				update("A B C"),
				picksBump("A B C A B C A"),
			},
		},
		{
			// The newest server is first in the list, so it takes the
			// idle tie.
			name:    "lab .5 then .6",
			servers: []srv{{".5", 1}, {".6", 1}},
			steps: []step{
				update(".5"),
				update(".6 .5"),
				picks(".6 .6"),
			},
		},
		{
			// A 1/0 = 257 against B 0/256 = 256: B. B 0/257 ties
			// with A at 257: A, the first.
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
			// A has 2^23 active connections: 2^23<<8 wraps the int to
			// -2^31, plus total 2^23. The kernel's unsigned loh sees
			// 2^31 + 2^23, more than B's 257, so B; a signed
			// comparison would take A.
			name:    "overhead compared unsigned",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("A", 1<<23, 0), conns("B", 1, 0),
				picks("B"),
			},
		},
		{
			// Z (weight 0) idle and O (overloaded) idle are skipped;
			// A's load does not matter.
			name:    "weight 0 and overloaded skipped",
			servers: []srv{{"Z", 0}, {"O", 1}, {"A", 1}},
			steps: []step{
				update("Z O A"),
				overload(true, "O"),
				conns("A", 50, 50),
				picks("A A"),
				weight("Z", 1),
				picks("Z"),
			},
		},
		{
			name:    "none available",
			servers: []srv{{"Z", 0}, {"O", 1}},
			steps: []step{
				update("Z O"),
				overload(true, "O"),
				picks("- -"),
				update(""),
				picks("-"),
			},
		},
	})
}

func TestSED(t *testing.T) {
	// sed (ip_vs_sed.c): overhead active+1 (inactive ignored) over the
	// weight. First stage: first server not overloaded with weight > 0;
	// second stage: later servers not overloaded replace it when
	// loh*w > doh*lw, strictly.
	runCases(t, "sed", []schedCase{
		{
			// Each pick adds an active connection. Loads as
			// (active+1)/w for A w1, B w2:
			// 1: A 1/1, B 1/2: 1*2 > 1*1: B.          B=1
			// 2: A 1/1, B 2/2: 1*2 > 2*1 no: A.        A=1
			// 3: A 2/1, B 2/2: 2*2 > 2*1: B.           B=2
			// 4: A 2/1, B 3/2: 4 > 3: B.               B=3
			// 5: A 2/1, B 4/2: 4 > 4 no: A.            A=2
			// 6: A 3/1, B 4/2: 6 > 4: B. 7: 6 > 5: B.  B=5
			// 8: A 3/1, B 6/2: 6 > 6 no: A.
			// (wlc would take A first, on the idle tie.)
			name:    "weights 1 2 with growing load",
			servers: []srv{{"A", 1}, {"B", 2}},
			steps: []step{
				update("A B"),
				picksBump("B A B B A B B A"),
			},
		},
		{
			// A 0 active, 1000 inactive: 1; B 1 active: 2. A.
			name:    "inactive ignored",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("A", 0, 1000), conns("B", 1, 0),
				picks("A"),
			},
		},
		{
			// A w2 active 1: 2/2; B w4 active 3: 4/4: 2*4 > 4*2 is
			// false: the first stays, whichever it is.
			name:    "weighted tie keeps earlier",
			servers: []srv{{"A", 2}, {"B", 4}},
			steps: []step{
				conns("A", 1, 0), conns("B", 3, 0),
				update("A B"),
				picks("A"),
				update("B A"),
				picks("B"),
			},
		},
		{
			// Z (weight 0) cannot start the scan, and later cannot
			// win: loh*0 > doh*w is false.
			name:    "weight 0",
			servers: []srv{{"A", 1}, {"Z", 0}},
			steps: []step{
				update("Z A"),
				conns("A", 9, 0),
				picks("A"),
				update("A Z"),
				picks("A"),
			},
		},
		{
			name:    "overloaded skipped, none available",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("B", 9, 0),
				overload(true, "A"),
				picks("B"),
				overload(true, "B"),
				picks("-"),
			},
		},
	})
}

func TestNQ(t *testing.T) {
	// nq (ip_vs_nq.c): one pass over the servers not overloaded with
	// weight != 0. The first with no active connection is taken at once;
	// otherwise the least (active+1)/weight, strictly, first on ties.
	runCases(t, "nq", []schedCase{
		{
			// Each pick adds an active connection. A w1, B w2:
			// 1: A idle: A.                           A=1
			// 2: A 2/1, B idle: B.                    B=1
			// 3: A 2/1, B 2/2: 2*2 > 2*1: B.          B=2
			// 4: 4 > 3: B.                            B=3
			// 5: A 2/1, B 4/2: 4 > 4 no: A.           A=2
			// 6: A 3/1, B 4/2: 6 > 4: B. 7: 6 > 5: B. B=5
			// 8: A 3/1, B 6/2: 6 > 6 no: A.
			name:    "weights 1 2 with growing load",
			servers: []srv{{"A", 1}, {"B", 2}},
			steps: []step{
				update("A B"),
				picksBump("A B B B A B B A"),
			},
		},
		{
			// The first idle server wins even against a heavier
			// idle one later, and over a lighter busy one earlier.
			name:    "first idle wins",
			servers: []srv{{"A", 100}, {"B", 1}, {"C", 100}},
			steps: []step{
				update("A B C"),
				conns("A", 1, 0),
				picks("B"),
				conns("B", 1, 0),
				picks("C"),
			},
		},
		{
			// Idle but quiesced or overloaded servers are skipped;
			// the busy A is the only one left.
			name:    "idle weight 0 and overloaded skipped",
			servers: []srv{{"Z", 0}, {"O", 1}, {"A", 1}},
			steps: []step{
				update("Z O A"),
				overload(true, "O"),
				conns("A", 7, 0),
				picks("A"),
				overload(true, "A"),
				picks("-"),
			},
		},
		{
			// None idle: A w2 3 active: 4/2, B w1 1 active: 2/1: tie,
			// A stays.
			name:    "busy tie keeps earlier",
			servers: []srv{{"A", 2}, {"B", 1}},
			steps: []step{
				update("A B"),
				conns("A", 3, 0), conns("B", 1, 0),
				picks("A"),
			},
		},
	})
}

func TestFO(t *testing.T) {
	// fo (ip_vs_fo.c): the server not overloaded with the highest
	// weight, the running maximum starting at 0 and replaced only when
	// exceeded: first on ties, weight 0 never.
	runCases(t, "fo", []schedCase{
		{
			name:    "failover by weight",
			servers: []srv{{"A", 1}, {"B", 3}, {"C", 3}},
			steps: []step{
				update("A B C"),
				// B and C tie at 3: B, the first, every time;
				// connections do not matter.
				picksBump("B B B"),
				overload(true, "B"),
				picks("C"),
				overload(true, "C"),
				picks("A"),
				overload(true, "A"),
				picks("-"),
				overload(false, "A B C"),
				weight("A", 5),
				picks("A"),
			},
		},
		{
			// Added the other way round: C first on the tie.
			name:    "tie follows list order",
			servers: []srv{{"A", 1}, {"B", 3}, {"C", 3}},
			steps: []step{
				update("C B A"),
				picks("C"),
			},
		},
		{
			name:    "all weight 0",
			servers: []srv{{"A", 0}, {"B", 0}},
			steps: []step{
				update("A B"),
				picks("-"),
				weight("B", 1),
				picks("B"),
			},
		},
	})
}

func TestOVF(t *testing.T) {
	// ovf (ip_vs_ovf.c): among the servers not overloaded, with weight
	// > 0 and no more active connections than their weight, the first
	// with the highest weight.
	runCases(t, "ovf", []schedCase{
		{
			// A w2 takes connections while active <= 2: at 0, 1, 2
			// (a server at exactly its weight is still eligible).
			// At 3 it overflows to B w1, which takes two (0, 1);
			// then nothing is left.
			name:    "overflow",
			servers: []srv{{"A", 2}, {"B", 1}},
			steps: []step{
				update("A B"),
				picksBump("A A A B B - -"),
				// A connection of A closes: back to A.
				conns("A", 2, 1),
				picks("A"),
			},
		},
		{
			name:    "tie follows list order, weight 0 and overloaded skipped",
			servers: []srv{{"A", 3}, {"B", 3}, {"Z", 0}},
			steps: []step{
				update("Z A B"),
				picks("A"),
				update("Z B A"),
				picks("B"),
				overload(true, "B"),
				picks("A"),
				overload(true, "A"),
				picks("-"),
			},
		},
	})
}
