// Package siphash is the SipHash permutation and SipHash-2-4, as the
// kernel's lib/siphash.c has them: the IPVS mh scheduler's hsiphash and
// the SYN cookies' keyed hash are built on it.
package siphash

import (
	"encoding/binary"
	"math/bits"
)

// Initial state constants ("somepseudorandomlygeneratedbytes").
const (
	C0 = 0x736f6d6570736575
	C1 = 0x646f72616e646f6d
	C2 = 0x6c7967656e657261
	C3 = 0x7465646279746573
)

// Round is one SipHash round (SIPHASH_PERMUTATION).
func Round(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// Sum64 is SipHash-2-4 of b under the key (k0, k1): the kernel's siphash.
func Sum64(k0, k1 uint64, b []byte) uint64 {
	v0, v1, v2, v3 := C0^k0, C1^k1, C2^k0, C3^k1
	n := len(b)
	for ; len(b) >= 8; b = b[8:] {
		m := binary.LittleEndian.Uint64(b)
		v3 ^= m
		v0, v1, v2, v3 = Round(v0, v1, v2, v3)
		v0, v1, v2, v3 = Round(v0, v1, v2, v3)
		v0 ^= m
	}
	var last [8]byte
	copy(last[:], b)
	last[7] = byte(n)
	m := binary.LittleEndian.Uint64(last[:])
	v3 ^= m
	v0, v1, v2, v3 = Round(v0, v1, v2, v3)
	v0, v1, v2, v3 = Round(v0, v1, v2, v3)
	v0 ^= m
	v2 ^= 0xff
	for range 4 {
		v0, v1, v2, v3 = Round(v0, v1, v2, v3)
	}
	return v0 ^ v1 ^ v2 ^ v3
}
