// Package csumtest is the plainest Internet checksum (RFC 1071): one
// 16-bit word at a time, folded once at the end. Tests check internal/csum
// against it and build their packets with it, so that a test never checks
// the code under test against itself. It is for tests only.
package csumtest

// Sum adds b, as big-endian 16-bit words (an odd last byte padded with
// zero), to initial, without folding; a uint32 holds the sum of any IP
// packet (at most 32768 words of at most 0xFFFF).
func Sum(b []byte, initial uint32) uint32 {
	s := initial
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// Fold folds a sum to 16 bits, the carries added back.
func Fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// Checksum is the checksum of b starting from the partial sum initial (a
// pseudo-header's, say): complemented, ready to store.
func Checksum(b []byte, initial uint32) uint16 { return ^Fold(Sum(b, initial)) }

// Pseudo is the sum of a TCP/UDP/ICMPv6 pseudo-header: the addresses (4
// or 16 bytes each), the protocol and the upper-layer length.
func Pseudo(src, dst []byte, proto uint8, length int) uint32 {
	return Sum(dst, Sum(src, 0)) + uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
}
