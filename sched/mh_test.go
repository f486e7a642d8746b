package sched

import (
	"encoding/binary"
	"hash/fnv"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
)

// refSipHash is SipHash-c-d of msg under the key words k0, k1, written
// from the SipHash paper independently of hsiphash32; TestSipHash checks
// it against the kernel's lib/test_siphash.c vectors.
func refSipHash(c, d int, k0, k1 uint64, msg []byte) uint64 {
	v := [4]uint64{0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1, 0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1}
	round := func() {
		v[0] += v[1]
		v[1] = bits.RotateLeft64(v[1], 13) ^ v[0]
		v[0] = bits.RotateLeft64(v[0], 32)
		v[2] += v[3]
		v[3] = bits.RotateLeft64(v[3], 16) ^ v[2]
		v[0] += v[3]
		v[3] = bits.RotateLeft64(v[3], 21) ^ v[0]
		v[2] += v[1]
		v[1] = bits.RotateLeft64(v[1], 17) ^ v[2]
		v[2] = bits.RotateLeft64(v[2], 32)
	}
	compress := func(m uint64) {
		v[3] ^= m
		for range c {
			round()
		}
		v[0] ^= m
	}
	n := len(msg)
	for ; len(msg) >= 8; msg = msg[8:] {
		compress(binary.LittleEndian.Uint64(msg))
	}
	var last [8]byte
	copy(last[:], msg)
	last[7] = byte(n)
	compress(binary.LittleEndian.Uint64(last[:]))
	v[2] ^= 0xff
	for range d {
		round()
	}
	return v[0] ^ v[1] ^ v[2] ^ v[3]
}

// TestSipHash checks refSipHash against the kernel's own test vectors
// (key 00 01 .. 0f, message 00 01 .. of each length): SipHash-2-4 and,
// for the 64-bit hsiphash, SipHash-1-3 truncated to 32 bits; then
// hsiphash32 against refSipHash for the mh keys and random values.
func TestSipHash(t *testing.T) {
	const k0, k1 = 0x0706050403020100, 0x0f0e0d0c0b0a0908
	msg := make([]byte, 16)
	for i := range msg {
		msg[i] = byte(i)
	}
	for i, want := range map[int]uint64{0: 0x726fdb47dd0e0e31, 1: 0x74f839c593dc67fd, 2: 0x0d6c8009d9a94f5a, 7: 0xab0200f58b01d137, 8: 0x93f5f5799a932462} {
		if g := refSipHash(2, 4, k0, k1, msg[:i]); g != want {
			t.Errorf("SipHash-2-4 len %d = %#x, want %#x", i, g, want)
		}
	}
	hv := []uint32{0x050fc4dc, 0x7d57ca93, 0x4dc7d44d, 0xe7ddf7fb, 0x88d38328, 0x49533b67, 0xc59f22a7, 0x9bb11140, 0x8d299a8e}
	for i, want := range hv {
		if g := uint32(refSipHash(1, 3, k0, k1, msg[:i])); g != want {
			t.Errorf("hsiphash len %d = %#x, want %#x", i, g, want)
		}
	}
	// The kernel's hsiphash_1u32 self-test: 0x03020100 is vector 4.
	if g := hsiphash32(0x03020100, k0, k1); g != hv[4] {
		t.Errorf("hsiphash32(0x03020100) = %#x, want %#x", g, hv[4])
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		v := rng.Uint32()
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		for _, k := range []uint64{mhKey1, mhKey2} {
			if g, w := hsiphash32(v, k, k), uint32(refSipHash(1, 3, k, k, b[:])); g != w {
				t.Fatalf("hsiphash32(%#x, %d) = %#x, reference %#x", v, k, g, w)
			}
		}
	}
}

