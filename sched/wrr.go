package sched

// Weighted round-robin, as net/netfilter/ipvs/ip_vs_wrr.c.
//
// The kernel walks the list repeatedly with a current weight threshold cw:
// a pass hands a connection to each available server whose weight is at
// least cw, and every time the walk passes the list head cw drops by di,
// the gcd of the positive weights. When cw would reach 0 or less it starts
// again at mw, the largest weight rounded down so that mw, mw-di, ... ends
// exactly at 1. Over a cycle each server is thus picked weight/di times,
// interleaved with the heavier servers first. The last picked server (cl)
// is where the next walk resumes.

func init() { register("wrr", func() Scheduler { return &wrrScheduler{cl: wrrHead} }) }

// wrrHead stands for the kernel's cl pointing at the list head rather than
// at a server.
const wrrHead = -1

// wrrScheduler is the "wrr" scheduler: the kernel's struct ip_vs_wrr_mark
// plus the list. The caller serialises Update and Pick, so no lock.
type wrrScheduler struct {
	dests []Dest
	cl    int // index of the server picked last, or wrrHead
	cw    int // current weight threshold
	mw    int // max weight adjusted to the gcd: max - (di - 1)
	di    int // gcd of the positive weights, 1 if there are none
}

// Name returns "wrr".
func (s *wrrScheduler) Name() string { return "wrr" }

// Update is the kernel's ip_vs_wrr_dest_changed, which IPVS calls after
// every add, edit and delete of a server, once the list and the weight
// already show the change. It sends the walk back to the head, recomputes
// di and mw, and keeps cw unless it is now too high (or was never set, as
// for the first server), otherwise aligns it to the new di: the walk goes
// on at about the same threshold rather than restarting the cycle.
//
// The kernel's initial state (ip_vs_wrr_init_svc on an empty service) is
// cw = mw = 0, which is this type's state before the first Update, so the
// first Update sets cw = mw as init_svc would.
//
// One Update folds what may have been several kernel operations into one
// dest_changed on the final list; the kernel would have run it once per
// operation on the intermediate lists, which can leave a different cw.
func (s *wrrScheduler) Update(dests []Dest) {
	// The slice is ours until the next Update (see Scheduler), and cl is
	// reset below, so no copy or identity tracking is needed here.
	s.dests = dests
	s.cl = wrrHead
	s.di = gcdWeight(dests)
	s.mw = maxWeight(dests) - (s.di - 1)
	switch {
	case s.cw > s.mw || s.cw == 0:
		s.cw = s.mw
	case s.di > 1:
		// Align cw to the new step so the countdown still lands on
		// 1 (a multiple of di plus one).
		s.cw = (s.cw/s.di)*s.di + 1
	}
}

// Pick is ip_vs_wrr_schedule. Each iteration of the outer loop scans the
// servers after the current one up to the list end; reaching the end
// (passing the head) lowers cw. Two guards bound the search when every
// server is overloaded:
//   - lastPass: the threshold is at its lowest step (cw <= di), so the scan
//     being made accepts any positive weight. If the head is passed after
//     such a scan, or after a full scan that began at the head, every
//     server has been tried at weight >= 1 and the pick fails, leaving cl
//     at the head and cw at mw.
//   - stop: if the walk began at a server (not the head) and cw wrapped
//     around to mw before it reached its lowest step (restarted), the
//     servers after the starting one were tried at weight >= 1 only in an
//     earlier pass; the lowest-step pass then only needs to come back
//     round to the starting server, and failing there leaves cl and cw as
//     they are.
func (s *wrrScheduler) Pick(*Flow) int {
	if s.mw == 0 {
		// No server has a positive weight.
		return -1
	}
	n := len(s.dests)
	last := s.cl
	stop := wrrHead // no stop server yet; wrrHead is never an index
	lastPass, restarted := false, false
	i := s.cl
	for {
		for i++; i < n; i++ {
			d := s.dests[i]
			if !d.Overloaded() && d.Weight() >= s.cw {
				s.cl = i
				return i
			}
			if i == stop {
				// All servers tried at weight >= 1.
				s.cl = i
				return -1
			}
		}
		i = wrrHead // the walk is at the list head
		s.cw -= s.di
		if s.cw <= 0 {
			s.cw = s.mw
			if lastPass || last == wrrHead {
				s.cl = wrrHead
				return -1
			}
			restarted = true
		}
		lastPass = s.cw <= s.di
		if lastPass && restarted && last != wrrHead {
			stop = last
		}
	}
}

// gcdWeight is ip_vs_wrr_gcd_weight: the gcd of the positive weights, or 1
// when there are none so that mw = max - (di - 1) stays the max weight.
func gcdWeight(dests []Dest) int {
	g := 0
	for _, d := range dests {
		if w := d.Weight(); w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
	}
	if g == 0 {
		return 1
	}
	return g
}

// gcd is Euclid's algorithm on positive ints, like the kernel's lib gcd.
func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// maxWeight is ip_vs_wrr_max_weight: the largest weight, 0 if none is
// positive.
func maxWeight(dests []Dest) int {
	m := 0
	for _, d := range dests {
		if w := d.Weight(); w > m {
			m = w
		}
	}
	return m
}
