package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tunvs/tunvs/internal/csum"
)

// FuzzCoalesce coalesces arbitrary packet lists: no panic, and whatever it
// builds splits back into the packets it was built from (up to the
// checksums, which coalescing does not check and splitting recomputes).
func FuzzCoalesce(f *testing.F) {
	segs := segments(false, 3, 100, 50)
	f.Add(segs[0], segs[1], segs[2])
	segs = segments(true, 3, 100, 100)
	f.Add(segs[0], segs[1], segs[2])
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		pkts := [][]byte{a, b, c}
		n := coalesceRun(pkts, 0)
		if n < 1 || n > 3 {
			t.Fatalf("run of %d", n)
		}
		if n == 1 {
			return
		}
		dst := make([]byte, readBufSize)
		m := coalesce(dst, pkts[:n], 0)
		checkSplitsBack(t, dst[:m], pkts[:n], func(p []byte) (bool, int) {
			pt, _ := parseTCPSeg(p)
			return pt.v6, pt.l4 + 16
		})
	})
}

// checkSplitsBack checks that super-packet sp (virtio header first)
// splits into pkts and no more, up to what coalescing does not keep and
// splitting recomputes: the IPv4 ID and header checksum, and the L4
// checksum, which csumAt finds in a packet (with its IP version).
func checkSplitsBack(t *testing.T, sp []byte, pkts [][]byte, csumAt func([]byte) (v6 bool, at int)) {
	t.Helper()
	var s splitter
	if err := s.load(sp); err != nil {
		t.Fatalf("own super-packet rejected: %v", err)
	}
	buf := make([]byte, readBufSize)
	for i, want := range pkts {
		k, err := s.next(buf)
		if err != nil {
			t.Fatal(err)
		}
		if k != len(want) {
			t.Fatalf("packet %d: %d bytes, want %d", i, k, len(want))
		}
		v6, at := csumAt(want)
		got, w := bytes.Clone(buf[:k]), bytes.Clone(want)
		for _, x := range [][]byte{got, w} {
			if !v6 {
				copy(x[4:6], []byte{0, 0})
				copy(x[10:12], []byte{0, 0})
			}
			copy(x[at:at+2], []byte{0, 0})
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("packet %d differs:\n% x\nwant\n% x", i, got, w)
		}
	}
	if s.pending() {
		t.Fatal("more packets than coalesced")
	}
}

// segments builds n TCP segments of one flow with mss-byte payloads (the
// last one last bytes), IDs counting up and PSH on the last.
func segments(v6 bool, n, mss, last int) [][]byte {
	var out [][]byte
	seq := uint32(0xfffffe00)
	for i := 0; i < n; i++ {
		size := mss
		if i == n-1 {
			size = last
		}
		flags := uint8(tcpFlagACK)
		if i == n-1 {
			flags |= tcpFlagPSH
		}
		out = append(out, pktSpec{v6: v6, sport: 5000, dport: 40000, seq: seq, ack: 1234, flags: flags,
			id: uint16(0xfff0 + i), tsval: 99, payload: pattern(size, i)}.build())
		seq += uint32(size)
	}
	return out
}

func withOffset(pkts [][]byte, off int) [][]byte {
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = append(make([]byte, off), p...)
	}
	return out
}

// TestCoalesceRoundTrip coalesces a run and splits it again: the result
// must be the original packets, byte for byte.
func TestCoalesceRoundTrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			pkts := segments(v6, 20, 1400, 700)
			bufs := withOffset(pkts, 16)
			if n := coalesceRun(bufs, 16); n != 20 {
				t.Fatalf("run of %d, want 20", n)
			}
			dst := make([]byte, readBufSize)
			n := coalesce(dst, bufs, 16)
			var h virtioHdr
			h.decode(dst)
			wantType := uint8(vnetGSOTCPv4)
			l4 := 20
			if v6 {
				wantType, l4 = vnetGSOTCPv6, 40
			}
			if h.gsoType != wantType || h.gsoSize != 1400 || h.flags != vnetFlagNeedsCsum ||
				int(h.hdrLen) != l4+32 || int(h.csumStart) != l4 || h.csumOffset != 16 {
				t.Fatalf("virtio header %+v", h)
			}
			// The kernel's view: completing the checksum over the whole
			// super-packet gives a valid TCP checksum.
			sp := bytes.Clone(dst[virtioNetHdrLen:n])
			csum.Finish(sp, l4, 16)
			verifyPacket(t, sp)

			got := splitAll(t, dst[:n], 1500)
			if len(got) != len(pkts) {
				t.Fatalf("%d packets back, want %d", len(got), len(pkts))
			}
			for i := range pkts {
				if !bytes.Equal(got[i], pkts[i]) {
					t.Fatalf("packet %d differs:\n% x\nwant\n% x", i, got[i][:80], pkts[i][:80])
				}
			}
		})
	}
}

