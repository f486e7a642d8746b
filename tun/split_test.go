package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// splitAll splits b completely with buffers of bufSize bytes.
func splitAll(t *testing.T, b []byte, bufSize int) [][]byte {
	t.Helper()
	var s splitter
	if err := s.load(b); err != nil {
		t.Fatalf("load: %v", err)
	}
	var out [][]byte
	for s.pending() {
		dst := make([]byte, bufSize)
		n, err := s.next(dst)
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		out = append(out, dst[:n])
	}
	return out
}

func TestSplitTCP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const mss, total = 1000, 9500 // 9 full segments and a half
			payload := pattern(total, 3)
			spec := pktSpec{v6: v6, sport: 40000, dport: 5000, seq: 0xfffff000, ack: 77,
				flags: tcpFlagACK | tcpFlagPSH | tcpFlagFIN | tcpFlagCWR, id: 0xfffe, payload: payload}
			gt := uint8(vnetGSOTCPv4)
			if v6 {
				gt = vnetGSOTCPv6
			}
			segs := splitAll(t, gsoPacket(spec.build(), gt, mss), 1500)
			if len(segs) != 10 {
				t.Fatalf("%d segments, want 10", len(segs))
			}
			var got []byte
			for i, p := range segs {
				verifyPacket(t, p)
				pt, _ := parseSegAny(p)
				want := mss
				if i == 9 {
					want = total - 9*mss
				}
				if pt.payload != want {
					t.Fatalf("segment %d: payload %d, want %d", i, pt.payload, want)
				}
				if pt.seq != spec.seq+uint32(i*mss) {
					t.Fatalf("segment %d: seq %#x, want %#x", i, pt.seq, spec.seq+uint32(i*mss))
				}
				wantFlags := uint8(tcpFlagACK)
				if i == 0 {
					wantFlags |= tcpFlagCWR
				}
				if i == 9 {
					wantFlags |= tcpFlagPSH | tcpFlagFIN
				}
				if pt.flags != wantFlags {
					t.Fatalf("segment %d: flags %#x, want %#x", i, pt.flags, wantFlags)
				}
				if !v6 {
					if id := binary.BigEndian.Uint16(p[4:]); id != 0xfffe+uint16(i) {
						t.Fatalf("segment %d: IPv4 ID %#x, want %#x", i, id, 0xfffe+uint16(i))
					}
				}
				got = append(got, p[pt.hdrLen:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload differs after split")
			}
		})
	}
}

// parseSegAny is parseTCPSeg without the coalescing restrictions.
func parseSegAny(p []byte) (tcpSeg, bool) {
	var t tcpSeg
	t.v6 = p[0]>>4 == 6
	t.l4 = 20
	if t.v6 {
		t.l4 = 40
	}
	tcp := p[t.l4:]
	t.hdrLen = t.l4 + int(tcp[12]>>4)*4
	t.payload = len(p) - t.hdrLen
	t.flags = tcp[13]
	t.seq = binary.BigEndian.Uint32(tcp[4:])
	return t, true
}

func TestSplitUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const size, total = 1200, 5000
			payload := pattern(total, 9)
			spec := pktSpec{v6: v6, udp: true, sport: 4000, dport: 53, id: 100, payload: payload}
			segs := splitAll(t, gsoPacket(spec.build(), vnetGSOUDPL4, size), 1500)
			if len(segs) != 5 {
				t.Fatalf("%d segments, want 5", len(segs))
			}
			l4 := 20
			if v6 {
				l4 = 40
			}
			var got []byte
			for i, p := range segs {
				verifyPacket(t, p)
				if !v6 && binary.BigEndian.Uint16(p[4:]) != 100+uint16(i) {
					t.Fatalf("segment %d: IPv4 ID %d", i, binary.BigEndian.Uint16(p[4:]))
				}
				got = append(got, p[l4+8:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload differs after split")
			}
		})
	}
}

