package metrics

import (
	"runtime"
	"runtime/metrics"
)

// The Go runtime's series are read through runtime/metrics, not
// runtime.ReadMemStats. ReadMemStats stops the world and flushes every
// P's cached spans back to the central lists (readmemstats_m calls
// flushallmcaches in runtime/mstats.go): each size class the director has
// allocated from then has a span set, which takes a spine and a block
// (6 KB) of the runtime's off-heap metadata, kept for the life of the
// process. On an idle director the first scrape so added 0.6-0.8 MB to
// RssAnon (bench/memdiag: 9 span sets before, 91 after; docs/perf.md),
// and every scrape stopped the packet path. runtime/metrics reads the same figures
// from the runtime's consistent statistics, without either.
var goSamples = []string{
	"/memory/classes/heap/objects:bytes", // MemStats.HeapAlloc
	"/memory/classes/heap/unused:bytes",  // HeapInuse - HeapAlloc
	"/memory/classes/total:bytes",        // Sys
	"/gc/cycles/total:gc-cycles",         // NumGC
}

// writeGoRuntime writes the Go runtime's series, with the names and
// meanings of the MemStats fields they had.
func writeGoRuntime(m *writer) {
	s := make([]metrics.Sample, len(goSamples))
	for i, n := range goSamples {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0 // not this runtime's metric
		}
		return s[i].Value.Uint64()
	}
	heapAlloc, heapUnused, sys, gcs := v(0), v(1), v(2), v(3)
	m.head("go_goroutines", "gauge", "number of goroutines")
	m.val("go_goroutines", "", uint64(runtime.NumGoroutine()))
	m.head("go_memstats_heap_alloc_bytes", "gauge", "heap bytes allocated and in use")
	m.val("go_memstats_heap_alloc_bytes", "", heapAlloc)
	m.head("go_memstats_heap_inuse_bytes", "gauge", "heap bytes in in-use spans")
	m.val("go_memstats_heap_inuse_bytes", "", heapAlloc+heapUnused)
	m.head("go_memstats_sys_bytes", "gauge", "bytes obtained from the OS")
	m.val("go_memstats_sys_bytes", "", sys)
	m.head("go_gc_cycles_total", "counter", "completed GC cycles")
	m.val("go_gc_cycles_total", "", gcs)
}
