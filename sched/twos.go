package sched

import "math/rand/v2"

// Weighted random two choices, as net/netfilter/ipvs/ip_vs_twos.c (present
// in the reference tree, though Debian's 6.1 config leaves
// CONFIG_IP_VS_TWOS unset).
//
// Two servers are drawn at random, each with probability proportional to
// its weight, and the one with the lower overhead per weight wins. The
// kernel draws from its own random generator, so no userspace
// reimplementation can choose the same server for the same connection;
// what is reproduced is the rule given the two random numbers, which tests
// inject.

func init() {
	register("twos", func() Scheduler { return &twosScheduler{rand: twosRand} })
}

// twosRand stands for the kernel's prandom_u32_max(n): uniform in [0, n),
// here a 32-bit random number scaled by multiply-and-shift.
func twosRand(n uint32) uint32 { return uint32(uint64(rand.Uint32()) * uint64(n) >> 32) }

// twosScheduler is the "twos" scheduler. The caller serialises Update and
// Pick, so no lock.
type twosScheduler struct {
	dests []Dest
	// rand returns a number in [0, n); tests replace it.
	rand func(n uint32) uint32
}

// Name returns "twos".
func (s *twosScheduler) Name() string { return "twos" }

// Update keeps the new list.
func (s *twosScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_twos_schedule. The sum of the positive weights of the
// servers not overloaded is computed, plus one; two numbers r1, r2 are
// drawn from [0, sum], and the walk subtracts each available server's
// weight from both, taking a server as choice i when ri first drops to 0
// or below. Since ri <= sum of the weights both are always found. The
// second choice replaces the first when w2*oh1 > w1*oh2 in the kernel's
// 32-bit int arithmetic (which can wrap with huge counts), so the first
// wins ties.
func (s *twosScheduler) Pick(*Flow) int {
	total := int32(0)
	last := -1 // the kernel's initial choice1: the last available server
	for i, d := range s.dests {
		if !d.Overloaded() {
			if w := d.Weight(); w > 0 {
				total += int32(w)
				last = i
			}
		}
	}
	if last < 0 {
		return -1
	}
	total++
	r1 := int32(s.rand(uint32(total)))
	r2 := int32(s.rand(uint32(total)))

	c1, c2 := last, -1
	w1 := int32(-1)
	var w2, oh1, oh2 int32
	for i, d := range s.dests {
		if d.Overloaded() {
			continue
		}
		w := int32(d.Weight())
		if w <= 0 {
			continue
		}
		r1 -= w
		r2 -= w
		if r1 <= 0 && w1 == -1 {
			c1, w1, oh1 = i, w, connOverhead(d)
		}
		if r2 <= 0 && c2 < 0 {
			c2, w2, oh2 = i, w, connOverhead(d)
		}
		if w1 != -1 && c2 >= 0 {
			break
		}
	}
	if c2 >= 0 && w2*oh1 > w1*oh2 {
		return c2
	}
	return c1
}
