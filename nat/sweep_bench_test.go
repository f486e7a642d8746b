package nat_test

import (
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// BenchmarkSweepLive is what the expiry costs a table of live entries
// that none of the sweeps removes: the 27,000 connections in TIME_WAIT
// that make compare's new-connections workload leaves, as RunExpiry
// walks them, the whole table once a second. ns/entry is per entry and
// walk.
func BenchmarkSweepLive(b *testing.B) {
	tb := nat.New(nat.Config{})
	// Half-open entries, one SYN each, stand for them: past
	// synproxy_backlog the SYN proxy's automatic mode would make none.
	tb.SetSynProxy(nat.SynProxyOff)
	twoServers("rr", 6)(tb)
	var p nat.Packet
	const n = 27000
	for i := range n {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(1024+i%50000))
		tb.Process(nattest.TCP(c, vip, S, 0), &p, 0)
	}
	if tb.Len() != n {
		b.Fatalf("%d connections, want %d", tb.Len(), n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if tb.SweepAll(1) != 0 {
			b.Fatal("a live entry was swept")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}