// refMHTable builds the Maglev table the way the Maglev paper states it,
// from the kernel's parameters: server i's j-th preference is
// (offset_i + j*skip_i) mod M with offset and skip from refSipHash of
// port + folded address; in each round every server takes turns_i times
// its next unfilled preference. weights are the last weights.
func refMHTable(ds []Dest, weights []int) []int32 {
	const m = 4093
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	g, mw := 0, 0
	for _, w := range weights {
		if w > 0 {
			if g == 0 {
				g = w
			} else {
				g = gcd(g, w)
			}
		}
		mw = max(mw, w)
	}
	if g == 0 {
		return table
	}
	shift := 0
	for mw/g>>shift >= 1<<6 {
		shift++
	}
	offset := make([]uint64, len(ds))
	skip := make([]uint64, len(ds))
	turns := make([]int, len(ds))
	next := make([]uint64, len(ds))
	for i, d := range ds {
		ap := d.Addr()
		a := ap.Addr().As4()
		v := binary.BigEndian.Uint32(a[:]) + uint32(ap.Port())
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		offset[i] = uint64(uint32(refSipHash(1, 3, mhKey1, mhKey1, b[:]))) % m
		skip[i] = uint64(uint32(refSipHash(1, 3, mhKey2, mhKey2, b[:])))%(m-1) + 1
		turns[i] = weights[i] / g >> shift
		if turns[i] == 0 && weights[i] > 0 {
			turns[i] = 1
		}
	}
	filled := 0
	for {
		for i := range ds {
			for range turns[i] {
				for {
					c := (offset[i] + next[i]*skip[i]) % m
					next[i]++
					if table[c] < 0 {
						table[c] = int32(i)
						break
					}
				}
				if filled++; filled == m {
					return table
				}
			}
		}
	}
}

// mhDests makes n servers 10.0.x.y:80 with the given weights.
func mhDests(weights []int) []Dest {
	ds := make([]Dest, len(weights))
	for i, w := range weights {
		ds[i] = newDest("m"+strconv.Itoa(i), i+1, w)
	}
	return ds
}

func TestMHTableReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for trial := range 40 {
		n := 1 + rng.IntN(40)
		ws := make([]int, n)
		for i := range ws {
			ws[i] = rng.IntN(5)
			if trial%4 == 0 {
				ws[i] = rng.IntN(1000) // exercises the shift
			}
		}
		ds := mhDests(ws)
		s := newMH(0)
		s.Update(ds)
		want := refMHTable(ds, ws)
		for i := range want {
			if s.lookup[i] != want[i] {
				t.Fatalf("weights %v: slot %d = %d, reference %d", ws, i, s.lookup[i], want[i])
			}
		}
	}
}

// tableHash is FNV-1a of the lookup table as the servers' addresses.
func tableHash(s *mhScheduler) uint64 {
	h := fnv.New64a()
	for _, i := range s.lookup {
		if i < 0 {
			h.Write([]byte("-"))
			continue
		}
		h.Write([]byte(s.dests[i].Addr().String()))
	}
	return h.Sum64()
}

// TestMHSnapshot pins the table for a fixed set of servers, so that any
// change to the hash, the permutation or the fill shows. The value was
// taken once the table matched refMHTable and the kernel's siphash test
// vectors.
func TestMHSnapshot(t *testing.T) {
	s := newMH(0)
	s.Update(mhDests([]int{1, 2, 3, 4, 5, 6, 7, 8}))
	const want uint64 = 0xdf28595cb5e4af3c
	if g := tableHash(s); g != want {
		t.Errorf("table hash = %#x, pinned %#x", g, want)
	}
	// A few clients pinned the same way, and checked against the
	// reference table: slot hsiphash(fold(src)) mod 4093.
	ref := refMHTable(s.dests, []int{1, 2, 3, 4, 5, 6, 7, 8})
	for c, want := range map[string]int{"10.0.0.1": 5, "10.0.0.2": 5, "192.168.1.10": 6, "172.16.5.4": 6, "2001:db8::1": 2} {
		f := cli(c)
		if g := s.Pick(&f); g != want {
			t.Errorf("client %s: server %d, pinned %d", c, g, want)
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], addrFold(f.Src))
		if r := ref[uint32(refSipHash(1, 3, mhKey1, mhKey1, b[:]))%4093]; int(r) != want {
			t.Errorf("client %s: reference server %d, pinned %d", c, r, want)
		}
	}
}

// TestMHShares checks the number of slots per server: every round gives
// server i turns_i slots in list order until 4093 are filled, so with T
// the sum of turns, server i has (4093/T)*turns_i plus its part of the
// 4093%T slots of the last round.
func TestMHShares(t *testing.T) {
	for _, c := range []struct {
		weights, turns []int
	}{
		{[]int{1, 1, 1}, []int{1, 1, 1}},
		{[]int{2, 4, 6}, []int{1, 2, 3}},           // gcd 2
		{[]int{3, 0, 1}, []int{3, 0, 1}},           // weight 0 at add: no slot
		{[]int{1, 200}, []int{1, 50}},              // 200 needs 8 bits: shift 2; 1>>2 = 0 -> 1
		{[]int{100, 300, 64}, []int{12, 37, 8}},    // gcd 4: 25 75 16; fls(75) = 7: shift 1
		{[]int{65535, 1, 32768}, []int{63, 1, 32}}, // fls(65535) = 16: shift 10
	} {
		turns := c.turns
		s := newMH(0)
		ds := mhDests(c.weights)
		s.Update(ds)
		count := make([]int, len(ds))
		for _, i := range s.lookup {
			count[i]++
		}
		sum := 0
		for _, x := range turns {
			sum += x
		}
		rest := mhTabSize % sum
		for i, x := range turns {
			want := mhTabSize/sum*x + min(x, max(rest, 0))
			rest -= x
			if count[i] != want {
				t.Errorf("weights %v: server %d has %d slots, want %d (turns %v)", c.weights, i, count[i], want, turns)
			}
		}
	}
}

