package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// Hand-built packets and checks for the split and coalesce code. The
// checksum helpers here are deliberately naive (one 16-bit word at a time)
// so that they check offload.go's rather than repeat it.

var (
	v4Src = []byte{10, 77, 0, 1}
	v4Dst = []byte{10, 77, 0, 2}
	v6Src = []byte{0xfd, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	v6Dst = []byte{0xfd, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
)

func naiveSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func naiveFold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// l4Checksum computes the TCP/UDP checksum of IP packet p from scratch,
// with the checksum field taken as zero.
func l4Checksum(p []byte, v6 bool, l4 int, proto uint8, csumOff int) uint16 {
	seg := bytes.Clone(p[l4:])
	seg[csumOff], seg[csumOff+1] = 0, 0
	var ph []byte
	if v6 {
		ph = append(append([]byte{}, p[8:40]...), 0, 0, byte(len(seg)>>8), byte(len(seg)), 0, 0, 0, proto)
	} else {
		ph = append(append([]byte{}, p[12:20]...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	}
	return ^naiveFold(naiveSum(ph) + naiveSum(seg))
}

type pktSpec struct {
	v6      bool
	udp     bool
	sport   uint16
	dport   uint16
	seq     uint32
	ack     uint32
	flags   uint8
	id      uint16
	noDF    bool
	window  uint16
	tsval   uint32 // TCP timestamp option value
	payload []byte
}

// build makes a fully checksummed IPv4/IPv6 TCP (with a timestamp option)
// or UDP packet.
func (s pktSpec) build() []byte {
	ipHL := 20
	if s.v6 {
		ipHL = 40
	}
	l4HL := 32
	if s.udp {
		l4HL = 8
	}
	p := make([]byte, ipHL+l4HL+len(s.payload))
	proto := uint8(protoTCP)
	if s.udp {
		proto = protoUDP
	}
	if s.v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6] = proto
		p[7] = 64
		copy(p[8:], v6Src)
		copy(p[24:], v6Dst)
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		if !s.noDF {
			p[6] = 0x40
		}
		p[8] = 64
		p[9] = proto
		copy(p[12:], v4Src)
		copy(p[16:], v4Dst)
		binary.BigEndian.PutUint16(p[10:], ^naiveFold(naiveSum(p[:20])))
	}
	l4 := p[ipHL:]
	binary.BigEndian.PutUint16(l4[0:], s.sport)
	binary.BigEndian.PutUint16(l4[2:], s.dport)
	copy(p[ipHL+l4HL:], s.payload)
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		c := l4Checksum(p, s.v6, ipHL, protoUDP, 6)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
		return p
	}
	binary.BigEndian.PutUint32(l4[4:], s.seq)
	binary.BigEndian.PutUint32(l4[8:], s.ack)
	l4[12] = 8 << 4
	l4[13] = s.flags
	w := s.window
	if w == 0 {
		w = 501
	}
	binary.BigEndian.PutUint16(l4[14:], w)
	copy(l4[20:], []byte{1, 1, 8, 10})
	binary.BigEndian.PutUint32(l4[24:], s.tsval)
	binary.BigEndian.PutUint32(l4[28:], 0x01020304)
	binary.BigEndian.PutUint16(l4[16:], l4Checksum(p, s.v6, ipHL, protoTCP, 16))
	return p
}

// verifyPacket checks the IPv4 header checksum and the transport checksum
// of p by full recomputation, and the IP length fields.
func verifyPacket(t *testing.T, p []byte) {
	t.Helper()
	v6 := p[0]>>4 == 6
	l4, proto := 20, p[9]
	if v6 {
		l4, proto = 40, p[6]
		if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			t.Fatalf("IPv6 payload length %d for a %d-byte packet", binary.BigEndian.Uint16(p[4:]), len(p))
		}
	} else {
		if naiveFold(naiveSum(p[:20])) != 0xffff {
			t.Fatalf("bad IPv4 header checksum % x", p[:20])
		}
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			t.Fatalf("IPv4 total length %d for a %d-byte packet", binary.BigEndian.Uint16(p[2:]), len(p))
		}
	}
	off := 16
	if proto == protoUDP {
		off = 6
		if int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
			t.Fatalf("UDP length %d for %d bytes", binary.BigEndian.Uint16(p[l4+4:]), len(p)-l4)
		}
	}
	want := l4Checksum(p, v6, l4, proto, off)
	if proto == protoUDP && want == 0 {
		want = 0xffff
	}
	got := binary.BigEndian.Uint16(p[l4+off:])
	if got != want && !(got == 0xffff && want == 0) {
		t.Fatalf("transport checksum %#04x, want %#04x", got, want)
	}
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed + i>>8)
	}
	return b
}

// gsoPacket turns a packet built as one big segment into what the kernel
// hands out for GSO: virtio header, checksum field holding the
// pseudo-header sum.
func gsoPacket(p []byte, gsoType uint8, gsoSize int) []byte {
	v6 := p[0]>>4 == 6
	l4 := 20
	if v6 {
		l4 = 40
	}
	h := virtioHdr{flags: vnetFlagNeedsCsum, gsoType: gsoType, gsoSize: uint16(gsoSize), csumStart: uint16(l4)}
	proto := uint8(protoTCP)
	thl := int(p[l4+12]>>4) * 4
	h.csumOffset = 16
	if gsoType == vnetGSOUDPL4 {
		proto, thl, h.csumOffset = protoUDP, 8, 6
	}
	h.hdrLen = uint16(l4 + thl)
	out := make([]byte, virtioNetHdrLen+len(p))
	h.encode(out)
	q := out[virtioNetHdrLen:]
	copy(q, p)
	// What the kernel leaves there: the folded pseudo-header sum,
	// not complemented.
	var ph []byte
	n := len(q) - l4
	if v6 {
		ph = append(append([]byte{}, q[8:40]...), 0, 0, byte(n>>8), byte(n), 0, 0, 0, proto)
	} else {
		ph = append(append([]byte{}, q[12:20]...), 0, proto, byte(n>>8), byte(n))
	}
	binary.BigEndian.PutUint16(q[l4+int(h.csumOffset):], naiveFold(naiveSum(ph)))
	return out
}

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
		var s splitter
		if err := s.load(dst[:m]); err != nil {
			t.Fatalf("own super-packet rejected: %v", err)
		}
		buf := make([]byte, readBufSize)
		for i := 0; i < n; i++ {
			k, err := s.next(buf)
			if err != nil {
				t.Fatal(err)
			}
			want := pkts[i]
			if k != len(want) {
				t.Fatalf("segment %d: %d bytes, want %d", i, k, len(want))
			}
			pt, _ := parseTCPSeg(want)
			// Compare all but IPv4 ID/checksum and TCP checksum.
			got := bytes.Clone(buf[:k])
			w := bytes.Clone(want)
			for _, x := range [][]byte{got, w} {
				if !pt.v6 {
					copy(x[4:6], []byte{0, 0})
					copy(x[10:12], []byte{0, 0})
				}
				copy(x[pt.l4+16:pt.l4+18], []byte{0, 0})
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("segment %d differs:\n% x\nwant\n% x", i, got, w)
			}
		}
		if s.pending() {
			t.Fatal("more segments than coalesced")
		}
	})
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
			finishChecksum(sp, l4, 16)
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
