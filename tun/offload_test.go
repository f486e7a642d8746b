package tun

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
)

// Hand-built packets and checks for the split and coalesce code. The
// checksum helpers here are deliberately naive (one 16-bit word at a time)
// so that they check internal/csum's rather than repeat it.

var (
	v4Src = []byte{10, 77, 0, 1}
	v4Dst = []byte{10, 77, 0, 2}
	v6Src = []byte{0xfd, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	v6Dst = []byte{0xfd, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}
)

// naiveSum and naiveFold are the reference checksum (csumtest).
var (
	naiveSum  = func(b []byte) uint32 { return csumtest.Sum(b, 0) }
	naiveFold = csumtest.Fold
)

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