func TestCoalesceRunBoundaries(t *testing.T) {
	base := func() [][]byte { return segments(false, 4, 1000, 1000) }
	for _, tc := range []struct {
		name string
		mod  func([][]byte) [][]byte
		want int
	}{
		{"all", func(p [][]byte) [][]byte {
			p[3] = pktSpec{sport: 5000, dport: 40000, seq: seqAt(3000), ack: 1234, flags: tcpFlagACK,
				id: 0xfff3, tsval: 99, payload: pattern(1000, 3)}.build()
			return p
		}, 4},
		{"psh ends run", func(p [][]byte) [][]byte { return p }, 4},
		{"psh first", func(p [][]byte) [][]byte { p[0][20+13] |= tcpFlagPSH; return p }, 1},
		{"seq gap", func(p [][]byte) [][]byte { p[2][20+7]++; return p }, 2},
		{"other port", func(p [][]byte) [][]byte { p[1][20+1]++; return p }, 1},
		{"other ack", func(p [][]byte) [][]byte { p[2][20+11]++; return p }, 2},
		{"other window", func(p [][]byte) [][]byte { p[1][20+15]++; return p }, 1},
		{"other option", func(p [][]byte) [][]byte { p[1][20+27]++; return p }, 1},
		{"other ttl", func(p [][]byte) [][]byte { p[1][8]--; return p }, 1},
		{"no DF", func(p [][]byte) [][]byte { p[0][6] = 0; return p }, 1},
		{"fin", func(p [][]byte) [][]byte { p[1][20+13] |= tcpFlagFIN; return p }, 1},
		{"bigger later", func(p [][]byte) [][]byte { p[1] = append(p[1], 0); p[1][3]++; return p }, 1},
		{"short ends run", func(p [][]byte) [][]byte {
			p[1] = p[1][:len(p[1])-10]
			binary.BigEndian.PutUint16(p[1][2:], uint16(len(p[1])))
			return p
		}, 2},
		{"udp", func(p [][]byte) [][]byte {
			p[0] = pktSpec{udp: true, sport: 1, dport: 2, payload: pattern(10, 0)}.build()
			return p
		}, 1},
		{"no payload", func(p [][]byte) [][]byte {
			p[0] = p[0][:52]
			binary.BigEndian.PutUint16(p[0][2:], 52)
			return p
		}, 1},
	} {
		if got := coalesceRun(tc.mod(base()), 0); got != tc.want {
			t.Errorf("%s: run of %d, want %d", tc.name, got, tc.want)
		}
	}
	// 64 KiB cap: 50 segments of 1400 bytes exceed it.
	p := segments(true, 50, 1400, 1400)
	n := coalesceRun(p, 0)
	if n != (maxIPPacket-32)/1400 {
		t.Errorf("run of %d 1400-byte segments, want %d", n, (maxIPPacket-32)/1400)
	}
	dst := make([]byte, readBufSize)
	if got := coalesce(dst, p[:n], 0); got-virtioNetHdrLen-40 > maxIPPacket {
		t.Errorf("super-packet payload %d > 65535", got-virtioNetHdrLen-40)
	}
}

func BenchmarkCoalesce(b *testing.B) {
	pkts := withOffset(segments(false, 44, 1448, 1448), 16)
	dst := make([]byte, readBufSize)
	var size int64
	for _, p := range pkts {
		size += int64(len(p) - 16)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(pkts); {
			n := coalesceRun(pkts[i:], 16)
			if n > 1 {
				coalesce(dst, pkts[i:i+n], 16)
			}
			i += n
		}
	}
}

// seqAt is the sequence number n bytes into the stream segments makes
// (wrapping around 2^32).
func seqAt(n uint32) uint32 {
	s := uint32(0xfffffe00)
	return s + n
}
