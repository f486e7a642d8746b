package lab

import (
	"context"
	"testing"
	"time"
)

// The in-process lab as `tunvs lab` runs it (the bypass on) and with
// --bypass=false (every packet through the director's gVisor forwarding):
//
//	go test -run '^$' -bench Lab -benchmem ./lab/
//
// The client, the real servers and the switches are in the same process
// as the director and share its two cores, so these figures are the
// whole lab's cost, not the director's alone; allocs/op counts every
// host's allocations (the gVisor hosts of the client and the real server
// allocate for every packet; the director's bypass does not, see
// TestLabBypassAllocatesNothing).

// labModes are the director's two ways.
var labModes = []struct {
	name     string
	noBypass bool
}{{"bypass", false}, {"stack", true}}

// BenchmarkLabBulk is one TCP connection from the client to the VIP
// through the director to the real server, as iperf3 makes it: 64 KiB
// written per op, the clock stopped once the real server has read every
// byte. MB/s is the transfer's rate.
func BenchmarkLabBulk(b *testing.B) {
	for _, m := range labModes {
		b.Run(m.name, func(b *testing.B) {
			l, got := bulkLab(b, Config{NoBypass: m.noBypass})
			// The first connection resolves the MACs.
			sendBulk(b, l, got, 1, 1<<10)
			const size = 64 << 10
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			sendBulk(b, l, got, b.N, size)
		})
	}
}

// BenchmarkLabNewConn is one HTTP GET from the client to the VIP per op,
// each on a new TCP connection (as lab.Get, and curl, make them): the
// handshake, the request, the answer and the close, through the director
// both ways. req/s is the rate.
func BenchmarkLabNewConn(b *testing.B) {
	for _, m := range labModes {
		b.Run(m.name, func(b *testing.B) {
			l, err := New(Config{NoBypass: m.noBypass})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			get := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := l.Get(ctx); err != nil {
					b.Fatal(err)
				}
			}
			get() // ARP and the first connection, untimed
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
