package sched

import (
	"net/netip"
	"strconv"
	"testing"
)

// benchDests makes n servers with mixed weights (1..5, one in seven
// quiesced), one in eleven overloaded, and uneven connection counts, so
// every scheduler takes its skipping and comparing paths.
func benchDests(n int) []Dest {
	ds := make([]Dest, n)
	for i := range ds {
		w := 1 + i%5
		if i%7 == 3 {
			w = 0
		}
		d := newDest("b"+strconv.Itoa(i), i+1, w)
		d.active.Store(int64(i * 37 % 101))
		d.inact.Store(int64(i * 53 % 211))
		d.over.Store(i%11 == 5)
		ds[i] = d
	}
	return ds
}

var benchSizes = []int{2, 64, 1024}

// benchFlow is the connection every benchmark pick schedules: the
// hashing schedulers hash its addresses, lblc and lblcr find its
// destination's entry after the first pick.
var benchFlow = Flow{
	Proto: 6, Src: netip.MustParseAddr("10.1.2.3"), SrcPort: 40000,
	Dst: netip.MustParseAddr("192.0.2.10"), DstPort: 80,
}

// BenchmarkPick measures one Pick per iteration on a fixed list, for every
// registered scheduler. wlc, lc, sed, nq, fo, ovf and twos scan the whole
// list every time; rr and wrr are amortised over their cycles; sh, dh and
// mh are a table lookup; lblc and lblcr a cache hit plus the overload
// scan.
func BenchmarkPick(b *testing.B) {
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					// With sh-fallback/mh-fallback and -port: a
					// hashed flow whose server is unavailable
					// walks on instead of failing.
					s, err := NewWithFlags(name, FlagSched1|FlagSched2)
					if err != nil {
						b.Fatal(err)
					}
					s.Update(benchDests(n))
					f := benchFlow
					b.ReportAllocs()
					for b.Loop() {
						if s.Pick(&f) < 0 {
							b.Fatal("no server")
						}
					}
				})
			}
		})
	}
}

// TestPickAllocs requires Pick to allocate nothing: it runs once per new
// connection on the packet path.
func TestPickAllocs(t *testing.T) {
	for _, name := range Names() {
		for _, n := range benchSizes {
			s, _ := NewWithFlags(name, FlagSched1|FlagSched2)
			s.Update(benchDests(n))
			f := benchFlow
			if a := testing.AllocsPerRun(1000, func() { s.Pick(&f) }); a != 0 {
				t.Errorf("%s/%d: Pick allocates %v per run, want 0", name, n, a)
			}
		}
	}
}

// BenchmarkMHBuild measures the mh table build (Update) for 1024 servers
// with mixed weights.
func BenchmarkMHBuild(b *testing.B) {
	for _, n := range []int{1024} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ds := benchDests(n)
			s := newMH(0)
			b.ReportAllocs()
			for b.Loop() {
				s.Update(ds)
			}
		})
	}
}
