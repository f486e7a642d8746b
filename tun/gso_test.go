package tun_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tunvs/tunvs/tun"
)

// Tests of the exported offload API (gso.go): GSO.InPlace, FinishChecksum
// and Splitter, on packets built here and checked with checksum code of
// its own (one 16-bit word at a time), not offload.go's.

const (
	tFIN = 0x01
	tSYN = 0x02
	tPSH = 0x08
	tACK = 0x10
	tCWR = 0x80
)

// spec describes a packet to build.
type spec struct {
	v6       bool
	udp      bool
	proto    uint8 // overrides TCP/UDP when not zero (ICMP, say)
	ipOpts   int   // IPv4 option bytes (a multiple of 4: IHL > 5)
	destOpts bool  // IPv6: a Destination Options header before TCP/UDP
	frag     uint16
	tcpOpts  int // TCP option bytes (a multiple of 4)
	flags    uint8
	seq, ack uint32
	id       uint16
	ttl      uint8
	payload  []byte
}

var (
	src4 = []byte{10, 9, 0, 1}
	dst4 = []byte{192, 168, 200, 7}
	src6 = []byte{0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd}
	dst6 = []byte{0xfd, 0, 0, 0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0x07}
)

// The naive (one word at a time) checksum of offload_test.go.
var (
	wsum  = tun.NaiveSum
	wfold = tun.NaiveFold
)

// l4At returns the offset of the transport header, its protocol and the
// offset of its checksum within it, for the packets spec builds.
func l4At(p []byte) (l4 int, proto uint8, csumOff int) {
	if p[0]>>4 == 6 {
		l4, proto = 40, p[6]
		if proto == 60 {
			proto = p[40]
			l4 += (int(p[41]) + 1) * 8
		}
	} else {
		l4, proto = int(p[0]&0xf)*4, p[9]
	}
	csumOff = 16
	if proto == 17 {
		csumOff = 6
	}
	return l4, proto, csumOff
}

// pseudo is the pseudo-header sum of p's transport segment.
func pseudo(p []byte) uint32 {
	l4, proto, _ := l4At(p)
	n := uint32(len(p) - l4)
	if p[0]>>4 == 6 {
		return wsum(p[8:40]) + uint32(proto) + n
	}
	return wsum(p[12:20]) + uint32(proto) + n
}

// l4SumOK reports whether p's transport checksum is right.
func l4SumOK(p []byte) bool {
	l4, _, _ := l4At(p)
	return wfold(wsum(p[l4:])+pseudo(p)) == 0xffff
}

func ip4SumOK(p []byte) bool { return wfold(wsum(p[:int(p[0]&0xf)*4])) == 0xffff }

// build makes the packet, fully checksummed.
func (s spec) build() []byte {
	ipHL := 20 + s.ipOpts
	if s.v6 {
		ipHL = 40
		if s.destOpts {
			ipHL += 8
		}
	}
	proto := uint8(6)
	l4HL := 20 + s.tcpOpts
	if s.udp {
		proto, l4HL = 17, 8
	}
	if s.proto != 0 {
		proto, l4HL = s.proto, 8
	}
	p := make([]byte, ipHL+l4HL+len(s.payload))
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	if s.v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = proto, ttl
		copy(p[8:], src6)
		copy(p[24:], dst6)
		if s.destOpts {
			p[6] = 60
			p[40], p[41] = proto, 0
			p[42], p[43] = 1, 4 // PadN, 4 bytes
		}
	} else {
		p[0] = 0x40 | byte(ipHL/4)
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		binary.BigEndian.PutUint16(p[6:], 0x4000|s.frag)
		if s.frag != 0 {
			binary.BigEndian.PutUint16(p[6:], s.frag)
		}
		p[8], p[9] = ttl, proto
		copy(p[12:], src4)
		copy(p[16:], dst4)
		for i := 20; i < ipHL; i++ {
			p[i] = 1 // NOP options
		}
		binary.BigEndian.PutUint16(p[10:], ^wfold(wsum(p[:ipHL])))
	}
	l4 := p[ipHL:]
	binary.BigEndian.PutUint16(l4[0:], 40001)
	binary.BigEndian.PutUint16(l4[2:], 443)
	copy(l4[l4HL:], s.payload)
	switch proto {
	case 6:
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = byte(l4HL/4) << 4
		l4[13] = s.flags
		binary.BigEndian.PutUint16(l4[14:], 1000)
		for i := 20; i < l4HL; i++ {
			l4[i] = 1 // NOP options
		}
		binary.BigEndian.PutUint16(l4[16:], ^wfold(wsum(l4)+pseudo(p)))
	case 17:
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		c := ^wfold(wsum(l4) + pseudo(p))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	return p
}