// TestSplitNeedsCsum checks a non-GSO packet with NEEDS_CSUM: the checksum
// is completed, the packet otherwise unchanged.
func TestSplitNeedsCsum(t *testing.T) {
	for _, udp := range []bool{false, true} {
		want := pktSpec{udp: udp, sport: 1, dport: 2, seq: 5, flags: tcpFlagACK, payload: pattern(333, 1)}.build()
		b := gsoPacket(want, vnetGSOTCPv4, 0)
		if udp {
			b = gsoPacket(want, vnetGSOUDPL4, 0)
		}
		b[1] = vnetGSONone
		segs := splitAll(t, b, 1500)
		if len(segs) != 1 || !bytes.Equal(segs[0], want) {
			t.Fatalf("udp=%v: got %d packets\n% x\nwant\n% x", udp, len(segs), segs, want)
		}
	}
}

func TestSplitSmallBufs(t *testing.T) {
	spec := pktSpec{sport: 1, dport: 2, seq: 1, flags: tcpFlagACK, payload: pattern(3000, 0)}
	var s splitter
	if err := s.load(gsoPacket(spec.build(), vnetGSOTCPv4, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.next(make([]byte, 100)); !errors.Is(err, errSegTooBig) {
		t.Fatalf("next into 100 bytes = %v, want errSegTooBig", err)
	}
	n := 0
	for s.pending() {
		if _, err := s.next(make([]byte, 1500)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d segments after the dropped one, want 2", n)
	}
}

func TestSplitMalformed(t *testing.T) {
	good := gsoPacket(pktSpec{sport: 1, dport: 2, flags: tcpFlagACK, payload: pattern(3000, 0)}.build(), vnetGSOTCPv4, 1000)
	for name, mod := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:5] },
		"gso size 0":   func(b []byte) []byte { b[4], b[5] = 0, 0; return b },
		"bad type":     func(b []byte) []byte { b[1] = 9; return b },
		"v6 type":      func(b []byte) []byte { b[1] = vnetGSOTCPv6; return b },
		"csum start":   func(b []byte) []byte { binary.NativeEndian.PutUint16(b[6:], 24); return b },
		"version":      func(b []byte) []byte { b[virtioNetHdrLen] = 0x75; return b },
		"tcp hdr long": func(b []byte) []byte { b[virtioNetHdrLen+20+12] = 0xf0; return b[:virtioNetHdrLen+50] },
		"csum off": func(b []byte) []byte {
			b[1] = vnetGSONone
			binary.NativeEndian.PutUint16(b[8:], 4000)
			return b
		},
	} {
		var s splitter
		if err := s.load(mod(bytes.Clone(good))); err == nil {
			t.Errorf("%s: load accepted it", name)
		}
	}
}

// FuzzSplit feeds arbitrary "kernel" packets to the splitter: it may
// reject them but must not panic, loop or write outside its buffer.
func FuzzSplit(f *testing.F) {
	f.Add(gsoPacket(pktSpec{sport: 1, dport: 2, flags: tcpFlagACK, payload: pattern(300, 0)}.build(), vnetGSOTCPv4, 100))
	f.Add(gsoPacket(pktSpec{v6: true, sport: 1, dport: 2, flags: tcpFlagACK, payload: pattern(300, 0)}.build(), vnetGSOTCPv6, 100))
	f.Add(gsoPacket(pktSpec{udp: true, sport: 1, dport: 2, payload: pattern(300, 0)}.build(), vnetGSOUDPL4, 70))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s splitter
		if s.load(b) != nil {
			return
		}
		dst := make([]byte, 1500)
		for i := 0; s.pending(); i++ {
			if i > len(b) {
				t.Fatal("splitter does not end")
			}
			n, err := s.next(dst)
			if err == nil && n > len(dst) {
				t.Fatalf("segment of %d bytes", n)
			}
		}
	})
}

func BenchmarkSplit64K(b *testing.B) {
	pkt := pktSpec{sport: 1, dport: 2, seq: 1, flags: tcpFlagACK, payload: pattern(65535-52, 0)}.build()
	in := gsoPacket(pkt, vnetGSOTCPv4, 1448)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	var s splitter
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.load(in); err != nil {
			b.Fatal(err)
		}
		for i := 0; s.pending(); i++ {
			if _, err := s.next(bufs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}
