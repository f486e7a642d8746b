package sched

import (
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

// BenchmarkPick measures one Pick per iteration on a fixed list. wlc scans
// the whole list every time; rr and wrr are amortised over their cycles.
func BenchmarkPick(b *testing.B) {
	for _, name := range []string{"rr", "wrr", "wlc"} {
		b.Run(name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(strconv.Itoa(n), func(b *testing.B) {
					s, err := New(name)
					if err != nil {
						b.Fatal(err)
					}
					s.Update(benchDests(n))
					f := &Flow{}
					b.ReportAllocs()
					for b.Loop() {
						if s.Pick(f) < 0 {
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
	for _, name := range []string{"rr", "wrr", "wlc"} {
		for _, n := range benchSizes {
			s, _ := New(name)
			s.Update(benchDests(n))
			f := &Flow{}
			if a := testing.AllocsPerRun(1000, func() { s.Pick(f) }); a != 0 {
				t.Errorf("%s/%d: Pick allocates %v per run, want 0", name, n, a)
			}
		}
	}
}
