package netstack

import (
	"runtime"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

var sink []any

// sizeClassOf is the size of the allocator's size class new() objects
// are allocated from: the class whose Mallocs grew by about n while n of
// them were made (runtime.MemStats.BySize).
func sizeClassOf(t *testing.T, n int, new func() any) uint32 {
	t.Helper()
	var before, after runtime.MemStats
	sink = make([]any, 0, n)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		sink = append(sink, new())
	}
	runtime.ReadMemStats(&after)
	sink = nil
	for i := range after.BySize {
		if d := after.BySize[i].Mallocs - before.BySize[i].Mallocs; d >= uint64(n) && d < uint64(n)+uint64(n)/10 {
			return after.BySize[i].Size
		}
	}
	t.Fatalf("no size class grew by %d", n)
	return 0
}

// The route cache's entries are not in the connections' size class (see
// routeEntry): a flood allocates one of each per SYN, and the cache's
// survivors would keep the flood's spans.
func TestRouteEntrySizeClass(t *testing.T) {
	const n = 4096
	conn := sizeClassOf(t, n, func() any { return new(nat.Conn) })
	route := sizeClassOf(t, n, func() any { return new(routeEntry) })
	t.Logf("nat.Conn in the %d-byte class, routeEntry in the %d-byte class", conn, route)
	if conn == route {
		t.Fatalf("routeEntry and nat.Conn share the %d-byte size class", conn)
	}
}