// partial makes p's checksum partial, as a device leaves it, and returns
// the GSO state of an ordinary packet with that checksum.
func partial(p []byte) tun.GSO {
	l4, _, off := l4At(p)
	binary.BigEndian.PutUint16(p[l4+off:], wfold(pseudo(p)))
	return tun.GSO{NeedsCsum: true, CsumStart: uint16(l4), CsumOffset: uint16(off)}
}

// super makes p a super-packet of size-byte segments: partial checksum,
// header length, type.
func super(p []byte, size int) tun.GSO {
	g := partial(p)
	l4, proto, _ := l4At(p)
	g.Size = uint16(size)
	switch {
	case proto == 17:
		g.Type, g.HdrLen = tun.GSOUDPL4, uint16(l4+8)
	case p[0]>>4 == 6:
		g.Type, g.HdrLen = tun.GSOTCPv6, uint16(l4+int(p[l4+12]>>4)*4)
	default:
		g.Type, g.HdrLen = tun.GSOTCPv4, uint16(l4+int(p[l4+12]>>4)*4)
	}
	return g
}

func fill(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + seed + i>>9)
	}
	return b
}

func TestGSOSegLenPending(t *testing.T) {
	for _, tc := range []struct {
		g       tun.GSO
		segLen  int
		pending bool
	}{
		{tun.GSO{}, 0, false},
		{tun.GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}, 0, true},
		{tun.GSO{Type: tun.GSOTCPv4, NeedsCsum: true, HdrLen: 52, Size: 1448}, 1500, true},
		{tun.GSO{Type: tun.GSOTCPv6, NeedsCsum: true, HdrLen: 60, Size: 1440}, 1500, true},
		{tun.GSO{Type: tun.GSOUDPL4, NeedsCsum: true, HdrLen: 28, Size: 1472}, 1500, true},
		{tun.GSO{Type: tun.GSOTCPv4, HdrLen: 40, Size: 65535}, 65575, true}, // no int16 overflow
	} {
		if got := tc.g.SegLen(); got != tc.segLen {
			t.Errorf("%+v: SegLen %d, want %d", tc.g, got, tc.segLen)
		}
		if got := tc.g.Pending(); got != tc.pending {
			t.Errorf("%+v: Pending %v, want %v", tc.g, got, tc.pending)
		}
	}
}

