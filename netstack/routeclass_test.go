package netstack

import (
	"runtime"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

var sink []any

// sizeClassOf is the size of the allocator's size class new() objects
// are allocated from: the class whose Mallocs grew most while n of them
// were made (runtime.MemStats.BySize).
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
	// The class that grew most (other goroutines may allocate meanwhile).
	best, most := uint32(0), uint64(0)
	for i := range after.BySize {
		if d := after.BySize[i].Mallocs - before.BySize[i].Mallocs; d > most {
			best, most = after.BySize[i].Size, d
		}
	}
	if most < uint64(n) {
		t.Fatalf("no size class grew by %d (at most %d)", n, most)
	}
	return best
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
