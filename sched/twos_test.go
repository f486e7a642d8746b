package sched

import "testing"

// scriptRand returns the queued numbers in order and records each n it
// was asked for.
type scriptRand struct {
	vals []uint32
	ns   []uint32
}

func (r *scriptRand) next(n uint32) uint32 {
	r.ns = append(r.ns, n)
	v := r.vals[0]
	r.vals = r.vals[1:]
	return v
}

func TestTwos(t *testing.T) {
	// twos (ip_vs_twos.c): total = sum of the positive weights of the
	// servers not overloaded; r1, r2 uniform in [0, total] (the kernel
	// asks for [0, total+1)). The walk over those servers subtracts each
	// weight from both and takes server i as choice k when rk first
	// drops to <= 0. The second choice wins when w2*oh1 > w1*oh2.
	//
	// [A1 B2 C3 Z0 O4(overloaded)]: total 6, n = 7. r = 0 or 1: A
	// (1-1 = 0); 2, 3: B (r-1-2 <= 0); 4..6: C.
	mk := func() (*twosScheduler, []*fakeDest) {
		ds := []*fakeDest{newDest("A", 1, 1), newDest("B", 2, 2), newDest("C", 3, 3), newDest("Z", 4, 0), newDest("O", 5, 4)}
		ds[4].over.Store(true)
		list := make([]Dest, len(ds))
		for i, d := range ds {
			list[i] = d
		}
		s := &twosScheduler{}
		s.Update(list)
		return s, ds
	}
	for _, c := range []struct {
		name   string
		r1, r2 uint32
		active [3]int
		want   int
	}{
		{"idle tie keeps the first choice", 0, 4, [3]int{0, 0, 0}, 0},
		{"second less loaded", 0, 4, [3]int{1, 0, 0}, 2},           // 3*257 > 1*0
		{"first less loaded", 4, 1, [3]int{1, 0, 0}, 2},            // C idle, A 257: 1*0 > 3*257 no
		{"weighted tie keeps the first", 1, 6, [3]int{1, 0, 3}, 0}, // 3*257 > 1*771 no
		{"r = 3 is still B", 3, 2, [3]int{0, 0, 0}, 1},
		{"r = total is the last", 6, 6, [3]int{0, 0, 0}, 2},
	} {
		s, ds := mk()
		for i, a := range c.active {
			ds[i].active.Store(int64(a))
		}
		r := &scriptRand{vals: []uint32{c.r1, c.r2}}
		s.rand = r.next
		if g := s.Pick(nil); g != c.want {
			t.Errorf("%s: got %d, want %d", c.name, g, c.want)
		}
		if len(r.ns) != 2 || r.ns[0] != 7 || r.ns[1] != 7 {
			t.Errorf("%s: rand asked for %v, want [7 7]", c.name, r.ns)
		}
	}

	// Nothing available: -1 without drawing.
	s, ds := mk()
	for _, d := range ds {
		d.over.Store(true)
	}
	r := &scriptRand{}
	s.rand = r.next
	if g := s.Pick(nil); g != -1 || len(r.ns) != 0 {
		t.Errorf("all overloaded: got %d, rand asked %v", g, r.ns)
	}

	// The real generator stays in range. With idle servers the first
	// choice always wins, and r in [0, total] makes its shares
	// (w+1)/(total+1) for the first server, w/(total+1) for the others:
	// A 2/7, B 2/7, C 3/7.
	s, _ = mk()
	s.rand = twosRand
	var n [5]int
	for range 6000 {
		n[s.Pick(nil)]++
	}
	if n[3] != 0 || n[4] != 0 || n[0] < 1400 || n[1] < 1400 || n[2] < 2200 {
		t.Errorf("counts %v", n)
	}
}