// InPlace accepts partial TCP and UDP checksums right after a plain IP
// header, and nothing it would take the NAT's parse to find elsewhere.
func TestGSOInPlace(t *testing.T) {
	tcp4 := spec{flags: tACK, payload: fill(100, 1)}
	tcp6 := spec{v6: true, flags: tACK, payload: fill(100, 1)}
	udp4 := spec{udp: true, payload: fill(100, 1)}
	udp6 := spec{v6: true, udp: true, payload: fill(100, 1)}
	csum := func(start, off uint16) tun.GSO { return tun.GSO{NeedsCsum: true, CsumStart: start, CsumOffset: off} }
	typed := func(g tun.GSO, ty tun.GSOType) tun.GSO {
		g.Type, g.HdrLen, g.Size = ty, g.CsumStart+20, 50
		if ty == tun.GSOUDPL4 {
			g.HdrLen = g.CsumStart + 8
		}
		return g
	}
	withOpts := func(s spec, n int) spec { s.ipOpts = n; return s }
	frag := func(s spec, f uint16) spec { s.frag = f; return s }
	ext := func(s spec) spec { s.destOpts = true; return s }
	icmp := spec{proto: 1, payload: fill(10, 0)}
	for _, tc := range []struct {
		name string
		pkt  []byte
		g    tun.GSO
		want bool
	}{
		{"ordinary", tcp4.build(), tun.GSO{}, true},
		{"ordinary junk", []byte{0xff}, tun.GSO{}, true},
		{"tcp4 partial", tcp4.build(), csum(20, 16), true},
		{"tcp4 super", tcp4.build(), typed(csum(20, 16), tun.GSOTCPv4), true},
		{"tcp4 ihl6", withOpts(tcp4, 4).build(), csum(24, 16), true},
		{"tcp4 ihl15 super", withOpts(tcp4, 40).build(), typed(csum(60, 16), tun.GSOTCPv4), true},
		{"tcp4 ihl6 start 20", withOpts(tcp4, 4).build(), csum(20, 16), false},
		{"tcp4 start 24", tcp4.build(), csum(24, 16), false},
		{"tcp4 offset 6", tcp4.build(), csum(20, 6), false},
		{"tcp4 offset 18", tcp4.build(), csum(20, 18), false},
		{"tcp4 UDP type", tcp4.build(), typed(csum(20, 16), tun.GSOUDPL4), false},
		{"tcp4 unknown type", tcp4.build(), typed(csum(20, 16), tun.GSOType(9)), false},
		{"tcp4 super without csum", tcp4.build(), tun.GSO{Type: tun.GSOTCPv4, HdrLen: 40, Size: 50, CsumStart: 20, CsumOffset: 16}, false},
		{"tcp4 MF", frag(tcp4, 0x2000).build(), csum(20, 16), false},
		{"tcp4 offset frag", frag(tcp4, 0x0010).build(), csum(20, 16), false},
		{"tcp4 truncated", tcp4.build()[:30], csum(20, 16), false},
		{"tcp4 short", tcp4.build()[:19], csum(20, 16), false},
		{"udp4 partial", udp4.build(), csum(20, 6), true},
		{"udp4 super", udp4.build(), typed(csum(20, 6), tun.GSOUDPL4), true},
		{"udp4 offset 16", udp4.build(), csum(20, 16), false},
		{"udp4 TCP type", udp4.build(), typed(csum(20, 6), tun.GSOTCPv4), false},
		{"udp4 TCPv6 type", udp4.build(), typed(csum(20, 6), tun.GSOTCPv6), false},
		{"udp4 truncated", udp4.build()[:27], csum(20, 6), false},
		{"tcp6 partial", tcp6.build(), csum(40, 16), true},
		{"tcp6 super", tcp6.build(), typed(csum(40, 16), tun.GSOTCPv6), true},
		{"tcp6 start 20", tcp6.build(), csum(20, 16), false},
		{"tcp6 UDP type", tcp6.build(), typed(csum(40, 16), tun.GSOUDPL4), false},
		{"tcp6 dest opts", ext(tcp6).build(), csum(48, 16), false},
		{"tcp6 dest opts super", ext(tcp6).build(), typed(csum(48, 16), tun.GSOTCPv6), false},
		{"tcp6 dest opts start 40", ext(tcp6).build(), csum(40, 16), false},
		{"tcp6 short", tcp6.build()[:39], csum(40, 16), false},
		{"udp6 partial", udp6.build(), csum(40, 6), true},
		{"udp6 super", udp6.build(), typed(csum(40, 6), tun.GSOUDPL4), true},
		{"udp6 TCP type", udp6.build(), typed(csum(40, 6), tun.GSOTCPv6), false},
		{"udp6 dest opts", ext(udp6).build(), csum(48, 6), false},
		{"icmp partial", icmp.build(), csum(20, 2), false},
		{"version 5", append([]byte{0x55}, tcp4.build()[1:]...), csum(20, 16), false},
	} {
		if got := tc.g.InPlace(tc.pkt); got != tc.want {
			t.Errorf("%s: InPlace(%+v) = %v, want %v", tc.name, tc.g, got, tc.want)
		}
	}
}

