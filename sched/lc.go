package sched

// Least-connection (ip_vs_lc.c), shortest expected delay (ip_vs_sed.c) and
// never queue (ip_vs_nq.c).
//
// All three read the live counters on every pick and keep no state besides
// the list. They differ in the load measure and the tie rules:
//   - lc ignores weights beyond "> 0": it takes the smallest overhead
//     (active<<8 + total, as wlc), compared unsigned, first on ties.
//   - sed weighs active+1 against the weight, like wlc's two-stage scan:
//     first server not overloaded with weight > 0, then any later server
//     not overloaded replaces it when strictly less loaded.
//   - nq is sed, except that the first available idle server (no active
//     connection) wins at once, and the scan is one stage: every candidate
//     must have weight > 0.

func init() {
	register("lc", func() Scheduler { return &lcScheduler{} })
	register("sed", func() Scheduler { return &sedScheduler{} })
	register("nq", func() Scheduler { return &nqScheduler{} })
}

// lcScheduler is the "lc" scheduler. The caller serialises Update and
// Pick, so no lock.
type lcScheduler struct{ dests []Dest }

// Name returns "lc".
func (s *lcScheduler) Name() string { return "lc" }

// Update keeps the new list.
func (s *lcScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_lc_schedule: one pass over the available servers (not
// overloaded, weight not 0), keeping the first with the smallest
// overhead. The kernel holds the overhead in an unsigned int, so a
// wrapped (negative) int overhead compares as huge; the uint32 conversion
// keeps that.
func (s *lcScheduler) Pick(*Flow) int {
	least := -1
	var loh uint32
	for i, d := range s.dests {
		if !available(d) {
			continue
		}
		doh := uint32(connOverhead(d))
		if least < 0 || doh < loh {
			least, loh = i, doh
		}
	}
	return least
}

// sedOverhead is the expected delay numerator of sed and nq: the active
// connections plus the one being scheduled. Inactive connections do not
// count. int32 as the kernel's int.
func sedOverhead(d Dest) int32 { return int32(d.ActiveConns()) + 1 }

// sedScheduler is the "sed" scheduler.
type sedScheduler struct{ dests []Dest }

// Name returns "sed".
func (s *sedScheduler) Name() string { return "sed" }

// Update keeps the new list.
func (s *sedScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_sed_schedule, the same two stages as wlc with
// (active+1)/weight as the load. In the second stage a quiesced server is
// not skipped explicitly but cannot win: loh*0 > doh*w is false for a
// positive doh.
func (s *sedScheduler) Pick(*Flow) int {
	least := -1
	for i, d := range s.dests {
		if available(d) {
			least = i
			break
		}
	}
	if least < 0 {
		return -1
	}
	lw := int64(s.dests[least].Weight())
	loh := int64(sedOverhead(s.dests[least]))
	for i := least + 1; i < len(s.dests); i++ {
		d := s.dests[i]
		if d.Overloaded() {
			continue
		}
		dw := int64(d.Weight())
		doh := int64(sedOverhead(d))
		if loh*dw > doh*lw {
			least, loh, lw = i, doh, dw
		}
	}
	return least
}

// nqScheduler is the "nq" scheduler.
type nqScheduler struct{ dests []Dest }

// Name returns "nq".
func (s *nqScheduler) Name() string { return "nq" }

// Update keeps the new list.
func (s *nqScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_nq_schedule: one pass over the available servers; the
// first one with no active connection is returned at once, otherwise the
// least (active+1)/weight, strictly less, so the first on ties.
func (s *nqScheduler) Pick(*Flow) int {
	least := -1
	var loh, lw int64
	for i, d := range s.dests {
		if !available(d) {
			continue
		}
		if d.ActiveConns() == 0 {
			return i
		}
		dw := int64(d.Weight())
		doh := int64(sedOverhead(d))
		if least < 0 || loh*dw > doh*lw {
			least, loh, lw = i, doh, dw
		}
	}
	return least
}
