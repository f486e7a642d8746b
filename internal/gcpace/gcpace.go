// Package gcpace sizes the garbage collector's GOGC to the live heap.
//
// GOGC lets the heap grow by a percentage of what is live before the next
// collection. tunvs's live heap is mostly its connection table, and the
// packet path allocates nothing, so a large heap is a large table, and
// headroom in proportion to it is memory held for garbage that is not
// being made: at a million connections (about 128 MB live) GOGC 50 held
// 64 MB more. Run keeps the headroom under a fixed amount instead once the
// heap is large, and leaves GOGC as it was while it is small, where the
// collector's cost, not memory, is what a lower GOGC would change.
package gcpace

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// MinPercent is the lowest GOGC Run sets: below it a collection would
// start after a few MB of allocation however large the heap, and each
// marks the whole table.
const MinPercent = 10

// Percent is the GOGC for a live heap of live bytes: base, or less when
// base would let the heap grow by more than maxHeadroom, never below
// MinPercent (or base, if that is lower).
func Percent(live uint64, base int, maxHeadroom uint64) int {
	if base <= 0 || live == 0 || live*uint64(base)/100 <= maxHeadroom {
		return base
	}
	return max(int(maxHeadroom*100/live), min(MinPercent, base))
}

// Every is how often Run looks at the live heap: often enough to follow a
// table filling at 100k connections a second (about 13 MB a second).
const Every = time.Second

// Run sets GOGC by Percent from the live heap after each collection,
// until ctx is done; base is the GOGC to keep while the heap is small.
func Run(ctx context.Context, base int, maxHeadroom uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	cur := base
	tk := time.NewTicker(Every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return // not this runtime's metric: leave GOGC alone
		}
		if p := Percent(s[0].Value.Uint64(), base, maxHeadroom); p != cur {
			debug.SetGCPercent(p)
			cur = p
		}
	}
}
