package director

import (
	"runtime/debug"
	"time"
)

// After a flood drains, the Go runtime keeps the heap it grew for the
// flood's entries and returns it to the OS only slowly (its background
// scavenger). When the table has shrunk by at least shrinkMin entries and
// to less than half of its peak, the memory is handed back at once
// (debug.FreeOSMemory: a GC and a full scavenge, a few ms for a small
// heap), so that RSS follows the table down.
const (
	shrinkEvery = 5 * time.Second
	shrinkMin   = 5000
)

func (d *Director) returnMemory() {
	tk := time.NewTicker(shrinkEvery)
	defer tk.Stop()
	peak := d.NAT.Len()
	for {
		select {
		case <-d.done:
			return
		case <-tk.C:
		}
		if d.Host != nil {
			// The readers' arenas first: a flood's full batches
			// made them resident, and they are outside the heap.
			d.Host.TrimBuffers()
		}
		n := d.NAT.Len()
		if n > peak {
			peak = n
			continue
		}
		if peak-n >= shrinkMin && n < peak/2 {
			debug.FreeOSMemory()
			d.log.Info().Int("peak", peak).Int("conns", n).Msg("connection table shrank: memory returned to the OS")
			peak = n
		}
	}
}
