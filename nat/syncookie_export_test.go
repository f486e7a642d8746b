package nat

// SipHash24ForTest is SipHash-2-4 of the paper's test message (15 bytes
// 00..0e) under its key (00..0f).
func SipHash24ForTest() uint64 {
	var m [15]byte
	for i := range m {
		m[i] = byte(i)
	}
	return sipHash24(0x0706050403020100, 0x0f0e0d0c0b0a0908, m[:])
}
