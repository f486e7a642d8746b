package nat_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
)

// Sweep and ExpireDest report the connections they removed, not the ones
// they looked at (issue 14: "Sweep returns candidates, not removals"):
// racing over the same expired connections, their counts add up to the
// number there were.
func TestSweepCountsRemovals(t *testing.T) {
	for round := range 20 {
		e := newEnv(t, nat.Config{}, twoServers("rr", 6))
		const n = 2000
		for i := range n {
			e.in(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1000), S)
		}
		if e.tb.Len() != n {
			t.Fatalf("%d connections, want %d", e.tb.Len(), n)
		}
		dests := e.tb.Services()[0].Dests()
		e.advance(time.Hour)
		var swept, expired int
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			swept = e.tb.SweepAll(e.now)
		}()
		go func() {
			defer wg.Done()
			for _, d := range dests {
				expired += e.tb.ExpireDest(d)
			}
		}()
		wg.Wait()
		if e.tb.Len() != 0 || swept+expired != n {
			t.Fatalf("round %d: swept %d + expired %d = %d, want %d (left %d)", round, swept, expired, swept+expired, n, e.tb.Len())
		}
	}
}

// RunExpiry sweeps the whole table (every shard, not a number of them the
// caller has to know) and stops with its context.
func TestRunExpiry(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	for i := range 500 {
		e.in(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 1000), S)
	}
	e.advance(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.tb.RunExpiry(ctx, func() int64 { return e.now })
	}()
	// Each tick sweeps a quarter of the shards: four ticks empty it.
	for e.tb.Len() != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