// A TCP super-packet's type names its IP version: GSOTCPv4 on an IPv6
// packet (or GSOTCPv6 on IPv4) is not a state a router may pass on as it
// is. The Splitter refuses both (see TestSplitterMalformed), a device
// would cut the packet as the wrong version, so InPlace must refuse them
// too rather than send them whole to WriteGSO.
//
// Fails at the time of writing: InPlace checks the transport protocol
// against the type but not the IP version (tun/gso.go, the protoTCP case
// of GSO.InPlace).
func TestGSOInPlaceTypeMatchesIPVersion(t *testing.T) {
	tcp4 := spec{flags: tACK, payload: fill(100, 1)}.build()
	tcp6 := spec{v6: true, flags: tACK, payload: fill(100, 1)}.build()
	for _, tc := range []struct {
		name string
		pkt  []byte
		g    tun.GSO
	}{
		{"TCPv4 on IPv6", tcp6, tun.GSO{Type: tun.GSOTCPv4, NeedsCsum: true, HdrLen: 60, Size: 50, CsumStart: 40, CsumOffset: 16}},
		{"TCPv6 on IPv4", tcp4, tun.GSO{Type: tun.GSOTCPv6, NeedsCsum: true, HdrLen: 40, Size: 50, CsumStart: 20, CsumOffset: 16}},
	} {
		if tc.g.InPlace(tc.pkt) {
			t.Errorf("%s: InPlace(%+v) = true, want false", tc.name, tc.g)
		}
		var sp tun.Splitter
		if sp.Load(bytes.Clone(tc.pkt), tc.g) == nil {
			t.Errorf("%s: the Splitter accepts it too", tc.name)
		}
	}
}

// FinishChecksum gives the bytes of a full computation.
func TestFinishChecksum(t *testing.T) {
	for _, s := range []spec{
		{flags: tACK, payload: fill(1000, 1)},
		{flags: tACK | tPSH, payload: fill(333, 2), tcpOpts: 12}, // odd length
		{ipOpts: 8, flags: tACK, payload: fill(77, 3)},
		{v6: true, flags: tSYN},
		{v6: true, flags: tACK, payload: fill(1441, 4)},
		{udp: true, payload: fill(512, 5)},
		{udp: true, payload: fill(1, 6)},
		{v6: true, udp: true, payload: fill(999, 7)},
	} {
		for seed := range 50 {
			s.payload = fill(len(s.payload), seed)
			s.seq = uint32(seed) * 0x01010101
			want := s.build()
			p := bytes.Clone(want)
			g := partial(p)
			if !tun.FinishChecksum(p, g) {
				t.Fatalf("%+v: FinishChecksum refused it", g)
			}
			l4, _, off := l4At(p)
			if !bytes.Equal(p, want) {
				// A sum of zero is stored as 0xffff, the same value.
				c, w := binary.BigEndian.Uint16(p[l4+off:]), binary.BigEndian.Uint16(want[l4+off:])
				if c != 0xffff || w != 0 || !bytes.Equal(p[:l4+off], want[:l4+off]) || !bytes.Equal(p[l4+off+2:], want[l4+off+2:]) {
					t.Fatalf("v6=%v udp=%v len %d: finished\n% x\nwant\n% x", s.v6, s.udp, len(p), p, want)
				}
			}
			if !l4SumOK(p) {
				t.Fatal("checksum wrong")
			}
		}
	}
}

// FinishChecksum refuses, changing nothing, what it cannot finish.
func TestFinishChecksumRefuses(t *testing.T) {
	p := spec{flags: tACK, payload: fill(100, 1)}.build()
	g := partial(p)
	for name, tc := range map[string]struct {
		pkt []byte
		g   tun.GSO
	}{
		"not partial":         {p, tun.GSO{CsumStart: 20, CsumOffset: 16}},
		"super-packet":        {p, tun.GSO{Type: tun.GSOTCPv4, NeedsCsum: true, HdrLen: 40, Size: 50, CsumStart: 20, CsumOffset: 16}},
		"field past the end":  {p[:37], g},
		"start past the end":  {p, tun.GSO{NeedsCsum: true, CsumStart: 500, CsumOffset: 16}},
		"offset past the end": {p, tun.GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 0xffff}},
		"empty":               {nil, g},
	} {
		before := bytes.Clone(tc.pkt)
		if tun.FinishChecksum(tc.pkt, tc.g) {
			t.Errorf("%s: FinishChecksum accepted %+v", name, tc.g)
		}
		if !bytes.Equal(before, tc.pkt) {
			t.Errorf("%s: packet changed", name)
		}
	}
}

