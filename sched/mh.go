package sched

import (
	"math/bits"

	"github.com/tunvs/tunvs/internal/siphash"
)

// Maglev hashing, as net/netfilter/ipvs/ip_vs_mh.c.
//
// The lookup table has a prime number of slots: 4093 with the default (and
// Debian's) CONFIG_IP_VS_MH_TAB_INDEX of 12. Each server gets a permutation
// of the slots from two keyed hashes of its address and port: a starting
// slot (offset) and a step (skip). The table is filled round by round in
// list order; in each round every server takes "turns" slots, each the
// next free slot along its permutation, until all slots are taken. Turns
// come from the servers' last non-zero weights reduced by their gcd and,
// when the largest reduced weight needs more than 6 bits, shifted right.
// A client goes to the slot of a keyed hash of its address (plus the
// source port with mh-port, FlagSched2). A server there that is quiesced
// or overloaded means no server, unless mh-fallback (FlagSched1) tries
// other slots by rehashing with an offset.
//
// The keyed hash is the kernel's hsiphash of one u32 with fixed keys. On
// 64-bit kernels (the only ones compared here) hsiphash is SipHash-1-3 with
// the 64-bit words of hsiphash_key_t, truncated to 32 bits; 32-bit kernels
// use HalfSipHash-1-3 and so build different tables.

func init() {
	registerFlags("mh", func(f Flags) Scheduler { return newMH(f) })
}

// mhPrimes are the kernel's table sizes for CONFIG_IP_VS_MH_TAB_INDEX 8
// to 17.
var mhPrimes = [...]uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

const (
	// mhTabIndex is CONFIG_IP_VS_MH_TAB_INDEX: the kernel default and
	// Debian's setting.
	mhTabIndex = 12
	// mhTabSize is the table size for mhTabIndex, primes[12 - 8].
	mhTabSize = 4093

	// The fixed keys of generate_hash_secret: both words of each key are
	// the same constant.
	mhKey1 = 2654435761
	mhKey2 = 2654446892
)

