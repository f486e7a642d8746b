package nat

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// checkShard verifies a shard's invariants: n counts the entries, hash
// bits and connections are both set or both empty, and every entry is
// reachable from its home slot without crossing an empty one.
func checkShard(t *testing.T, s *shard) {
	t.Helper()
	n := 0
	for i, h := range s.hs {
		if (h == 0) != (s.cs[i] == nil) {
			t.Fatalf("slot %d: hash bits %#x, conn %p", i, h, s.cs[i])
		}
		if h == 0 {
			continue
		}
		n++
		for j := home(h, len(s.hs)); j != i; j = next(j, len(s.hs)) {
			if s.hs[j] == 0 {
				t.Fatalf("slot %d (home %d) cut off by the empty slot %d", i, home(h, len(s.hs)), j)
			}
		}
	}
	if n != s.n {
		t.Fatalf("%d entries, n says %d", n, s.n)
	}
	if len(s.hs) > 0 && s.n*5 > len(s.hs)*4 {
		t.Fatalf("%d entries in %d slots", s.n, len(s.hs))
	}
}

// A shard with hash bits chosen to collide in a few home slots, wrapping
// around the end of the table, agrees with a map through adds and
// deletes, growth and shrinking.
func TestShardCollisions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var s shard
	want := map[*Conn]uint32{}
	var live []*Conn
	for step := range 20000 {
		if len(live) == 0 || rng.IntN(100) < 55-step/400 {
			c := new(Conn)
			// Hash bits whose home is the first slot or the last
			// ones at any size, so runs pile up and wrap.
			h := []uint32{1, 3, 0xffffffff, 0xfffffff1 - uint32(rng.IntN(4))<<20}[rng.IntN(4)]
			s.add(c, h)
			want[c] = h
			live = append(live, c)
		} else {
			k := rng.IntN(len(live))
			c := live[k]
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
			h := want[c]
			i := s.indexOf(c, h)
			if i < 0 || s.cs[i] != c {
				t.Fatalf("step %d: conn not found", step)
			}
			s.deleteAt(i)
			delete(want, c)
			if s.indexOf(c, h) >= 0 {
				t.Fatalf("step %d: deleted conn still found", step)
			}
		}
		if step%97 == 0 || len(live) < 4 {
			checkShard(t, &s)
			for c, h := range want {
				if i := s.indexOf(c, h); i < 0 || s.cs[i] != c {
					t.Fatalf("step %d: conn lost", step)
				}
			}
		}
	}
	for _, c := range live {
		s.deleteAt(s.indexOf(c, want[c]))
	}
	checkShard(t, &s)
	if s.n != 0 || len(s.hs) != minSlots {
		t.Fatalf("emptied shard: %d entries in %d slots", s.n, len(s.hs))
	}
}

// A connMap finds connections by key in both directions, tells keys that
// differ in any field apart, and forgets what was deleted.
func TestConnMapKeys(t *testing.T) {
	var in, out connMap
	in.init(7, false)
	out.init(7^0x9e3779b97f4a7c15, true)
	rng := rand.New(rand.NewPCG(3, 4))
	// A connection's addresses are of one family.
	addr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[1], b[15] = 0xfd, byte(rng.IntN(4)), byte(rng.IntN(4))
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(4))})
	}
	port := func() uint16 { return uint16(rng.IntN(4)) }
	type pair struct{ ik, ok key }
	conns := map[*Conn]pair{}
	byIn := map[key]*Conn{}
	byOut := map[key]*Conn{}
	for range 5000 {
		v6 := rng.IntN(4) == 0
		c := &Conn{Proto: uint8(6 + 11*rng.IntN(2)), CPort: port(), VPort: port(), DPort: port()}
		c.setAddrs(addr(v6), addr(v6), addr(v6))
		ik, ok := c.inKey(), c.outKey()
		if byIn[ik] != nil || byOut[ok] != nil {
			continue
		}
		si, hi := in.locate(&ik)
		so, ho := out.locate(&ok)
		si.add(c, hi)
		so.add(c, ho)
		conns[c] = pair{ik, ok}
		byIn[ik], byOut[ok] = c, c
		// Delete about a third again.
		if rng.IntN(3) == 0 {
			for d, p := range conns {
				si, hi := in.locate(&p.ik)
				si.deleteAt(si.indexOf(d, hi))
				so, ho := out.locate(&p.ok)
				so.deleteAt(so.indexOf(d, ho))
				delete(conns, d)
				delete(byIn, p.ik)
				delete(byOut, p.ok)
				break
			}
		}
	}
	if len(conns) < 1000 {
		t.Fatalf("only %d distinct connections", len(conns))
	}
	for i := range in.shards {
		checkShard(t, &in.shards[i])
		checkShard(t, &out.shards[i])
	}
	// Every key of the space the connections were drawn from.
	for range 50000 {
		v6 := rng.IntN(4) == 0
		k := makeKey(uint8(6+11*rng.IntN(2)), addr(v6), port(), addr(v6), port())
		if got := in.get(&k); got != byIn[k] {
			t.Fatalf("in %v: got %p, want %p", k, got, byIn[k])
		}
		if got := out.get(&k); got != byOut[k] {
			t.Fatalf("out %v: got %p, want %p", k, got, byOut[k])
		}
	}
}