// splitAll loads pkt and hands out all its packets.
func splitAll(t *testing.T, pkt []byte, g tun.GSO) [][]byte {
	t.Helper()
	var sp tun.Splitter
	if err := sp.Load(pkt, g); err != nil {
		t.Fatalf("Load(%+v): %v", g, err)
	}
	var out [][]byte
	buf := make([]byte, tun.MaxGSOPacket)
	for sp.Pending() {
		n, err := sp.Next(buf)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, bytes.Clone(buf[:n]))
		if len(out) > 1000 {
			t.Fatal("Splitter does not stop")
		}
	}
	return out
}

// A TCP super-packet is cut into segments of Size bytes of payload (the
// last shorter) with the headers repeated: lengths, sequence numbers and
// IPv4 IDs advanced, FIN and PSH on the last segment only, CWR on the
// first only, IP and TCP checksums right, addresses, ports, options and
// the payload intact.
func TestSplitterTCP(t *testing.T) {
	for _, tc := range []struct {
		name           string
		s              spec
		size, segments int
	}{
		{"v4", spec{tcpOpts: 12}, 1000, 4},
		{"v4 ihl7", spec{ipOpts: 8}, 1448, 3},
		{"v4 exact", spec{}, 1000, 3},
		{"v4 one segment", spec{}, 9000, 1},
		{"v6", spec{v6: true, tcpOpts: 12}, 1000, 4},
		{"v6 exact", spec{v6: true}, 1220, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			total := 3500
			if tc.name == "v4 exact" || tc.name == "v6 exact" {
				total = 3 * tc.size
			}
			s.payload = fill(total, 11)
			s.flags = tACK | tPSH | tFIN | tCWR
			s.seq, s.ack, s.id = 0xffffff00, 0x55667788, 0xfffe
			orig := s.build()
			p := bytes.Clone(orig)
			g := super(p, tc.size)
			hdrLen := int(g.HdrLen)
			l4, _, _ := l4At(orig)
			segs := splitAll(t, p, g)
			if len(segs) != tc.segments {
				t.Fatalf("%d segments, want %d", len(segs), tc.segments)
			}
			var data []byte
			for i, seg := range segs {
				last := i == len(segs)-1
				want := tc.size
				if last {
					want = total - i*tc.size
				}
				if len(seg) != hdrLen+want {
					t.Fatalf("segment %d: %d bytes, want %d", i, len(seg), hdrLen+want)
				}
				if s.v6 {
					if n := int(binary.BigEndian.Uint16(seg[4:])); n != len(seg)-40 {
						t.Errorf("segment %d: payload length %d", i, n)
					}
				} else {
					if n := int(binary.BigEndian.Uint16(seg[2:])); n != len(seg) {
						t.Errorf("segment %d: total length %d", i, n)
					}
					if id := binary.BigEndian.Uint16(seg[4:]); id != s.id+uint16(i) {
						t.Errorf("segment %d: IPv4 ID %#x, want %#x", i, id, s.id+uint16(i))
					}
					if !ip4SumOK(seg) {
						t.Errorf("segment %d: IPv4 header checksum wrong", i)
					}
					// Everything else in the IP header as sent.
					if !bytes.Equal(seg[6:10], orig[6:10]) || !bytes.Equal(seg[12:l4], orig[12:l4]) || seg[0] != orig[0] || seg[1] != orig[1] {
						t.Errorf("segment %d: IP header % x, sent % x", i, seg[:l4], orig[:l4])
					}
				}
				if s.v6 && !bytes.Equal(seg[6:40], orig[6:40]) {
					t.Errorf("segment %d: IPv6 header changed", i)
				}
				tcp := seg[l4:]
				if seq := binary.BigEndian.Uint32(tcp[4:]); seq != s.seq+uint32(i*tc.size) {
					t.Errorf("segment %d: seq %#x, want %#x", i, seq, s.seq+uint32(i*tc.size))
				}
				wantFlags := uint8(tACK)
				if i == 0 {
					wantFlags |= tCWR
				}
				if last {
					wantFlags |= tPSH | tFIN
				}
				if tcp[13] != wantFlags {
					t.Errorf("segment %d: flags %#x, want %#x", i, tcp[13], wantFlags)
				}
				// Ports, ack, data offset, window, urgent pointer, options.
				otcp := orig[l4:hdrLen]
				if !bytes.Equal(tcp[:4], otcp[:4]) || !bytes.Equal(tcp[8:13], otcp[8:13]) ||
					!bytes.Equal(tcp[14:16], otcp[14:16]) || !bytes.Equal(tcp[18:hdrLen-l4], otcp[18:]) {
					t.Errorf("segment %d: TCP header % x, sent % x", i, tcp[:hdrLen-l4], otcp)
				}
				if !l4SumOK(seg) {
					t.Errorf("segment %d: TCP checksum wrong", i)
				}
				data = append(data, seg[hdrLen:]...)
			}
			if !bytes.Equal(data, s.payload) {
				t.Error("payload differs after the split")
			}
		})
	}
}

