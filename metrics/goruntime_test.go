package metrics

import (
	"bytes"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
)

// goValues parses writeGoRuntime's output.
func goValues(t *testing.T) map[string]uint64 {
	t.Helper()
	var b bytes.Buffer
	writeGoRuntime(&writer{w: &b, seen: map[string]bool{}})
	v := map[string]uint64{}
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		name, num, _ := strings.Cut(l, " ")
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		v[name] = n
	}
	return v
}

// The series mean what they meant when they came from runtime.MemStats.
func TestGoRuntimeMatchesMemStats(t *testing.T) {
	runtime.GC()
	v := goValues(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	near := func(name string, got, want uint64) {
		t.Helper()
		d := int64(got) - int64(want)
		if d < -256<<10 || d > 256<<10 {
			t.Errorf("%s = %d, MemStats says %d", name, got, want)
		}
	}
	near("go_memstats_heap_alloc_bytes", v["go_memstats_heap_alloc_bytes"], ms.HeapAlloc)
	near("go_memstats_heap_inuse_bytes", v["go_memstats_heap_inuse_bytes"], ms.HeapInuse)
	near("go_memstats_sys_bytes", v["go_memstats_sys_bytes"], ms.Sys)
	if v["go_gc_cycles_total"] != uint64(ms.NumGC) {
		t.Errorf("go_gc_cycles_total = %d, NumGC %d", v["go_gc_cycles_total"], ms.NumGC)
	}
	if v["go_goroutines"] == 0 {
		t.Error("go_goroutines = 0")
	}
}

// A scrape does not stop the world (ReadMemStats did, and flushed every
// P's cached spans: see goruntime.go). Stops for other reasons than GC
// are counted in /sched/pauses/total/other:seconds.
func TestGoRuntimeNoStopTheWorld(t *testing.T) {
	stops := func() uint64 {
		s := []metrics.Sample{{Name: "/sched/pauses/total/other:seconds"}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindFloat64Histogram {
			t.Skip("no /sched/pauses/total/other:seconds in this runtime")
		}
		var n uint64
		for _, c := range s[0].Value.Float64Histogram().Counts {
			n += c
		}
		return n
	}
	before := stops()
	for range 10 {
		goValues(t)
	}
	if d := stops() - before; d != 0 {
		t.Fatalf("10 scrapes stopped the world %d times", d)
	}
}
