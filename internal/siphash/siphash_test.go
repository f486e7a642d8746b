package siphash

import "testing"

// The reference vector of the SipHash paper (appendix A): key 00..0f,
// message 00..0e.
func TestSum64Vector(t *testing.T) {
	var m [15]byte
	for i := range m {
		m[i] = byte(i)
	}
	if got := Sum64(0x0706050403020100, 0x0f0e0d0c0b0a0908, m[:]); got != 0xa129ca6149be45e5 {
		t.Fatalf("SipHash-2-4 %#x", got)
	}
}