// A UDP super-packet (USO) is cut into datagrams of their own.
func TestSplitterUDP(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const size, total = 1200, 4000
			s := spec{v6: v6, udp: true, id: 0xffff, payload: fill(total, 5)}
			orig := s.build()
			p := bytes.Clone(orig)
			g := super(p, size)
			segs := splitAll(t, p, g)
			if len(segs) != 4 {
				t.Fatalf("%d datagrams, want 4", len(segs))
			}
			l4, _, _ := l4At(orig)
			var data []byte
			for i, seg := range segs {
				want := size
				if i == 3 {
					want = total - 3*size
				}
				if len(seg) != l4+8+want {
					t.Fatalf("datagram %d: %d bytes", i, len(seg))
				}
				if n := int(binary.BigEndian.Uint16(seg[l4+4:])); n != 8+want {
					t.Errorf("datagram %d: UDP length %d", i, n)
				}
				if !v6 {
					if id := binary.BigEndian.Uint16(seg[4:]); id != s.id+uint16(i) {
						t.Errorf("datagram %d: IPv4 ID %#x", i, id)
					}
					if !ip4SumOK(seg) || int(binary.BigEndian.Uint16(seg[2:])) != len(seg) {
						t.Errorf("datagram %d: IPv4 header wrong", i)
					}
				} else if int(binary.BigEndian.Uint16(seg[4:])) != len(seg)-40 {
					t.Errorf("datagram %d: payload length wrong", i)
				}
				if !bytes.Equal(seg[l4:l4+4], orig[l4:l4+4]) {
					t.Errorf("datagram %d: ports changed", i)
				}
				if binary.BigEndian.Uint16(seg[l4+6:]) == 0 || !l4SumOK(seg) {
					t.Errorf("datagram %d: UDP checksum wrong", i)
				}
				data = append(data, seg[l4+8:]...)
			}
			if !bytes.Equal(data, s.payload) {
				t.Error("payload differs after the split")
			}
		})
	}
}

// An ordinary packet comes out of the Splitter as it went in; one with a
// partial checksum comes out finished.
func TestSplitterOrdinary(t *testing.T) {
	for _, s := range []spec{
		{flags: tACK, payload: fill(500, 1)},
		{v6: true, udp: true, payload: fill(501, 2)},
	} {
		want := s.build()
		if segs := splitAll(t, bytes.Clone(want), tun.GSO{}); len(segs) != 1 || !bytes.Equal(segs[0], want) {
			t.Errorf("ordinary packet: %d packets", len(segs))
		}
		p := bytes.Clone(want)
		g := partial(p)
		segs := splitAll(t, p, g)
		if len(segs) != 1 || !l4SumOK(segs[0]) || len(segs[0]) != len(want) {
			t.Fatalf("partial checksum: %d packets", len(segs))
		}
	}
}