// TestMHDisruption is the Maglev property: taking one of N servers out
// moves the flows it had and only a small share of the others. How small
// depends on slots per server: with the kernel's default 4093 slots the
// share measured here is about 1.1% for N=5, 1.9% for N=20 and 3.0% for
// N=100 (the kernel's own tables, not a defect of this port), so the
// default table is held to 4%; with a kernel built with
// CONFIG_IP_VS_MH_TAB_INDEX=16 (65521 slots) the share stays under 1%,
// the bound Cilium's Maglev tests use.
func TestMHDisruption(t *testing.T) {
	const flows = 100000
	for _, c := range []struct {
		index int
		bound float64
	}{{12, 0.04}, {16, 0.01}} {
		for _, n := range []int{5, 20, 100} {
			ws := make([]int, n)
			for i := range ws {
				ws[i] = 1
			}
			all := mhDests(ws)
			a, b := newMHIndex(0, c.index), newMHIndex(0, c.index)
			a.Update(all)
			gone := n / 2
			rest := append(append([]Dest{}, all[:gone]...), all[gone+1:]...)
			b.Update(rest)
			moved, kept := 0, 0
			f := Flow{Proto: 6}
			for k := range flows {
				f.Src = netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
				i := a.Pick(&f)
				if i == gone {
					if j := b.Pick(&f); j < 0 {
						t.Fatalf("flow of the removed server not rescheduled")
					}
					continue
				}
				kept++
				if j := b.Pick(&f); rest[j] != all[i] {
					moved++
				}
			}
			share := float64(moved) / float64(kept)
			t.Logf("index %d, N=%d: %d of %d other flows moved (%.3f%%)", c.index, n, moved, kept, 100*share)
			if share >= c.bound {
				t.Errorf("index %d, N=%d: %.3f%% of the other flows moved, want < %.0f%%", c.index, n, 100*share, 100*c.bound)
			}
		}
	}
}

// refMHSlot is the slot of a client in the reference: refSipHash of
// offset + port + folded address, mod 4093.
func refMHSlot(a netip.Addr, port, offset uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], offset+port+addrFold(a))
	return uint32(refSipHash(1, 3, mhKey1, mhKey1, b[:])) % 4093
}

