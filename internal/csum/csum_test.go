package csum

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
)

// refSum and refChecksum are the reference (csumtest) the code under test
// is checked against; refSum's result is folded.
func refSum(b []byte) uint32 { return uint32(csumtest.Fold(csumtest.Sum(b, 0))) }

func refChecksum(b []byte) uint16 { return csumtest.Checksum(b, 0) }

func allZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestSumBytesMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		b := make([]byte, rng.Intn(300))
		rng.Read(b)
		switch i % 4 {
		case 1: // all ones: sums that wrap at every step
			for j := range b {
				b[j] = 0xff
			}
		case 2:
			clear(b)
		}
		initial := uint32(0)
		if i%3 == 0 {
			initial = uint32(rng.Intn(0x10000))
		}
		got := Sum(b, initial)
		ref := refSum(b)
		// refSum starts from 0; add the initial value the same way.
		want := ref + initial
		want = want&0xffff + want>>16
		want = want&0xffff + want>>16
		if got != want {
			t.Fatalf("Sum(len %d, %#x) = %#x, want %#x", len(b), initial, got, want)
		}
		if got > 0xffff {
			t.Fatalf("Sum returned unfolded %#x", got)
		}
		// Pieces of even length compose.
		if len(b) > 1 {
			cut := rng.Intn(len(b)/2) * 2
			if g := Sum(b[cut:], Sum(b[:cut], initial)); g != got {
				t.Fatalf("pieces at %d of %d: %#x, whole %#x", cut, len(b), g, got)
			}
		}
	}
}

func TestSumBytesLargeInitial(t *testing.T) {
	b := make([]byte, 65536+64)
	for i := range b {
		b[i] = 0xff
	}
	// Must not overflow, whatever the initial value.
	if got, want := Fold(Sum(b, 0xffffffff)), uint16(0xffff); got != want {
		t.Fatalf("got %#x, want %#x", got, want)
	}
}