// hsiphash32 is the 64-bit kernel's hsiphash of a 4-byte buffer holding v
// (little-endian, as the u32 sits in memory on x86) under the key
// {k0, k1}: SipHash with one compression and three finalisation rounds,
// the length in the top byte of the last block, and the low 32 bits of
// the result.
func hsiphash32(v uint32, k0, k1 uint64) uint32 {
	v0, v1, v2, v3 := siphash.C0^k0, siphash.C1^k1, siphash.C2^k0, siphash.C3^k1
	b := uint64(4)<<56 | uint64(v)
	v3 ^= b
	v0, v1, v2, v3 = siphash.Round(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xff
	v0, v1, v2, v3 = siphash.Round(v0, v1, v2, v3)
	v0, v1, v2, v3 = siphash.Round(v0, v1, v2, v3)
	v0, v1, v2, v3 = siphash.Round(v0, v1, v2, v3)
	return uint32(v0 ^ v1 ^ v2 ^ v3)
}

// mhScheduler is the "mh" scheduler. The caller serialises Update and
// Pick, so no lock.
type mhScheduler struct {
	fallback bool // mh-fallback
	port     bool // mh-port
	// size is the table size, mhPrimes[index-8]; bits is
	// IP_VS_MH_TAB_BITS, index/2: the bits of reduced weight kept
	// before shifting. Only the default index is registered; others
	// serve tests (a kernel built with another index).
	size  uint32
	bits  int
	dests []Dest
	// lookup holds an index into dests per slot, -1 when empty (no
	// server with a positive last weight).
	lookup []int32
	// lastWeight is the kernel's dest->last_weight, which the Dest
	// interface does not carry: the weight given when the server was
	// added, then the latest non-zero weight it was edited to. Update
	// tracks it, relying on one Update per add or edit.
	lastWeight map[Dest]int
	// setup is the per-server permutation state, reused across builds.
	setup []mhSetup
	// used marks the slots taken during a build, reused across builds.
	used []bool
}

// mhSetup is struct ip_vs_mh_dest_setup.
type mhSetup struct {
	offset, skip, perm uint32
	turns              int
}

func newMH(f Flags) *mhScheduler { return newMHIndex(f, mhTabIndex) }

// newMHIndex makes mh with the table of CONFIG_IP_VS_MH_TAB_INDEX index
// (8..17).
func newMHIndex(f Flags, index int) *mhScheduler {
	size := mhPrimes[index-8]
	s := &mhScheduler{
		fallback:   f&FlagSched1 != 0,
		port:       f&FlagSched2 != 0,
		size:       size,
		bits:       index / 2,
		lookup:     make([]int32, size),
		lastWeight: map[Dest]int{},
		used:       make([]bool, size),
	}
	for i := range s.lookup {
		s.lookup[i] = -1
	}
	return s
}

// Name returns "mh".
func (s *mhScheduler) Name() string { return "mh" }

// Update is ip_vs_mh_dest_changed: recompute the gcd and shift of the last
// weights and rebuild the whole table.
//
// With more servers than slots the kernel's rebuild fails (-EINVAL) and
// the old table stays; here the old table's slots are carried over to the
// servers' new indices, and a slot whose server is gone becomes empty (the
// kernel would still hand out the deleted server it holds a reference to).
func (s *mhScheduler) Update(dests []Dest) {
	lw := make(map[Dest]int, len(dests))
	for _, d := range dests {
		w := d.Weight()
		if old, ok := s.lastWeight[d]; ok && w == 0 {
			// Edited to 0: last_weight keeps the previous one.
			w = old
		}
		lw[d] = w
	}
	s.lastWeight = lw

	if len(dests) > int(s.size) {
		at := make(map[Dest]int32, len(dests))
		for i, d := range dests {
			at[d] = int32(i)
		}
		for i, j := range s.lookup {
			if j < 0 {
				continue
			}
			if k, ok := at[s.dests[j]]; ok {
				s.lookup[i] = k
			} else {
				s.lookup[i] = -1
			}
		}
		s.dests = dests
		return
	}
	s.dests = dests
	s.build()
}

// build is ip_vs_mh_gcd_weight, ip_vs_mh_shift_weight, ip_vs_mh_permutate
// and ip_vs_mh_populate.
func (s *mhScheduler) build() {
	g, mw := 0, 0
	for _, d := range s.dests {
		w := s.lastWeight[d]
		if w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
		mw = max(mw, w)
	}
	if g < 1 {
		// No server with a positive last weight: empty table.
		for i := range s.lookup {
			s.lookup[i] = -1
		}
		return
	}
	shift := max(bits.Len(uint(mw/g))-s.bits, 0)

	s.setup = s.setup[:0]
	for _, d := range s.dests {
		ap := d.Addr()
		v := uint32(ap.Port()) + addrFold(ap.Addr())
		off := hsiphash32(v, mhKey1, mhKey1) % s.size
		lw := s.lastWeight[d]
		turns := (lw / g) >> shift
		if turns == 0 && lw != 0 {
			turns = 1
		}
		s.setup = append(s.setup, mhSetup{
			offset: off,
			skip:   hsiphash32(v, mhKey2, mhKey2)%(s.size-1) + 1,
			perm:   off,
			turns:  turns,
		})
	}

	clear(s.used)
	n := 0
	for {
		for i := range s.setup {
			ds := &s.setup[i]
			for t := 0; t < ds.turns; t++ {
				c := ds.perm
				for s.used[c] {
					ds.perm += ds.skip
					if ds.perm >= s.size {
						ds.perm -= s.size
					}
					c = ds.perm
				}
				s.used[c] = true
				s.lookup[c] = int32(i)
				if n++; n == int(s.size) {
					return
				}
			}
		}
	}
}

// mhHash is ip_vs_mh_hashkey for the client: hsiphash of offset + port +
// folded address under the first key.
func mhHash(addr, port, offset uint32) uint32 {
	return hsiphash32(offset+port+addr, mhKey1, mhKey1)
}

// Pick is ip_vs_mh_schedule with ip_vs_mh_get or ip_vs_mh_get_fallback.
func (s *mhScheduler) Pick(f *Flow) int {
	if f == nil {
		f = &zeroFlow
	}
	var port uint32
	if s.port {
		port = flowPort(f)
	}
	addr := addrFold(f.Src)
	ihash := mhHash(addr, port, 0) % s.size
	i := s.lookup[ihash]
	if i < 0 {
		return -1
	}
	if !shUnavailable(s.dests[i]) {
		return int(i)
	}
	if !s.fallback {
		return -1
	}
	// The fallback rehashes with roffset = (offset + ihash) % size added
	// to the hashed value, for offset 0..size-1.
	for off := uint32(0); off < s.size; off++ {
		roff := (off + ihash) % s.size
		j := s.lookup[mhHash(addr, port, roff)%s.size]
		if j < 0 {
			return -1
		}
		if !shUnavailable(s.dests[j]) {
			return int(j)
		}
	}
	return -1
}
