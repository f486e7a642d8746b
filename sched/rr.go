package sched

// Round-robin, as net/netfilter/ipvs/ip_vs_rr.c.
//
// The kernel keeps one pointer into the circular list svc->destinations: it
// either rests on the list head or on the server picked last. A pick walks
// on from that pointer, wrapping past the head, and stops at the first
// server that is neither overloaded nor quiesced; the walk ends after the
// pointer's own server has been looked at once more. When the pointer's
// server is deleted the pointer falls back to the entry before it (or the
// head), so the walk resumes with the server that followed the deleted one.

func init() { register("rr", func() Scheduler { return &rrScheduler{pos: rrHead} }) }

// rrHead is the position of the list head: the next walk starts at index 0
// and looks at every server exactly once.
const rrHead = -1

// rrScheduler is the "rr" scheduler. Like every Scheduler here it relies on
// the caller serialising Update and Pick (see Scheduler), so it holds no
// lock; its state is only the list copy and the position.
type rrScheduler struct {
	// dests is a private copy of the last Update's list. Update needs the
	// old order to find where the pointer goes when its server is
	// deleted, and the caller is free to reuse its old slice by then.
	dests []Dest
	// pos is the index in dests of the server the kernel's sched_data
	// points to, or rrHead.
	pos int
}

// Name returns "rr".
func (s *rrScheduler) Name() string { return "rr" }

// Update installs the new list and moves the position the way the kernel
// does across list edits: the pointer stays on its server if that server
// is still listed; if it was deleted, ip_vs_rr_del_dest moves it to the
// deleted entry's predecessor, which after several deletions is the
// nearest predecessor that survived, or the head. Additions and weight
// changes do not move it (rr has no add_dest or upd_dest hook).
//
// One Update may fold several kernel operations whose order the kernel
// would have seen; the result is the kernel's when the deletions came
// before the additions, and for the usual one change per Update.
func (s *rrScheduler) Update(dests []Dest) {
	newPos := rrHead
	if s.pos != rrHead {
		cur := s.dests[s.pos]
		if i := indexOf(dests, cur); i >= 0 {
			newPos = i
		} else {
			newPos = s.survivingPredecessor(dests)
		}
	}
	s.dests = append(s.dests[:0], dests...)
	// Drop references past the new length so removed servers can be
	// collected.
	clear(s.dests[len(s.dests):cap(s.dests)])
	s.pos = newPos
}

// survivingPredecessor returns the new index of the closest server before
// s.pos in the old list that is still in dests, or rrHead if none is.
func (s *rrScheduler) survivingPredecessor(dests []Dest) int {
	if s.pos == 0 {
		return rrHead
	}
	at := make(map[Dest]int, len(dests))
	for i, d := range dests {
		at[d] = i
	}
	for i := s.pos - 1; i >= 0; i-- {
		if j, ok := at[s.dests[i]]; ok {
			return j
		}
	}
	return rrHead
}

// Pick walks circularly from the server after the position and returns the
// first available one, moving the position onto it. From the head the walk
// covers the list once; from a server it covers the servers after it, then
// those from the start up to and including itself, so a lone available
// server is picked again. When nothing is available the position is left
// where it was, as the kernel leaves sched_data untouched on failure.
func (s *rrScheduler) Pick(*Flow) int {
	n := len(s.dests)
	for k := 1; k <= n; k++ {
		// From the head (pos -1) this is 0..n-1; from a server it
		// is pos+1..n-1, then 0..pos.
		i := (s.pos + k) % n
		if available(s.dests[i]) {
			s.pos = i
			return i
		}
	}
	return -1
}

// available is the test rr and the first stage of wlc apply: not
// overloaded and not quiesced.
func available(d Dest) bool { return !d.Overloaded() && d.Weight() > 0 }

// indexOf returns the index of d in dests by identity, or -1. Dest values
// are pointers in practice, so == compares identity, as the kernel compares
// list nodes.
func indexOf(dests []Dest, d Dest) int {
	for i, x := range dests {
		if x == d {
			return i
		}
	}
	return -1
}
