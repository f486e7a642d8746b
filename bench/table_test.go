package bench

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

const (
	tablePktLen    = 40   // IPv4 + TCP headers, no payload
	tableLookups   = 4096 // distinct flows the lookup benchmark cycles through
	tableMaxConns  = 4 << 20
	tableMinInsert = 256 // smallest pool of new flows for the insert benchmark
)

var (
	tableVIP = nattest.AP("172.16.1.100:80")
	tableRS  = nattest.AP("172.16.1.5:80")
	// The population and the lookups run at tableNow; the insert
	// benchmark's new flows are made a day earlier, so that a sweep half a
	// day before tableNow expires them (SYN_RECV: 1 minute) and nothing
	// else (every population flow expires after tableNow).
	tableNow      = natNow
	tableInsertAt = tableNow - int64(24*time.Hour)
	tableSweepAt  = tableNow - int64(12*time.Hour)
)

// tableFixture is a table holding n connections, flows 0..n-1 (see
// flowClient), shared by the lookup and insert benchmarks of its size.
type tableFixture struct {
	t            *nat.Table
	n            int
	bytesPerFlow float64
	took         time.Duration
}

// flowPackets builds one packet (flags) for each of flows first..first+n-1
// into one slab, tablePktLen bytes each.
func flowPackets(tmpl []byte, first, n int, flow func(i int) int) []byte {
	slab := make([]byte, n*tablePktLen)
	for j := range n {
		pkt := slab[j*tablePktLen : (j+1)*tablePktLen]
		copy(pkt, tmpl)
		a, port := flowClient(flow(first + j))
		setClient4(pkt, a, port)
	}
	return slab
}

func tableTemplate(flags uint8) []byte {
	return nattest.Build(nattest.Seg{Src: flowClientAddrPort(0), Dst: tableVIP, Proto: 6, Flags: flags, Seq: 1})
}

// populate makes the table of n connections, opened by SYNs built in one
// reused buffer, and measures the heap they take.
func populate(b *testing.B, n int) *tableFixture {
	b.Helper()
	start := time.Now()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	t := newNATTable(b, nat.ProtoTCP, tableVIP, tableRS.Addr(), tableMaxConns)
	// The table's own cost: its n connections stay half-open (a SYN
	// each), and past synproxy_backlog of them the SYN proxy's automatic
	// mode would answer the rest with cookies and make no entries.
	t.SetSynProxy(nat.SynProxyOff)
	syn := tableTemplate(nattest.SYN)
	buf := make([]byte, len(syn))
	var p nat.Packet
	// Check the packet builder once: a bad checksum would make every SYN
	// a drop.
	copy(buf, syn)
	a, port := flowClient(n / 2)
	setClient4(buf, a, port)
	if nat.Parse(buf, &p) != nat.DropNone || !p.VerifyL4Checksum() {
		b.Fatal("setClient4 built a bad packet")
	}
	for i := range n {
		copy(buf, syn)
		a, port := flowClient(i)
		setClient4(buf, a, port)
		if r := t.Process(buf, &p, tableNow); r.Verdict != nat.Forward {
			b.Fatalf("flow %d: verdict %v reason %v", i, r.Verdict, r.Reason)
		}
	}
	if t.Len() != n {
		b.Fatalf("table holds %d connections, want %d", t.Len(), n)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(t)
	return &tableFixture{
		t:            t,
		n:            n,
		bytesPerFlow: float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n),
		took:         time.Since(start),
	}
}

// BenchmarkTable measures the connection table at 1k, 100k and 1M
// connections: lookup is Process of a packet of a random existing flow,
// insert is Process of the SYN of a new flow.
func BenchmarkTable(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}
	// Populations are kept for the whole benchmark: the framework runs
	// each sub-benchmark several times, with growing b.N.
	fixtures := map[int]*tableFixture{}
	fixture := func(b *testing.B, n int) *tableFixture {
		if f := fixtures[n]; f != nil {
			return f
		}
		f := populate(b, n)
		b.Logf("populated %d connections in %v: %.0f B/flow", n, f.took.Round(time.Millisecond), f.bytesPerFlow)
		fixtures[n] = f
		return f
	}
	skip := func(b *testing.B, n int) {
		if n >= 1_000_000 && testing.Short() {
			b.Skip("1M connections: not with -short")
		}
	}

	b.Run("lookup", func(b *testing.B) {
		for _, s := range sizes {
			b.Run(s.name, func(b *testing.B) {
				skip(b, s.n)
				f := fixture(b, s.n)
				rng := rand.New(rand.NewPCG(uint64(s.n), 1))
				pkts := flowPackets(tableTemplate(nattest.ACK), 0, tableLookups, func(int) int { return rng.IntN(s.n) })
				buf := make([]byte, tablePktLen)
				var p nat.Packet
				misses := 0
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					j := i & (tableLookups - 1)
					copy(buf, pkts[j*tablePktLen:(j+1)*tablePktLen])
					if f.t.Process(buf, &p, tableNow).Verdict != nat.Forward {
						misses++
					}
				}
				b.StopTimer()
				if misses > 0 {
					b.Fatalf("%d of %d lookups did not find their connection", misses, b.N)
				}
				if f.t.Len() != s.n {
					b.Fatalf("table holds %d connections, want %d", f.t.Len(), s.n)
				}
				b.ReportMetric(f.bytesPerFlow, "B/flow")
			})
		}
	})

	b.Run("insert", func(b *testing.B) {
		for _, s := range sizes {
			b.Run(s.name, func(b *testing.B) {
				skip(b, s.n)
				f := fixture(b, s.n)
				// A pool of new flows n..n+pool-1; once all are in,
				// an untimed sweep expires them and the pool starts
				// again, so the table stays between n and n+pool.
				pool := max(s.n/4, tableMinInsert)
				pkts := flowPackets(tableTemplate(nattest.SYN), s.n, pool, func(i int) int { return i })
				buf := make([]byte, tablePktLen)
				var p nat.Packet
				fails := 0
				restore := func() {
					if got := f.t.SweepAll(tableSweepAt); got > pool {
						b.Fatalf("sweep removed %d connections, more than the %d inserted", got, pool)
					}
					if f.t.Len() != s.n {
						b.Fatalf("table holds %d connections after the sweep, want %d", f.t.Len(), s.n)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i, j := 0, 0; i < b.N; i++ {
					if j == pool {
						b.StopTimer()
						restore()
						j = 0
						b.StartTimer()
					}
					copy(buf, pkts[j*tablePktLen:(j+1)*tablePktLen])
					if f.t.Process(buf, &p, tableInsertAt).Verdict != nat.Forward {
						fails++
					}
					j++
				}
				b.StopTimer()
				if fails > 0 {
					b.Fatalf("%d of %d inserts failed", fails, b.N)
				}
				restore()
				b.ReportMetric(f.bytesPerFlow, "B/flow")
			})
		}
	})
}
