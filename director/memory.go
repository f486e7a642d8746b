package director

import (
	"runtime/debug"
	"time"
)

// After a flood drains, the Go runtime keeps the heap it grew for the
// flood's entries, and collects and returns it only as it allocates again
// (a GC when the heap reaches its goal, then its background scavenger):
// an idle director would keep it for good. So every shrinkEvery the
// readers' arenas are trimmed (netstack's Host.TrimBuffers), and when the
// table has shrunk by at least shrinkMin entries and to less than half of
// its size at the last release (or its peak since), the memory is handed
// back at once (debug.FreeOSMemory: a GC and a full scavenge, a few ms for
// a small heap), so that RSS follows the table down. A flood's 10,000
// entries draining are handed back in steps (below 5,000, 2,500, 1,250
// and 500 entries or so), the last with the table almost back to where it
// was; a table that only comes and goes by less than half its size costs
// nothing.
const (
	shrinkEvery = 5 * time.Second
	shrinkMin   = 500
)

func (d *Director) returnMemory() {
	tk := time.NewTicker(shrinkEvery)
	defer tk.Stop()
	p := shrinkPolicy{peak: d.NAT.Len()}
	for {
		select {
		case <-d.done:
			return
		case <-tk.C:
		}
		if d.Host != nil {
			// The arenas are outside the heap: a flood's full
			// batches made them resident.
			d.Host.TrimBuffers()
		}
		n := d.NAT.Len()
		if peak := p.peak; p.shrank(n) {
			debug.FreeOSMemory()
			d.log.Info().Int("peak", peak).Int("conns", n).Msg("connection table shrank: memory returned to the OS")
		}
	}
}

// shrinkPolicy decides, from the table's size at each memory check, when
// the heap is to be handed back.
type shrinkPolicy struct {
	peak int // the largest size since the last release
}

// shrank records the table's size n and reports whether to release now.
func (p *shrinkPolicy) shrank(n int) bool {
	if n > p.peak {
		p.peak = n
		return false
	}
	if p.peak-n >= shrinkMin && n < p.peak/2 {
		p.peak = n
		return true
	}
	return false
}