// A segment too big for the buffer is skipped with an error; the rest
// still come out.
func TestSplitterSmallBuffer(t *testing.T) {
	p := spec{flags: tACK, payload: fill(3000, 1)}.build()
	g := super(p, 1000)
	var sp tun.Splitter
	if err := sp.Load(p, g); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Next(make([]byte, 100)); err == nil {
		t.Fatal("Next into 100 bytes succeeded")
	}
	n := 0
	for sp.Pending() {
		if _, err := sp.Next(make([]byte, 1500)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d segments after the skipped one, want 2", n)
	}
}

// Malformed offload states are refused, without a panic, and leave
// nothing pending; a Splitter that refused a packet takes the next.
func TestSplitterMalformed(t *testing.T) {
	tcp := spec{flags: tACK, payload: fill(3000, 1)}
	udp := spec{udp: true, payload: fill(3000, 1)}
	tcp6 := spec{v6: true, flags: tACK, payload: fill(3000, 1)}
	for _, tc := range []struct {
		name string
		s    spec
		mod  func(p []byte, g *tun.GSO) []byte
	}{
		{"size 0", tcp, func(p []byte, g *tun.GSO) []byte { g.Size = 0; return p }},
		{"udp size 0", udp, func(p []byte, g *tun.GSO) []byte { g.Size = 0; return p }},
		{"headers past the packet", tcp, func(p []byte, g *tun.GSO) []byte { return p[:30] }},
		{"tcp header past the packet", tcp, func(p []byte, g *tun.GSO) []byte { p[20+12] = 0xf0; return p[:60] }},
		{"tcp data offset short", tcp, func(p []byte, g *tun.GSO) []byte { p[20+12] = 0x40; return p }},
		{"udp header past the packet", udp, func(p []byte, g *tun.GSO) []byte { return p[:25] }},
		{"ipv6 header past the packet", tcp6, func(p []byte, g *tun.GSO) []byte { return p[:39] }},
		{"empty", tcp, func(p []byte, g *tun.GSO) []byte { return nil }},
		{"version 5", tcp, func(p []byte, g *tun.GSO) []byte { p[0] = 0x55; return p }},
		{"csum start not ihl", tcp, func(p []byte, g *tun.GSO) []byte { g.CsumStart = 24; return p }},
		{"csum start in ipv6 header", tcp6, func(p []byte, g *tun.GSO) []byte { g.CsumStart = 20; return p }},
		{"TCPv6 on IPv4", tcp, func(p []byte, g *tun.GSO) []byte { g.Type = tun.GSOTCPv6; return p }},
		{"TCPv4 on IPv6", tcp6, func(p []byte, g *tun.GSO) []byte { g.Type = tun.GSOTCPv4; return p }},
		{"UDP on IPv4 TCP", tcp, func(p []byte, g *tun.GSO) []byte { g.Type = tun.GSOUDPL4; return p }},
		{"TCPv4 on IPv4 UDP", udp, func(p []byte, g *tun.GSO) []byte { g.Type = tun.GSOTCPv4; return p }},
		{"partial field past the packet", tcp, func(p []byte, g *tun.GSO) []byte {
			*g = tun.GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 4000}
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.s.build()
			g := super(p, 1000)
			p = tc.mod(p, &g)
			var sp tun.Splitter
			if err := sp.Load(p, g); err == nil {
				t.Errorf("Load accepted %+v on a %d-byte packet", g, len(p))
				for sp.Pending() { // must not panic either
					if _, err := sp.Next(make([]byte, tun.MaxGSOPacket)); err != nil {
						break
					}
				}
				return
			}
			if sp.Pending() {
				t.Error("a refused packet left something pending")
			}
			good := tcp.build()
			if err := sp.Load(good, super(good, 1000)); err != nil || !sp.Pending() {
				t.Errorf("Splitter unusable after a refusal: %v", err)
			}
		})
	}
}

