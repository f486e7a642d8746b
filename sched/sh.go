package sched

import "net/netip"

// Source hashing (ip_vs_sh.c) and destination hashing (ip_vs_dh.c).
//
// Both keep a table of 256 buckets (the Debian/default
// CONFIG_IP_VS_SH_TAB_BITS and IP_VS_DH_TAB_BITS of 8), each naming a
// server, rebuilt from the list on every add, edit and delete. A
// connection goes to the bucket of a 32-bit fold of an address, hashed
// with the kernel's multiplicative hash_32.
//
//   - sh fills the buckets walking the list round and round, giving each
//     server as many consecutive buckets as its weight at rebuild time (at
//     least one, even for weight 0, since the kernel's "filled enough"
//     test is ++count >= weight). It hashes the client address (Flow.Src),
//     plus the client port with sh-port (FlagSched2) for TCP, UDP and SCTP.
//     An unavailable server (weight 0 or overloaded) in the bucket means
//     no server, unless sh-fallback (FlagSched1) walks the table for the
//     next available one.
//   - dh gives each server one bucket in turn, regardless of weight, and
//     hashes the packet's destination address (Flow.Dst). A server in the
//     bucket that is quiesced or overloaded means no server; dh has no
//     fallback.

func init() {
	registerFlags("sh", func(f Flags) Scheduler { return newHashTab("sh", f) })
	register("dh", func() Scheduler { return newHashTab("dh", 0) })
}

const (
	hashTabBits = 8
	hashTabSize = 1 << hashTabBits
	hashTabMask = hashTabSize - 1

	// goldenRatio32 is the kernel's GOLDEN_RATIO_32 (include/linux/hash.h).
	goldenRatio32 = 0x61C88647
)

// hash32 is the kernel's generic hash_32: multiply by the golden ratio and
// keep the top bits. (x86 has no arch-specific __hash_32.)
func hash32(v uint32, bits uint) uint32 { return (v * goldenRatio32) >> (32 - bits) }

// addrFold is the 32-bit value the IPVS hashing schedulers hash an address
// by, in host order: an IPv4 address as a number, an IPv6 address as the
// XOR of its four 32-bit words (the kernel XORs the big-endian words and
// then converts, which is the same). An invalid Addr folds to 0.
func addrFold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return be32(b[:])
	}
	if !a.IsValid() {
		return 0
	}
	b := a.As16()
	return be32(b[0:4]) ^ be32(b[4:8]) ^ be32(b[8:12]) ^ be32(b[12:16])
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// zeroFlow stands for a nil *Flow: the hashing schedulers then hash
// the zero addresses and ports.
var zeroFlow Flow

// flowPort is the port sh and mh add to the hash with their -port flag:
// the client's source port for TCP, UDP and SCTP, 0 for any other
// protocol (ip_vs_sh_get_port, ip_vs_mh_get_port).
func flowPort(f *Flow) uint32 {
	switch f.Proto {
	case 6, 17, 132: // TCP, UDP, SCTP
		return uint32(f.SrcPort)
	}
	return 0
}

// hashTab is the "sh" or "dh" scheduler. The caller serialises Update and
// Pick, so no lock.
type hashTab struct {
	name     string
	dh       bool
	fallback bool // sh-fallback
	port     bool // sh-port
	dests    []Dest
	// buckets holds an index into dests, or -1 for an empty bucket
	// (only when there are no servers).
	buckets [hashTabSize]int32
}

func newHashTab(name string, f Flags) *hashTab {
	s := &hashTab{name: name, dh: name == "dh"}
	if !s.dh {
		s.fallback = f&FlagSched1 != 0
		s.port = f&FlagSched2 != 0
	}
	for i := range s.buckets {
		s.buckets[i] = -1
	}
	return s
}

// Name returns "sh" or "dh".
func (s *hashTab) Name() string { return s.name }

// Update is ip_vs_sh_reassign / ip_vs_dh_reassign, which the kernel runs
// after every add, edit and delete: bucket i gets the server the walk is
// on, and the walk moves on after one bucket (dh) or after weight buckets
// (sh; at least one). The weights are read now, as the kernel reads them
// at rebuild time.
func (s *hashTab) Update(dests []Dest) {
	s.dests = dests
	if len(dests) == 0 {
		for i := range s.buckets {
			s.buckets[i] = -1
		}
		return
	}
	p, count := 0, 0
	w := dests[0].Weight()
	for i := range s.buckets {
		s.buckets[i] = int32(p)
		count++
		if s.dh || count >= w {
			p = (p + 1) % len(dests)
			count = 0
			w = dests[p].Weight()
		}
	}
}

// shUnavailable is is_unavailable of sh and mh: weight 0 or overloaded,
// read live.
func shUnavailable(d Dest) bool { return d.Weight() <= 0 || d.Overloaded() }

// Pick is ip_vs_sh_schedule / ip_vs_dh_schedule.
func (s *hashTab) Pick(f *Flow) int {
	if f == nil {
		f = &zeroFlow
	}
	if s.dh {
		i := s.buckets[hash32(addrFold(f.Dst), hashTabBits)]
		if i < 0 {
			return -1
		}
		if d := s.dests[i]; d.Weight() <= 0 || d.Overloaded() {
			return -1
		}
		return int(i)
	}
	var port uint32
	if s.port {
		port = flowPort(f)
	}
	ihash := hash32(port+addrFold(f.Src), hashTabBits) & hashTabMask
	i := s.buckets[ihash]
	if i < 0 {
		return -1
	}
	if !shUnavailable(s.dests[i]) {
		return int(i)
	}
	if !s.fallback {
		return -1
	}
	// ip_vs_sh_get_fallback: for offset 0..255 the kernel computes
	// roffset = (offset + ihash) % 256 and then hashes again with that
	// roffset added to ihash, so the walk looks at bucket
	// (offset + 2*ihash) & 255: it starts at 2*ihash, not at ihash+1, and
	// covers every bucket once.
	for off := uint32(0); off < hashTabSize; off++ {
		roff := (off + ihash) % hashTabSize
		b := (roff + ihash) & hashTabMask
		j := s.buckets[b]
		if j < 0 {
			return -1
		}
		if !shUnavailable(s.dests[j]) {
			return int(j)
		}
	}
	return -1
}
