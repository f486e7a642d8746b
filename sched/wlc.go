package sched

// Weighted least-connection, as net/netfilter/ipvs/ip_vs_wlc.c.
//
// The load of a server is its connection overhead divided by its weight;
// the least loaded server wins, the earliest in list order on ties. The
// kernel avoids division by comparing h1*w2 > h2*w1 in 64 bits.

func init() { register("wlc", func() Scheduler { return &wlcScheduler{} }) }

// wlcScheduler is the "wlc" scheduler. It has no state of its own besides
// the list: every pick reads the live counters. The caller serialises
// Update and Pick, so no lock.
type wlcScheduler struct {
	dests []Dest
}

// Name returns "wlc".
func (s *wlcScheduler) Name() string { return "wlc" }

// Update keeps the new list; wlc has no position to carry over.
func (s *wlcScheduler) Update(dests []Dest) { s.dests = dests }

// Pick is ip_vs_wlc_schedule. The first stage finds the first server that
// is neither overloaded nor quiesced. The second stage looks only at the
// servers after it and skips only overloaded ones: a quiesced server
// (weight 0) there can never win, because its side of the comparison is
// loh*0 = 0, which is not greater than doh*w for a non-negative overhead.
// The comparison is strict, so on equal load the earlier server stays.
func (s *wlcScheduler) Pick(*Flow) int { return wlcLeast(s.dests) }

// wlcLeast is the two-stage least-load scan of wlc, which lblc and lblcr
// also use to choose a new server (__ip_vs_lblc_schedule,
// __ip_vs_lblcr_schedule are the same loop).
func wlcLeast(dests []Dest) int {
	least := -1
	for i, d := range dests {
		if available(d) {
			least = i
			break
		}
	}
	if least < 0 {
		return -1
	}
	lw := int64(dests[least].Weight())
	loh := int64(connOverhead(dests[least]))
	for i := least + 1; i < len(dests); i++ {
		d := dests[i]
		if d.Overloaded() {
			continue
		}
		dw := int64(d.Weight())
		doh := int64(connOverhead(d))
		if loh*dw > doh*lw {
			least, loh, lw = i, doh, dw
		}
	}
	return least
}

// connOverhead is ip_vs_dest_conn_overhead from include/net/ip_vs.h in the
// reference tree (linux-source-6.1 as unpacked here): activeconns<<8 plus
// totalconns, where totalconns counts active and inactive connections
// together. The kernel's ipvsadm-visible inactive count is
// max(totalconns - activeconns, 0) (ip_vs_dest_inactconns), so totalconns
// is rebuilt as active + inactive, and an active connection weighs 257
// inactive ones. (Older kernels add inactconns instead, weighing 256.)
//
// The arithmetic is int32 to match the kernel's int: with absurd counts it
// wraps the same way the kernel's would.
func connOverhead(d Dest) int32 {
	a := int32(d.ActiveConns())
	total := a + int32(d.InactConns())
	return a<<8 + total
}