// On IPv6 as on IPv4, the Splitter refuses a super-packet whose type does
// not match its transport protocol, rather than cut a TCP segment as UDP
// datagrams (writing a UDP length and checksum into the TCP sequence and
// acknowledgment numbers) or the other way round.
//
// Fails at the time of writing: loadParts (tun/offload.go) checks p[9]
// against the type for IPv4 only; for IPv6 it never looks at the next
// header.
func TestSplitterIPv6ProtocolMismatch(t *testing.T) {
	payload := fill(3000, 1)
	payload[4] = 0x50 // where a TCP data offset would be: a plausible one
	for _, tc := range []struct {
		name string
		s    spec
		ty   tun.GSOType
	}{
		{"GSOUDPL4 on IPv6 TCP", spec{v6: true, flags: tACK, payload: payload}, tun.GSOUDPL4},
		{"GSOTCPv6 on IPv6 UDP", spec{v6: true, udp: true, payload: payload}, tun.GSOTCPv6},
		// The IPv4 equivalents, refused today, for comparison.
		{"GSOUDPL4 on IPv4 TCP", spec{flags: tACK, payload: payload}, tun.GSOUDPL4},
		{"GSOTCPv4 on IPv4 UDP", spec{udp: true, payload: payload}, tun.GSOTCPv4},
	} {
		p := tc.s.build()
		g := super(p, 1000)
		g.Type = tc.ty
		var sp tun.Splitter
		if err := sp.Load(p, g); err == nil {
			t.Errorf("%s: Load accepted %+v", tc.name, g)
		}
	}
}

// The splitter trusts the TCP header, not GSO.HdrLen (a hint, wrong in
// some kernels): a HdrLen past the end or short of the TCP header changes
// nothing, and never makes it panic.
func TestSplitterHdrLenHint(t *testing.T) {
	s := spec{flags: tACK, tcpOpts: 12, payload: fill(2500, 1)}
	p0 := s.build()
	want := splitAll(t, p0, super(p0, 1000))
	for _, h := range []uint16{0, 20, 40, 60, 4000, 0xffff} {
		p := s.build()
		g := super(p, 1000)
		g.HdrLen = h
		got := splitAll(t, p, g)
		if len(got) != len(want) {
			t.Fatalf("HdrLen %d: %d segments, want %d", h, len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("HdrLen %d: segment %d differs", h, i)
			}
		}
	}
}

// Splitting never panics on arbitrary bytes and offload states, and what
// it hands out fits the buffer.
func FuzzSplitter(f *testing.F) {
	seed := func(s spec, size int) {
		p := s.build()
		g := super(p, size)
		f.Add(p, uint8(g.Type), true, g.HdrLen, g.Size, g.CsumStart, g.CsumOffset)
	}
	seed(spec{flags: tACK, payload: fill(300, 0)}, 100)
	seed(spec{v6: true, flags: tACK, payload: fill(300, 0)}, 100)
	seed(spec{udp: true, payload: fill(300, 0)}, 70)
	seed(spec{v6: true, destOpts: true, flags: tACK, payload: fill(300, 0)}, 100)
	f.Fuzz(func(t *testing.T, p []byte, ty uint8, needs bool, hdrLen, size, start, off uint16) {
		g := tun.GSO{Type: tun.GSOType(ty % 5), NeedsCsum: needs, HdrLen: hdrLen, Size: size, CsumStart: start, CsumOffset: off}
		_ = g.InPlace(p)
		_ = g.SegLen()
		var sp tun.Splitter
		if sp.Load(bytes.Clone(p), g) != nil {
			return
		}
		buf := make([]byte, 2000)
		for i := 0; sp.Pending(); i++ {
			if i > 70000 {
				t.Fatal("Splitter does not stop")
			}
			n, err := sp.Next(buf)
			if err == nil && (n < 0 || n > len(buf)) {
				t.Fatalf("Next returned %d", n)
			}
		}
	})
}
