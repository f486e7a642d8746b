package sched

// Weighted failover (ip_vs_fo.c) and weighted overflow (ip_vs_ovf.c).
//
// Both send every new connection to the heaviest server, the first in list
// order among equal weights. fo skips only overloaded and quiesced
// servers; ovf also skips a server whose active connections exceed its
// weight, so that connections overflow to the next heaviest once the
// heaviest holds more than weight active ones.

func init() {
	register("fo", func() Scheduler { return &foScheduler{} })
	register("ovf", func() Scheduler { return &ovfScheduler{} })
}

// foScheduler is the "fo" scheduler; no state besides the list.
type foScheduler struct{ dests []Dest }

// Name returns "fo".
func (s *foScheduler) Name() string { return "fo" }

// Update keeps the new list.
func (s *foScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_fo_schedule: the highest weight among the servers not
// overloaded. The running maximum starts at 0 and must be strictly
// exceeded, so weight 0 never wins and the first of equal weights stays.
func (s *foScheduler) Pick(*Flow) int {
	best, hw := -1, 0
	for i, d := range s.dests {
		if w := d.Weight(); !d.Overloaded() && w > hw {
			best, hw = i, w
		}
	}
	return best
}

// ovfScheduler is the "ovf" scheduler; no state besides the list.
type ovfScheduler struct{ dests []Dest }

// Name returns "ovf".
func (s *ovfScheduler) Name() string { return "ovf" }

// Update keeps the new list.
func (s *ovfScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_ovf_schedule: among the servers neither overloaded,
// quiesced, nor holding more active connections than their weight, the
// first with the highest weight. A server at exactly weight active
// connections is still eligible (the kernel skips only active > weight).
func (s *ovfScheduler) Pick(*Flow) int {
	best, hw := -1, 0
	for i, d := range s.dests {
		w := d.Weight()
		if d.Overloaded() || d.ActiveConns() > w || w == 0 {
			continue
		}
		if best < 0 || w > hw {
			best, hw = i, w
		}
	}
	return best
}
