// Package csum is the Internet checksum (RFC 1071) and its incremental
// update (RFC 1624), shared by the NAT rewriter (nat) and the TUN offload
// code (tun), which finish, split and coalesce checksummed packets.
package csum

import (
	"encoding/binary"
	"math/bits"
)

// A checksum field holds the ones' complement of the ones'-complement sum
// of the 16-bit big-endian words it covers. Ones'-complement addition is an
// ordinary addition whose carries out of the top are added back at the
// bottom ("end-around carry"), so sums may be accumulated in wider integers
// and folded to 16 bits at the end; and since 2^16 ≡ 1 (mod 0xFFFF), wider
// big-endian words may be summed as they are.

// Sum adds b to the partial ones'-complement sum initial and returns
// the new partial sum, folded to 16 bits so that partial sums of pieces can
// be added together and folded again without overflow. b is taken as
// big-endian 16-bit words from its first byte; an odd last byte is padded
// with a zero, so every piece but the last must have an even length.
func Sum(b []byte, initial uint32) uint32 {
	s := uint64(initial)
	var c uint64
	// 64-bit words with the carries chained: four times fewer additions
	// than 16-bit words, and the carries are added back below.
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	// The last carry goes back in at the bottom without overflowing: a
	// carry out leaving s = 2^64-1 needs s = 2^64-1 and a carry in, and
	// the chain starts from s < 2^32 with no carry.
	s += c
	// Below 2^33 from here, so the tail words cannot overflow.
	s = s>>32 + s&0xffffffff
	if len(b) >= 4 {
		s += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint32(s)
}

// Fold folds a partial sum to 16 bits, adding the carries back. The
// checksum to store is its complement; a region whose stored checksum is
// right folds, checksum included, to 0xFFFF.
func Fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// Pseudo is the partial sum of the TCP/UDP/ICMPv6 pseudo-header
// (RFC 793, RFC 768, RFC 8200 section 8.1): source and destination address
// as they appear in the IP header (4 or 16 bytes each), protocol, and the
// upper-layer length. The IPv4 and IPv6 layouts differ only in where the
// zero bytes go, which does not change the sum.
func Pseudo(src, dst []byte, proto uint8, length int) uint32 {
	s := uint32(proto) + uint32(length>>16)&0xffff + uint32(length)&0xffff
	return Sum(dst, Sum(src, s))
}

// PseudoIP is Pseudo for the addresses of the IP packet ip: an IPv6
// header (v6) or an IPv4 one.
func PseudoIP(ip []byte, v6 bool, proto uint8, length int) uint32 {
	if v6 {
		return Pseudo(ip[8:24], ip[24:40], proto, length)
	}
	return Pseudo(ip[12:16], ip[16:20], proto, length)
}

// SetIPv4Header recomputes the header checksum of the IPv4 header h (the
// whole header, options included).
func SetIPv4Header(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^Fold(Sum(h, 0)))
}

// Finish completes a partial checksum, what a virtio-net header's
// NEEDS_CSUM (the kernel's CHECKSUM_PARTIAL) means: the field at
// b[start+off:] already holds the pseudo-header sum, and the complement of
// the sum of b[start:] is stored there. A result of zero is stored as
// 0xFFFF, as the kernel does (net/core/dev.c, skb_checksum_help: "csum_fold(csum)
// ?: CSUM_MANGLED_0"): the same value in ones' complement, and it keeps
// UDP's "no checksum" meaning away.
func Finish(b []byte, start, off int) {
	c := ^Fold(Sum(b[start:], 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
}

// Update returns the checksum hc updated for one covered 16-bit
// word changing from old to updated, per RFC 1624 eqn. 3:
// HC' = ~(~HC + ~m + m'). It gives the result of a full recomputation,
// 0x0000 included, where RFC 1141's update could give 0xFFFF instead.
func Update(hc, old, updated uint16) uint16 {
	return ApplyDelta(hc, WordDelta(old, updated))
}

// UpdateAddr4 returns hc updated for a covered IPv4 address (at an
// even offset) changing from old to updated.
func UpdateAddr4(hc uint16, old, updated [4]byte) uint16 {
	return ApplyDelta(hc, AddrDelta4(&old, &updated))
}

// UpdateAddr16 returns hc updated for a covered IPv6 address (at
// an even offset) changing from old to updated.
func UpdateAddr16(hc uint16, old, updated [16]byte) uint16 {
	return ApplyDelta(hc, AddrDelta16(&old, &updated))
}

// A delta is the ones'-complement sum of ~m + m' over the changed words,
// unfolded: one delta serves every checksum that covers the same change
// (an address is in the IPv4 header and in the L4 pseudo-header). It stays
// far below 2^32 for the few dozen words a rewrite changes.

// WordDelta is the delta of one 16-bit word changing from old to updated.
func WordDelta(old, updated uint16) uint32 {
	return uint32(^old) + uint32(updated)
}

// AddrDelta4 is the delta of an IPv4 address (at an even offset) changing.
func AddrDelta4(old, updated *[4]byte) uint32 {
	return uint32(^binary.BigEndian.Uint16(old[0:])) + uint32(^binary.BigEndian.Uint16(old[2:])) +
		uint32(binary.BigEndian.Uint16(updated[0:])) + uint32(binary.BigEndian.Uint16(updated[2:]))
}

// AddrDelta16 is the delta of an IPv6 address (at an even offset) changing.
func AddrDelta16(old, updated *[16]byte) uint32 {
	var d uint32
	for i := 0; i < 16; i += 2 {
		d += uint32(^binary.BigEndian.Uint16(old[i:])) + uint32(binary.BigEndian.Uint16(updated[i:]))
	}
	return d
}

// ApplyDelta is RFC 1624 eqn. 3 for a whole delta: hc updated for the
// changes d sums up.
func ApplyDelta(hc uint16, d uint32) uint16 {
	return ^Fold(uint32(^hc) + d)
}