func TestMH(t *testing.T) {
	ws := []int{1, 2, 3, 4, 5, 6, 7, 8}
	ds := mhDests(ws)
	fds := make([]*fakeDest, len(ds))
	for i := range ds {
		fds[i] = ds[i].(*fakeDest)
	}
	clients := make([]Flow, 300)
	for i := range clients {
		clients[i] = cli(netip.AddrFrom4([4]byte{172, 20, byte(i >> 8), byte(i)}).String())
	}
	pickAll := func(s Scheduler) []int {
		out := make([]int, len(clients))
		for i := range clients {
			out[i] = s.Pick(&clients[i])
		}
		return out
	}

	t.Run("picks follow the reference table", func(t *testing.T) {
		s := newMH(0)
		s.Update(ds)
		ref := refMHTable(ds, ws)
		for i, g := range pickAll(s) {
			if w := ref[refMHSlot(clients[i].Src, 0, 0)]; g != int(w) {
				t.Fatalf("client %s: %d, reference %d", clients[i].Src, g, w)
			}
		}
	})

	t.Run("weight 0 keeps the table (last_weight)", func(t *testing.T) {
		// An edit to weight 0 leaves last_weight, so the rebuilt
		// table is the same; the quiesced server's clients get no
		// server (no fallback), everyone else is unchanged.
		s := newMH(0)
		s.Update(ds)
		before, h := pickAll(s), tableHash(s)
		fds[3].weight.Store(0)
		s.Update(ds)
		defer func() { fds[3].weight.Store(4); s.Update(ds) }()
		if tableHash(s) != h {
			t.Fatal("table changed on an edit to weight 0")
		}
		hit := 0
		for i, g := range pickAll(s) {
			switch {
			case before[i] == 3 && g != -1:
				t.Fatalf("client of the quiesced server got %d", g)
			case before[i] == 3:
				hit++
			case g != before[i]:
				t.Fatalf("client %d moved from %d to %d", i, before[i], g)
			}
		}
		if hit == 0 {
			t.Fatal("no client of the quiesced server in the sample")
		}
		// Another edit to a non-zero weight does rebuild: 4 -> 0 -> 8
		// equals a table built with 8.
		fds[3].weight.Store(8)
		s.Update(ds)
		ws8 := append([]int{}, ws...)
		ws8[3] = 8
		ref := refMHTable(ds, ws8)
		for i := range ref {
			if s.lookup[i] != ref[i] {
				t.Fatalf("slot %d after 4 -> 0 -> 8: %d, reference %d", i, s.lookup[i], ref[i])
			}
		}
	})

	t.Run("added with weight 0 has no slots", func(t *testing.T) {
		z := newDest("z", 99, 0)
		s := newMH(0)
		s.Update(append([]Dest{z}, ds...))
		for _, i := range s.lookup {
			if i == 0 {
				t.Fatal("server added with weight 0 has a slot")
			}
		}
		// Raised to 5 it gets its share.
		z.weight.Store(5)
		s.Update(append([]Dest{z}, ds...))
		ref := refMHTable(append([]Dest{z}, ds...), append([]int{5}, ws...))
		for i := range ref {
			if s.lookup[i] != ref[i] {
				t.Fatalf("slot %d: %d, reference %d", i, s.lookup[i], ref[i])
			}
		}
		// Deleted and re-added at weight 0: last_weight is 0 again.
		s.Update(ds)
		z.weight.Store(0)
		s.Update(append([]Dest{z}, ds...))
		for _, i := range s.lookup {
			if i == 0 {
				t.Fatal("re-added server with weight 0 has a slot")
			}
		}
	})

	t.Run("fallback", func(t *testing.T) {
		// mh-fallback: the kernel rehashes the client with
		// roffset = (offset + ihash) % 4093 added, offset 0, 1, ...,
		// and takes the first available server.
		s := newMH(FlagSched1)
		s.Update(ds)
		ref := refMHTable(ds, ws)
		fds[3].over.Store(true)
		fds[5].weight.Store(0)
		s.Update(ds)
		defer func() { fds[3].over.Store(false); fds[5].weight.Store(6); s.Update(ds) }()
		moved := 0
		for i, g := range pickAll(s) {
			ih := refMHSlot(clients[i].Src, 0, 0)
			want := int(ref[ih])
			if want == 3 || want == 5 {
				moved++
				for off := uint32(0); ; off++ {
					w := int(ref[refMHSlot(clients[i].Src, 0, (off+ih)%4093)])
					if w != 3 && w != 5 {
						want = w
						break
					}
				}
			}
			if g != want {
				t.Fatalf("client %s: %d, want %d", clients[i].Src, g, want)
			}
		}
		if moved == 0 {
			t.Fatal("no client fell back")
		}
		for _, d := range fds {
			d.over.Store(true)
		}
		defer func() {
			for _, d := range fds {
				d.over.Store(false)
			}
		}()
		if g := s.Pick(&clients[0]); g != -1 {
			t.Fatalf("all overloaded: %d", g)
		}
	})

	t.Run("port", func(t *testing.T) {
		// mh-port adds the source port for TCP, UDP and SCTP.
		s := newMH(FlagSched2)
		s.Update(ds)
		ref := refMHTable(ds, ws)
		for i := range clients {
			f := clients[i]
			f.SrcPort = uint16(1024 + 7*i)
			if g, w := s.Pick(&f), int(ref[refMHSlot(f.Src, uint32(f.SrcPort), 0)]); g != w {
				t.Fatalf("TCP %s:%d: %d, reference %d", f.Src, f.SrcPort, g, w)
			}
			f.Proto = 1
			if g, w := s.Pick(&f), int(ref[refMHSlot(f.Src, 0, 0)]); g != w {
				t.Fatalf("ICMP %s: %d, reference %d", f.Src, g, w)
			}
		}
	})

	t.Run("none", func(t *testing.T) {
		s := newMH(FlagSched1)
		if g := s.Pick(&clients[0]); g != -1 {
			t.Fatalf("empty: %d", g)
		}
		s.Update(mhDests([]int{0, 0}))
		if g := s.Pick(&clients[0]); g != -1 {
			t.Fatalf("all added with weight 0: %d", g)
		}
		s.Update(nil)
		if g := s.Pick(&clients[0]); g != -1 {
			t.Fatalf("emptied: %d", g)
		}
	})
}