func TestFoldSum(t *testing.T) {
	for _, c := range []struct {
		in   uint32
		want uint16
	}{
		{0, 0}, {0xffff, 0xffff}, {0x10000, 1}, {0x1fffe, 0xffff}, {0xffffffff, 0xffff}, {0x12345678, 0x68ac},
	} {
		if got := Fold(c.in); got != c.want {
			t.Errorf("Fold(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

func TestPseudoHeaderSum(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 2000; i++ {
		proto := uint8(rng.Intn(256))
		if i%2 == 0 {
			var src, dst [4]byte
			rng.Read(src[:])
			rng.Read(dst[:])
			n := rng.Intn(0x10000)
			ph := append(append(src[:], dst[:]...), 0, proto, byte(n>>8), byte(n))
			if got, want := Fold(Pseudo(src[:], dst[:], proto, n)), uint16(refSum(ph)); got != want {
				t.Fatalf("v4: got %#x, want %#x", got, want)
			}
			continue
		}
		var src, dst [16]byte
		rng.Read(src[:])
		rng.Read(dst[:])
		n := rng.Intn(1 << 20) // jumbo lengths have a high word
		ph := append(append(src[:], dst[:]...), 0, 0, 0, 0, 0, 0, 0, proto)
		binary.BigEndian.PutUint32(ph[32:], uint32(n))
		if got, want := Fold(Pseudo(src[:], dst[:], proto, n)), uint16(refSum(ph)); got != want {
			t.Fatalf("v6: got %#x, want %#x", got, want)
		}
	}
}

// randomWords fills an even-length buffer. Some buffers are mostly zero or
// mostly 0xFF, to reach the sums near ±0.
func randomWords(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	switch rng.Intn(4) {
	case 0:
		b[rng.Intn(n)] = byte(rng.Intn(256))
	case 1:
		for i := range b {
			b[i] = 0xff
		}
		b[rng.Intn(n)] = byte(rng.Intn(256))
	default:
		rng.Read(b)
	}
	return b
}

// forceChecksumZero changes the last word so that the buffer's checksum is
// 0x0000 (its sum 0xFFFF).
func forceChecksumZero(b []byte) {
	n := len(b)
	binary.BigEndian.PutUint16(b[n-2:], 0)
	s := refSum(b[:n-2])
	binary.BigEndian.PutUint16(b[n-2:], uint16(0xffff-s))
}

func TestUpdateWordRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	checked := 0
	for i := 0; i < 50000; i++ {
		b := randomWords(rng, 2*(1+rng.Intn(40)))
		if i%5 == 0 {
			forceChecksumZero(b) // old checksum 0x0000
		}
		hc := refChecksum(b)
		j := 2 * rng.Intn(len(b)/2)
		old := binary.BigEndian.Uint16(b[j:])
		var updated uint16
		switch rng.Intn(5) {
		case 0:
			updated = 0
		case 1:
			updated = 0xffff
		case 2:
			updated = old
		case 3: // make the new checksum 0x0000
			binary.BigEndian.PutUint16(b[j:], 0)
			updated = uint16(0xffff - refSum(b))
		default:
			updated = uint16(rng.Intn(0x10000))
		}
		binary.BigEndian.PutUint16(b[j:], updated)
		if allZeroBytes(b) {
			continue // only +0 sums to +0: no real packet is all zero
		}
		want := refChecksum(b)
		if got := Update(hc, old, updated); got != want {
			t.Fatalf("case %d: Update(%#04x, %#04x, %#04x) = %#04x, recomputed %#04x", i, hc, old, updated, got, want)
		}
		checked++
	}
	if checked < 40000 {
		t.Fatalf("only %d cases checked", checked)
	}
}

// A UDP checksum that computes to 0 is sent as 0xFFFF. Updating from that
// gives the same value as recomputing, once both map 0 to 0xFFFF again.
func TestUpdateFromAllOnes(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	udp := func(c uint16) uint16 {
		if c == 0 {
			return 0xffff
		}
		return c
	}
	for i := 0; i < 20000; i++ {
		b := randomWords(rng, 2*(2+rng.Intn(40)))
		forceChecksumZero(b)
		if refChecksum(b) != 0 {
			t.Fatal("forceChecksumZero failed")
		}
		j := 2 * rng.Intn(len(b)/2)
		old := binary.BigEndian.Uint16(b[j:])
		updated := uint16(rng.Intn(0x10000))
		if i%3 == 0 {
			updated = 0
		}
		binary.BigEndian.PutUint16(b[j:], updated)
		if allZeroBytes(b) {
			continue
		}
		if got, want := udp(Update(0xffff, old, updated)), udp(refChecksum(b)); got != want {
			t.Fatalf("from 0xFFFF: %#04x -> %#04x: got %#04x, want %#04x", old, updated, got, want)
		}
	}
}

func TestUpdateAddrRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	for i := 0; i < 30000; i++ {
		alen := 4
		if i%2 == 1 {
			alen = 16
		}
		b := randomWords(rng, 2*(alen/2+rng.Intn(30)))
		if i%7 == 0 {
			forceChecksumZero(b)
		}
		hc := refChecksum(b)
		j := 2 * rng.Intn((len(b)-alen)/2+1)
		var updated [16]byte
		switch rng.Intn(4) {
		case 0: // all zero
		case 1:
			for k := range updated {
				updated[k] = 0xff
			}
		default:
			rng.Read(updated[:])
		}
		var got uint16
		if alen == 4 {
			old := [4]byte(b[j : j+4])
			copy(b[j:], updated[:4])
			got = UpdateAddr4(hc, old, [4]byte(updated[:4]))
		} else {
			old := [16]byte(b[j : j+16])
			copy(b[j:], updated[:])
			got = UpdateAddr16(hc, old, updated)
		}
		if allZeroBytes(b) {
			continue
		}
		if want := refChecksum(b); got != want {
			t.Fatalf("case %d (%d-byte address at %d of %d): got %#04x, recomputed %#04x", i, alen, j, len(b), got, want)
		}
	}
}

// Known values: RFC 1071 section 3's example (and an odd length), RFC
// 1624 section 4's example, and an IPv4 header.
func TestKnownValues(t *testing.T) {
	if got := Fold(Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0)); got != 0xddf2 {
		t.Errorf("RFC 1071 example: sum %#04x, want 0xddf2", got)
	}
	if got := ^Fold(Sum([]byte{0xff}, 0)); got != 0x00ff {
		t.Errorf("odd length: checksum %#04x, want 0x00ff", got)
	}
	// RFC 1624: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000.
	if got := Update(0xdd2f, 0x5555, 0x3285); got != 0x0000 {
		t.Errorf("RFC 1624 example: got %#04x, want 0x0000", got)
	}
	// A classic header from the IPv4 checksum literature.
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := ^Fold(Sum(h, 0)); got != 0xb861 {
		t.Errorf("IPv4 header checksum: got %#04x, want 0xb861", got)
	}
	a := netip.MustParseAddr("192.168.0.1").As4()
	b := netip.MustParseAddr("10.1.2.3").As4()
	hc := UpdateAddr4(0xb861, a, b)
	copy(h[12:], b[:])
	if want := refChecksum(h); hc != want {
		t.Errorf("after address change: got %#04x, want %#04x", hc, want)
	}
}

func BenchmarkSum1500(b *testing.B) {
	buf := make([]byte, 1500)
	rand.New(rand.NewSource(1)).Read(buf)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Sum(buf, 0)
	}
}

// PseudoIP reads the addresses where IPv4 and IPv6 keep them.
func TestPseudoIP(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	for i := 0; i < 2000; i++ {
		v6 := i%2 == 1
		ip := make([]byte, 40)
		rng.Read(ip)
		proto, n := uint8(rng.Intn(256)), rng.Intn(0x10000)
		var ph []byte
		if v6 {
			ph = append(append([]byte{}, ip[8:40]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
		} else {
			ph = append(append([]byte{}, ip[12:20]...), 0, proto, byte(n>>8), byte(n))
		}
		if got, want := Fold(PseudoIP(ip, v6, proto, n)), uint16(refSum(ph)); got != want {
			t.Fatalf("v6=%v: got %#04x, recomputed %#04x", v6, got, want)
		}
	}
}

// SetIPv4Header's result verifies, whatever the field held before.
func TestSetIPv4Header(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		h := make([]byte, 20+4*rng.Intn(11)) // options included
		rng.Read(h)
		SetIPv4Header(h)
		if refSum(h) != 0xffff {
			t.Fatalf("header of %d bytes does not verify: sum %#04x", len(h), refSum(h))
		}
		want := h[10:12]
		c := bytes.Clone(h)
		c[10], c[11] = 0, 0
		if got := refChecksum(c); got != binary.BigEndian.Uint16(want) {
			t.Fatalf("stored %#04x, recomputed %#04x", binary.BigEndian.Uint16(want), got)
		}
	}
}

// Finish from a pseudo-header sum gives the full recomputation, with a
// zero result stored as 0xFFFF.
func TestFinish(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	zeros := 0
	for i := 0; i < 20000; i++ {
		start, off := 2*rng.Intn(30), 2*rng.Intn(10)
		b := make([]byte, start+off+2+rng.Intn(200))
		rng.Read(b)
		seg := bytes.Clone(b[start:])
		binary.BigEndian.PutUint16(seg[off:], 0)
		ps := uint32(rng.Intn(0x10000))
		if i%4 == 0 {
			// A pseudo-header sum that makes the checksum 0.
			ps = 0xffff - refSum(seg)
		}
		w := refSum(seg) + ps
		w = w&0xffff + w>>16
		want := ^uint16(w)
		if want == 0 {
			want = 0xffff
			zeros++
		}
		binary.BigEndian.PutUint16(b[start+off:], uint16(ps))
		Finish(b, start, off)
		if got := binary.BigEndian.Uint16(b[start+off:]); got != want {
			t.Fatalf("case %d: Finish stored %#04x, recomputed %#04x", i, got, want)
		}
	}
	if zeros == 0 {
		t.Fatal("no case had a zero checksum")
	}
}
