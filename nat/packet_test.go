package nat

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat/nattest"
)

// pktSpec describes a packet that the tests build byte by byte, with
// checksums from nattest.Checksum, not from the code under test.
type pktSpec struct {
	v6                 bool
	src, dst           netip.Addr
	proto              uint8
	sport, dport       uint16
	ttl                uint8 // 0: 64
	tcpFlags           uint8
	tcpOpts            []byte // a multiple of 4 bytes
	icmpType, icmpCode uint8
	icmpRest           [4]byte // ICMP header bytes 4-7: echo id and sequence, MTU
	payload            []byte
	inner              *pktSpec // ICMP errors: the quoted packet, as payload
	quote              int      // bytes of inner quoted; 0: all
	ipOpts             []byte   // IPv4 options, a multiple of 4 bytes
	ext                []uint8  // IPv6 extension headers, 8 bytes each
	rtLeft             uint8    // segments left in a Routing header
	fragOff            uint16   // fragment offset in 8-byte units
	mf, df             bool
	udpZero            bool       // IPv4 UDP sent without checksum
	udpLen             int        // UDP length field if not 0 (the checksum covers that much)
	pseudoDst          netip.Addr // pseudo-header destination if valid (Routing header's final one)
}

var (
	tClient4 = netip.MustParseAddr("198.51.100.7")
	tVIP4    = netip.MustParseAddr("192.0.2.10")
	tReal4   = netip.MustParseAddr("10.0.0.5")
	tRouter4 = netip.MustParseAddr("203.0.113.1")
	tClient6 = netip.MustParseAddr("2001:db8:c::7")
	tVIP6    = netip.MustParseAddr("2001:db8:a::10")
	tReal6   = netip.MustParseAddr("2001:db8:d::5")
	tRouter6 = netip.MustParseAddr("2001:db8:e::1")
)

func (s pktSpec) l4() []byte {
	var l4 []byte
	be := binary.BigEndian
	switch s.proto {
	case ipProtoTCP:
		l4 = make([]byte, 20+len(s.tcpOpts))
		be.PutUint16(l4[0:], s.sport)
		be.PutUint16(l4[2:], s.dport)
		be.PutUint32(l4[4:], 0x01020304)
		be.PutUint32(l4[8:], 0x0a0b0c0d)
		l4[12] = byte(len(l4)/4) << 4
		l4[13] = s.tcpFlags
		be.PutUint16(l4[14:], 0xfaf0)
		copy(l4[20:], s.tcpOpts)
	case ipProtoUDP:
		l4 = make([]byte, 8)
		be.PutUint16(l4[0:], s.sport)
		be.PutUint16(l4[2:], s.dport)
	case ipProtoICMP, ipProtoICMPv6:
		l4 = []byte{s.icmpType, s.icmpCode, 0, 0, s.icmpRest[0], s.icmpRest[1], s.icmpRest[2], s.icmpRest[3]}
	}
	if s.inner != nil {
		q := s.inner.build()
		if s.quote > 0 && s.quote < len(q) {
			q = q[:s.quote]
		}
		l4 = append(l4, q...)
	}
	l4 = append(l4, s.payload...)
	pdst := s.dst
	if s.pseudoDst.IsValid() {
		pdst = s.pseudoDst
	}
	pseudo := func(n int) []byte {
		if s.v6 {
			a, b := s.src.As16(), pdst.As16()
			ph := append(append(a[:], b[:]...), 0, 0, 0, 0, 0, 0, 0, s.proto)
			be.PutUint32(ph[32:], uint32(n))
			return ph
		}
		a, b := s.src.As4(), pdst.As4()
		return append(append(a[:], b[:]...), 0, s.proto, byte(n>>8), byte(n))
	}
	switch s.proto {
	case ipProtoTCP:
		be.PutUint16(l4[16:], nattest.Checksum(append(pseudo(len(l4)), l4...), 0))
	case ipProtoUDP:
		n := len(l4)
		if s.udpLen != 0 {
			n = s.udpLen
		}
		be.PutUint16(l4[4:], uint16(n))
		c := nattest.Checksum(append(pseudo(n), l4[:min(n, len(l4))]...), 0)
		if c == 0 {
			c = 0xffff
		}
		if s.udpZero && !s.v6 {
			c = 0
		}
		be.PutUint16(l4[6:], c)
	case ipProtoICMP:
		if !s.v6 {
			be.PutUint16(l4[2:], nattest.Checksum(l4, 0))
		}
	case ipProtoICMPv6:
		if s.v6 {
			be.PutUint16(l4[2:], nattest.Checksum(append(pseudo(len(l4)), l4...), 0))
		}
	}
	return l4
}

func (s pktSpec) build() []byte {
	be := binary.BigEndian
	l4 := s.l4()
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	if s.v6 {
		h := make([]byte, 40, 40+8*len(s.ext)+len(l4))
		h[0], h[1], h[2], h[3] = 0x60, 0x0a, 0xbc, 0xde // some traffic class and flow label
		be.PutUint16(h[4:], uint16(8*len(s.ext)+len(l4)))
		h[6] = s.proto
		if len(s.ext) > 0 {
			h[6] = s.ext[0]
		}
		h[7] = ttl
		a, b := s.src.As16(), s.dst.As16()
		copy(h[8:], a[:])
		copy(h[24:], b[:])
		for i, typ := range s.ext {
			next := s.proto
			if i+1 < len(s.ext) {
				next = s.ext[i+1]
			}
			e := []byte{next, 0, 1, 4, 0, 0, 0, 0} // PadN over the rest
			switch typ {
			case ip6Routing:
				e = []byte{next, 0, 4, s.rtLeft, 0, 0, 0, 0}
			case ip6Fragment:
				fo := s.fragOff << 3
				if s.mf {
					fo |= 1
				}
				e = []byte{next, 0, byte(fo >> 8), byte(fo), 0xde, 0xad, 0xbe, 0xef}
			}
			h = append(h, e...)
		}
		return append(h, l4...)
	}
	hl := 20 + len(s.ipOpts)
	h := make([]byte, hl, hl+len(l4))
	h[0] = 0x40 | byte(hl/4)
	h[1] = 0x10
	be.PutUint16(h[2:], uint16(hl+len(l4)))
	be.PutUint16(h[4:], 0x1234)
	fo := s.fragOff
	if s.df {
		fo |= 0x4000
	}
	if s.mf {
		fo |= 0x2000
	}
	be.PutUint16(h[6:], fo)
	h[8] = ttl
	h[9] = s.proto
	a, b := s.src.As4(), s.dst.As4()
	copy(h[12:], a[:])
	copy(h[16:], b[:])
	copy(h[20:], s.ipOpts)
	be.PutUint16(h[10:], nattest.Checksum(h, 0))
	return append(h, l4...)
}

// fixIP4Checksum recomputes an IPv4 header checksum after a test changed a field.
func fixIP4Checksum(b []byte) {
	hl := int(b[0]&0x0f) * 4
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], nattest.Checksum(b[:hl], 0))
}

func ip4HeaderOK(b []byte) bool {
	hl := int(b[0]&0x0f) * 4
	return hl >= 20 && hl <= len(b) && nattest.Checksum(b[:hl], 0) == 0
}

func mustParsePacket(t testing.TB, b []byte) *Packet {
	t.Helper()
	var p Packet
	if r := Parse(b, &p); r != DropNone {
		t.Fatalf("Parse: %v", r)
	}
	return &p
}

func (s pktSpec) l4Off() int {
	if s.v6 {
		return 40 + 8*len(s.ext)
	}
	return 20 + len(s.ipOpts)
}

type namedSpec struct {
	name string
	s    pktSpec
}

func specTCP4() pktSpec {
	return pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoTCP, sport: 40000, dport: 80, tcpFlags: 0x02, df: true,
		tcpOpts: []byte{2, 4, 5, 0xb4, 1, 1, 4, 2}, payload: []byte("GET / HTTP/1.0\r\n\r\n!")}
}

func specUDP4() pktSpec {
	return pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoUDP, sport: 5353, dport: 53, payload: []byte("query")}
}

func specTCP6() pktSpec {
	return pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: ipProtoTCP, sport: 40000, dport: 443, tcpFlags: 0x18,
		payload: []byte("hello, world")}
}

func specUDP6() pktSpec {
	return pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: ipProtoUDP, sport: 5353, dport: 53, payload: []byte("q6?")}
}

// baseSpecs are well-formed packets of every kind the tests cover.
func baseSpecs() []namedSpec {
	inTCP4 := specTCP4()
	inTCP4.src, inTCP4.dst, inTCP4.sport, inTCP4.dport = tVIP4, tClient4, 80, 40000
	inUDP4 := specUDP4()
	inUDP4Zero := specUDP4()
	inUDP4Zero.udpZero = true
	inEcho4 := pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoICMP, icmpType: 8, icmpRest: [4]byte{0x12, 0x34, 0, 1}, payload: []byte("ping")}
	inTCP6 := specTCP6()
	inUDP6 := specUDP6()
	inTCP6Ext := specTCP6()
	inTCP6Ext.ext = []uint8{ip6HopByHop, ip6DestOpts}
	inEcho6 := pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: ipProtoICMPv6, icmpType: 128, icmpRest: [4]byte{0xab, 0xcd, 0, 7}, payload: []byte("ping6")}

	tcp4opts := specTCP4()
	tcp4opts.ipOpts = []byte{1, 1, 1, 0} // NOPs, EOL
	udp4zero := specUDP4()
	udp4zero.udpZero = true
	udp4odd := specUDP4()
	udp4odd.payload = []byte("odd")
	tcp6ext := specTCP6()
	tcp6ext.ext = []uint8{ip6HopByHop, ip6Routing, ip6DestOpts}
	return []namedSpec{
		{"tcp4", specTCP4()},
		{"tcp4 options", tcp4opts},
		{"udp4", specUDP4()},
		{"udp4 odd", udp4odd},
		{"udp4 no checksum", udp4zero},
		{"udp4 empty", pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoUDP, sport: 1, dport: 2}},
		{"echo4", inEcho4},
		{"echo reply4", pktSpec{src: tVIP4, dst: tClient4, proto: ipProtoICMP, icmpType: 0, icmpRest: [4]byte{0x12, 0x34, 0, 1}}},
		{"gre4", pktSpec{src: tClient4, dst: tVIP4, proto: 47, payload: []byte{0, 0, 8, 0, 1, 2, 3}}},
		{"tcp6", specTCP6()},
		{"udp6", specUDP6()},
		{"tcp6 ext", tcp6ext},
		{"echo6", inEcho6},
		{"no next header6", pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: 59}},
		{"unreach4 tcp", pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, icmpCode: 1, inner: &inTCP4}},
		{"needfrag4 tcp 8", pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, icmpCode: 4, icmpRest: [4]byte{0, 0, 5, 0xdc}, inner: &inTCP4, quote: 28}},
		{"needfrag4 tcp 18", pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, icmpCode: 4, inner: &inTCP4, quote: 38}},
		{"timex4 udp", pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 11, inner: &inUDP4}},
		{"timex4 udp nocsum", pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 11, inner: &inUDP4Zero}},
		{"param4 echo", pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 12, inner: &inEcho4}},
		{"ptb6 tcp", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 2, icmpRest: [4]byte{0, 0, 5, 0}, inner: &inTCP6}},
		{"ptb6 tcp 8", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 2, inner: &inTCP6, quote: 48}},
		{"unreach6 udp", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 1, icmpCode: 4, inner: &inUDP6}},
		{"timex6 tcp ext", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 3, inner: &inTCP6Ext}},
		{"param6 echo", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 4, inner: &inEcho6}},
	}
}

// checkParsed compares p with what s says, and checks every checksum.
func checkParsed(t *testing.T, s pktSpec, p *Packet) {
	t.Helper()
	b := s.build()
	if !bytes.Equal(p.B, b) {
		t.Fatalf("B differs:\n got %x\nwant %x", p.B, b)
	}
	icmp := s.proto == icmpProto(s.v6)
	wantSport, wantDport := s.sport, s.dport
	switch {
	case icmp && isICMPEcho(s.v6, s.icmpType):
		id := binary.BigEndian.Uint16(s.icmpRest[:])
		wantSport, wantDport = id, id
	case s.proto != ipProtoTCP && s.proto != ipProtoUDP:
		wantSport, wantDport = 0, 0
	}
	wantFlags := uint8(0)
	if s.proto == ipProtoTCP {
		wantFlags = s.tcpFlags
	}
	ttl := s.ttl
	if ttl == 0 {
		ttl = 64
	}
	type view struct {
		V6                 bool
		Proto              uint8
		L4                 int
		SrcPort, DstPort   uint16
		TCPFlags           uint8
		Frag               bool
		ICMPType, ICMPCode uint8
		ICMPError          bool
		Src, Dst           netip.Addr
		TTL                uint8
		DF                 bool
		Len                int
	}
	got := view{p.V6, p.Proto, p.L4, p.SrcPort, p.DstPort, p.TCPFlags, p.Frag, p.ICMPType, p.ICMPCode, p.ICMPError,
		p.Src(), p.Dst(), p.TTL(), p.DF(), p.Len()}
	want := view{s.v6, s.proto, s.l4Off(), wantSport, wantDport, wantFlags, false, 0, 0, false,
		s.src, s.dst, ttl, s.df || s.v6, len(b)}
	if icmp {
		want.ICMPType, want.ICMPCode = s.icmpType, s.icmpCode
		want.ICMPError = s.inner != nil
	}
	if got != want {
		t.Errorf("parsed\n got %+v\nwant %+v", got, want)
	}
	if !s.v6 && !ip4HeaderOK(p.B) {
		t.Errorf("IPv4 header checksum wrong")
	}
	if !p.VerifyL4Checksum() {
		t.Errorf("VerifyL4Checksum false")
	}
	if s.inner == nil {
		if p.Inner != (Inner{}) || p.InnerSrc().IsValid() || p.InnerDst().IsValid() {
			t.Errorf("Inner set: %+v", p.Inner)
		}
		return
	}
	in := *s.inner
	wantIn := Inner{IP: s.l4Off() + 8, Proto: in.proto, L4: s.l4Off() + 8 + in.l4Off()}
	if in.proto == ipProtoTCP || in.proto == ipProtoUDP {
		wantIn.SrcPort, wantIn.DstPort = in.sport, in.dport
	}
	if p.Inner != wantIn {
		t.Errorf("Inner\n got %+v\nwant %+v", p.Inner, wantIn)
	}
	if p.InnerSrc() != in.src || p.InnerDst() != in.dst {
		t.Errorf("inner addresses %v -> %v, want %v -> %v", p.InnerSrc(), p.InnerDst(), in.src, in.dst)
	}
	if !s.v6 && !ip4HeaderOK(p.B[p.Inner.IP:]) {
		t.Errorf("inner IPv4 header checksum wrong")
	}
}

func TestParseFields(t *testing.T) {
	for _, c := range baseSpecs() {
		t.Run(c.name, func(t *testing.T) {
			b := c.s.build()
			checkParsed(t, c.s, mustParsePacket(t, b))
		})
	}
}

// Link-layer padding after the packet is cut off.
func TestParseTrailingBytes(t *testing.T) {
	for _, c := range baseSpecs() {
		b := c.s.build()
		n := len(b)
		b = append(b, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee)
		p := mustParsePacket(t, b)
		if p.Len() != n || !p.VerifyL4Checksum() {
			t.Errorf("%s: Len %d, want %d; checksum ok %v", c.name, p.Len(), n, p.VerifyL4Checksum())
		}
	}
}

func TestParseTruncatedEveryLength(t *testing.T) {
	for _, c := range baseSpecs() {
		b := c.s.build()
		for n := 0; n < len(b); n++ {
			var p Packet
			got := Parse(b[:n], &p)
			want := DropTruncated
			if !c.s.v6 && n >= 20 && n < c.s.l4Off() {
				want = DropBadHeaderLen // IHL beyond what is there
			}
			if got != want {
				t.Errorf("%s cut to %d of %d: %v, want %v", c.name, n, len(b), got, want)
			}
		}
	}
}

func TestParseDrops(t *testing.T) {
	be := binary.BigEndian
	short := func(s pktSpec, payload int) pktSpec {
		// s's protocol number over a payload too short for its header.
		other := s
		other.proto = 253
		other.payload = make([]byte, payload)
		return other
	}
	asProto := func(b []byte, proto uint8) {
		if b[0]>>4 == 4 {
			b[9] = proto
			fixIP4Checksum(b)
		} else {
			b[6] = proto
		}
	}
	tcp4Tiny := specTCP4()
	tcp4Tiny.tcpOpts, tcp4Tiny.payload = nil, nil
	inTCP4 := specTCP4()
	inTCP6 := specTCP6()
	inTCP6Frag := specTCP6()
	inTCP6Frag.ext = []uint8{ip6Fragment}
	inTCP6Frag.fragOff = 10
	inTCP4Frag := specTCP4()
	inTCP4Frag.fragOff = 10
	err4 := func(inner *pktSpec, quote int) []byte {
		return pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, inner: inner, quote: quote}.build()
	}
	err6 := func(inner *pktSpec, quote int) []byte {
		return pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 2, inner: inner, quote: quote}.build()
	}
	cases := []struct {
		name string
		b    func() []byte
		want DropReason
	}{
		{"empty", func() []byte { return nil }, DropTruncated},
		{"version 0", func() []byte { b := specUDP4().build(); b[0] = 0x05; return b }, DropBadVersion},
		{"version 5", func() []byte { b := specUDP4().build(); b[0] = 0x55; return b }, DropBadVersion},
		{"version 15", func() []byte { b := specUDP6().build(); b[0] = 0xf0; return b }, DropBadVersion},
		{"ihl 0", func() []byte { b := specUDP4().build(); b[0] = 0x40; return b }, DropBadHeaderLen},
		{"ihl 4", func() []byte { b := specUDP4().build(); b[0] = 0x44; return b }, DropBadHeaderLen},
		{"ihl beyond packet", func() []byte {
			b := pktSpec{src: tClient4, dst: tVIP4, proto: 253}.build()
			b[0] = 0x46
			return b
		}, DropBadHeaderLen},
		{"total below ihl", func() []byte { b := specUDP4().build(); be.PutUint16(b[2:], 19); fixIP4Checksum(b); return b }, DropTruncated},
		{"total beyond buffer", func() []byte {
			b := specUDP4().build()
			be.PutUint16(b[2:], uint16(len(b)+1))
			fixIP4Checksum(b)
			return b
		}, DropTruncated},
		{"ip checksum", func() []byte { b := specUDP4().build(); b[10] ^= 0x40; return b }, DropBadChecksum},
		{"ip checksum in options", func() []byte { s := specTCP4(); s.ipOpts = []byte{1, 1, 1, 0}; b := s.build(); b[22] = 0; return b }, DropBadChecksum},
		{"v6 header short", func() []byte { return specUDP6().build()[:39] }, DropTruncated},
		{"v6 payload length beyond", func() []byte { b := specUDP6().build(); be.PutUint16(b[4:], uint16(len(b)-39)); return b }, DropTruncated},
		{"tcp4 19 bytes", func() []byte { b := short(specTCP4(), 19).build(); asProto(b, ipProtoTCP); return b }, DropTruncated},
		{"tcp6 19 bytes", func() []byte { b := short(specTCP6(), 19).build(); asProto(b, ipProtoTCP); return b }, DropTruncated},
		{"tcp data offset 4", func() []byte { b := specTCP4().build(); b[32] = 0x40; return b }, DropBadHeaderLen},
		{"tcp data offset 0", func() []byte { b := specTCP6().build(); b[52] = 0x00; return b }, DropBadHeaderLen},
		{"tcp data offset beyond", func() []byte { b := tcp4Tiny.build(); b[32] = 0x60; return b }, DropBadHeaderLen},
		{"tcp data offset 15", func() []byte { b := specTCP6().build(); b[52] = 0xf0; return b }, DropBadHeaderLen},
		{"udp 7 bytes", func() []byte { b := short(specUDP4(), 7).build(); asProto(b, ipProtoUDP); return b }, DropTruncated},
		{"udp6 7 bytes", func() []byte { b := short(specUDP6(), 7).build(); asProto(b, ipProtoUDP); return b }, DropTruncated},
		{"udp length 7", func() []byte { b := specUDP4().build(); be.PutUint16(b[24:], 7); return b }, DropBadHeaderLen},
		{"udp length 0", func() []byte { b := specUDP6().build(); be.PutUint16(b[44:], 0); return b }, DropBadHeaderLen},
		{"udp length beyond", func() []byte { b := specUDP4().build(); be.PutUint16(b[24:], uint16(len(b)-20+1)); return b }, DropTruncated},
		{"udp6 length beyond", func() []byte { b := specUDP6().build(); be.PutUint16(b[44:], uint16(len(b)-40+1)); return b }, DropTruncated},
		{"icmp4 7 bytes", func() []byte { b := short(specUDP4(), 7).build(); asProto(b, ipProtoICMP); return b }, DropTruncated},
		{"icmp6 7 bytes", func() []byte { b := short(specUDP6(), 7).build(); asProto(b, ipProtoICMPv6); return b }, DropTruncated},
		{"v6 ext header cut", func() []byte {
			b := short(specUDP6(), 7).build()
			b[6] = ip6HopByHop
			return b
		}, DropTruncated},
		{"v6 ext header length beyond", func() []byte {
			s := specUDP6()
			s.ext = []uint8{ip6DestOpts}
			b := s.build()
			b[41] = 3
			return b
		}, DropBadHeaderLen},
		{"v6 second ext header length beyond", func() []byte {
			s := specUDP6()
			s.ext = []uint8{ip6HopByHop, ip6Routing}
			b := s.build()
			b[49] = 200
			return b
		}, DropBadHeaderLen},
		{"v6 fragment header cut", func() []byte {
			b := short(specUDP6(), 7).build()
			b[6] = ip6Fragment
			return b
		}, DropTruncated},
		{"icmp4 error without quote", func() []byte { return err4(nil, 0) }, DropBadICMP},
		{"icmp4 error quoting v6", func() []byte { return err4(&inTCP6, 0) }, DropBadICMP},
		{"icmp4 error quote 19 bytes", func() []byte { return err4(&inTCP4, 19) }, DropBadICMP},
		{"icmp4 error quoted ihl 4", func() []byte { b := err4(&inTCP4, 0); b[28] = 0x44; fixICMP4Checksum(b); return b }, DropBadICMP},
		{"icmp4 error quoted ihl beyond quote", func() []byte { b := err4(&inTCP4, 27); b[28] = 0x47; fixICMP4Checksum(b); return b }, DropBadICMP},
		{"icmp4 error quoted tcp 7 bytes", func() []byte { return err4(&inTCP4, 27) }, DropBadICMP},
		{"icmp4 error quoted later fragment", func() []byte { return err4(&inTCP4Frag, 0) }, DropBadICMP},
		{"icmp6 error without quote", func() []byte { return err6(nil, 0) }, DropBadICMP},
		{"icmp6 error quoting v4", func() []byte { return err6(&inTCP4, 0) }, DropBadICMP},
		{"icmp6 error quote 39 bytes", func() []byte { return err6(&inTCP6, 39) }, DropBadICMP},
		{"icmp6 error quoted tcp 7 bytes", func() []byte { return err6(&inTCP6, 47) }, DropBadICMP},
		{"icmp6 error quoted ext header beyond", func() []byte {
			in := specTCP6()
			in.ext = []uint8{ip6HopByHop}
			b := err6(&in, 0)
			b[48+41] = 100
			return b
		}, DropBadICMP},
		{"icmp6 error quoted later fragment", func() []byte { return err6(&inTCP6Frag, 0) }, DropBadICMP},
	}
	for _, c := range cases {
		var p Packet
		if got := Parse(c.b(), &p); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func fixICMP4Checksum(b []byte) {
	l4 := int(b[0]&0x0f) * 4
	b[l4+2], b[l4+3] = 0, 0
	binary.BigEndian.PutUint16(b[l4+2:], nattest.Checksum(b[l4:], 0))
}

// Quotes that are short but enough: ICMP guarantees 8 bytes of L4, and an
// echo needs no ports.
func TestParseICMPShortQuotes(t *testing.T) {
	echo := pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoICMP, icmpType: 8}
	p := mustParsePacket(t, pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 11, inner: &echo, quote: 24}.build())
	if !p.ICMPError || p.Inner.Proto != ipProtoICMP || p.Inner.SrcPort != 0 || p.Inner.DstPort != 0 {
		t.Errorf("echo quote: %+v", p)
	}
	in := specUDP6()
	p = mustParsePacket(t, pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 1, inner: &in, quote: 48}.build())
	if p.Inner.SrcPort != in.sport || p.Inner.DstPort != in.dport {
		t.Errorf("udp6 8-byte quote: %+v", p.Inner)
	}
	// Other ICMP types are not errors: no Inner even with a quote-like body.
	p = mustParsePacket(t, pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 5, inner: &echo}.build())
	if p.ICMPError || p.Inner != (Inner{}) {
		t.Errorf("redirect taken as error: %+v", p)
	}
	// ICMPv6 inside IPv4 (and ICMPv4 inside IPv6) is just some protocol.
	s := specUDP4()
	s.proto = ipProtoICMPv6
	s.payload = make([]byte, 20)
	p = mustParsePacket(t, s.build())
	if p.ICMPType != 0 || p.ICMPError {
		t.Errorf("ICMPv6 in IPv4 parsed as ICMP: %+v", p)
	}
}

func TestParseUDPSurplus(t *testing.T) {
	// A UDP length short of the IP payload: RFC 9868 options follow.
	s := specUDP4()
	s.udpLen = 8 + 2
	s.payload = []byte("dataOPTIONS")
	p := mustParsePacket(t, s.build())
	if !p.VerifyL4Checksum() {
		t.Error("surplus: checksum not over the UDP length")
	}
	if !p.SetDst(tReal4, 8053) || !p.VerifyL4Checksum() {
		t.Error("surplus: checksum wrong after SetDst")
	}
	want := s
	want.dst, want.dport = tReal4, 8053
	if !bytes.Equal(p.B, want.build()) {
		t.Errorf("surplus: after SetDst\n got %x\nwant %x", p.B, want.build())
	}
}

func TestParseFragments(t *testing.T) {
	first4 := specTCP4()
	first4.mf = true
	later4 := specTCP4()
	later4.fragOff = 100
	tiny4 := specTCP4()
	tiny4.mf = true
	first6 := specUDP6()
	first6.ext = []uint8{ip6HopByHop, ip6Fragment}
	first6.mf = true
	later6 := specUDP6()
	later6.ext = []uint8{ip6Fragment}
	later6.fragOff = 3
	atomic6 := specTCP6()
	atomic6.ext = []uint8{ip6Fragment}
	inTCP4 := specTCP4()
	icmpFrag := pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, mf: true, inner: &inTCP4}
	cases := []struct {
		name         string
		b            []byte
		sport, dport uint16
		l4           int
	}{
		{"v4 first", first4.build(), first4.sport, first4.dport, 20},
		{"v4 first, tiny", tiny4.build()[:30], 0, 0, 20},
		{"v4 later", later4.build(), 0, 0, 20},
		{"v6 first", first6.build(), first6.sport, first6.dport, 56},
		{"v6 later", later6.build(), 0, 0, 48},
		{"v6 atomic", atomic6.build(), atomic6.sport, atomic6.dport, 48},
		{"v4 icmp error first", icmpFrag.build(), 0, 0, 20},
	}
	for _, c := range cases {
		if c.name == "v4 first, tiny" {
			binary.BigEndian.PutUint16(c.b[2:], 30)
			fixIP4Checksum(c.b)
		}
		if c.name == "v4 later" {
			c.b[32] = 0 // junk where a TCP header would be: not looked at
		}
		p := mustParsePacket(t, c.b)
		if !p.Frag || p.SrcPort != c.sport || p.DstPort != c.dport || p.L4 != c.l4 || p.ICMPError {
			t.Errorf("%s: Frag %v ports %d %d L4 %d ICMPError %v", c.name, p.Frag, p.SrcPort, p.DstPort, p.L4, p.ICMPError)
		}
		if !p.VerifyL4Checksum() {
			t.Errorf("%s: fragments cannot be verified and must pass", c.name)
		}
	}
	p := mustParsePacket(t, icmpFrag.build())
	if p.ICMPType != 3 {
		t.Errorf("first fragment ICMP type %d", p.ICMPType)
	}
	if mustParsePacket(t, first4.build()).TCPFlags != first4.tcpFlags {
		t.Error("first fragment TCP flags not read")
	}
}

// A NAT that rewrites fragments as they pass keeps the reassembled
// datagram right: the first fragment's L4 checksum takes the whole change.
func TestPacketRewriteFragmentsReassemble(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s := specUDP4()
		if v6 {
			s = specUDP6()
		}
		s.payload = bytes.Repeat([]byte("0123456789"), 10)
		l4 := s.l4()
		// Two fragments: L4 bytes [0,48) and [48,end).
		frag := func(off int, end int, mf bool) []byte {
			f := s
			f.proto, f.payload = 253, l4[off:end]
			f.mf, f.fragOff = mf, uint16(off/8)
			if v6 {
				f.ext = []uint8{ip6Fragment}
			}
			b := f.build()
			if v6 {
				b[40] = ipProtoUDP
			} else {
				b[9] = ipProtoUDP
				fixIP4Checksum(b)
			}
			return b
		}
		f1, f2 := frag(0, 48, true), frag(48, len(l4), false)
		p1, p2 := mustParsePacket(t, f1), mustParsePacket(t, f2)
		na, port := tReal4, uint16(8053)
		if v6 {
			na = tReal6
		}
		if !p1.SetDst(na, port) || !p2.SetDst(na, port) {
			t.Fatal("SetDst refused")
		}
		if p1.DstPort != port || p2.DstPort != 0 {
			t.Errorf("ports after SetDst: %d, %d", p1.DstPort, p2.DstPort)
		}
		want := s
		want.dst, want.dport = na, port
		wl4 := want.l4()
		got := append(append([]byte(nil), f1[p1.L4:]...), f2[p2.L4:]...)
		if !bytes.Equal(got, wl4) {
			t.Errorf("v6 %v: reassembled\n got %x\nwant %x", v6, got, wl4)
		}
		if !v6 && (!ip4HeaderOK(f1) || !ip4HeaderOK(f2)) {
			t.Error("IPv4 header checksum wrong")
		}
	}
}

// Each rewrite step is applied to the packet and to its spec; the packet
// must equal the spec built afresh, and parse and verify as such.
func TestPacketRewrite(t *testing.T) {
	for _, c := range baseSpecs() {
		t.Run(c.name, func(t *testing.T) {
			s := c.s
			tcpudp := s.proto == ipProtoTCP || s.proto == ipProtoUDP
			na, nb := tReal4, netip.MustParseAddr("172.16.254.254")
			if s.v6 {
				na, nb = tReal6, netip.MustParseAddr("fd00::ffff:1")
			}
			type step struct {
				name  string
				apply func(p *Packet) bool
				spec  func(s *pktSpec)
			}
			steps := []step{
				{"SetDst", func(p *Packet) bool { return p.SetDst(na, 8080) }, func(s *pktSpec) {
					s.dst = na
					if tcpudp {
						s.dport = 8080
					}
				}},
				{"SetSrc", func(p *Packet) bool { return p.SetSrc(nb, 65535) }, func(s *pktSpec) {
					s.src = nb
					if tcpudp {
						s.sport = 65535
					}
				}},
				{"SetSrc same", func(p *Packet) bool { return p.SetSrc(nb, 65535) }, func(s *pktSpec) {}},
				{"SetDst port 0", func(p *Packet) bool { return p.SetDst(na, 0) }, func(s *pktSpec) {
					if tcpudp {
						s.dport = 0
					}
				}},
				{"DecTTL", func(p *Packet) bool { return p.DecTTL() }, func(s *pktSpec) { s.ttl = 63 }},
			}
			if s.inner != nil {
				in := *s.inner
				s.inner = &in
				innerTCPUDP := in.proto == ipProtoTCP || in.proto == ipProtoUDP
				steps = append(steps,
					step{"SetInnerSrc", func(p *Packet) bool { return p.SetInnerSrc(na, 1234) }, func(s *pktSpec) {
						s.inner.src = na
						if innerTCPUDP {
							s.inner.sport = 1234
						}
					}},
					step{"SetInnerDst", func(p *Packet) bool { return p.SetInnerDst(nb, 0xfffe) }, func(s *pktSpec) {
						s.inner.dst = nb
						if innerTCPUDP {
							s.inner.dport = 0xfffe
						}
					}},
					step{"SetInnerDst back", func(p *Packet) bool { return p.SetInnerDst(in.dst, in.dport) }, func(s *pktSpec) {
						s.inner.dst = in.dst
						if innerTCPUDP {
							s.inner.dport = in.dport
						}
					}},
				)
			}
			b := s.build()
			p := mustParsePacket(t, b)
			for _, st := range steps {
				if !st.apply(p) {
					t.Fatalf("%s refused", st.name)
				}
				st.spec(&s)
				if &p.B[0] != &b[0] || len(p.B) != len(b) {
					t.Fatalf("%s: B moved or changed length", st.name)
				}
				checkParsed(t, s, p)
				if t.Failed() {
					t.Fatalf("after %s", st.name)
				}
				// And parsing the result again gives the same.
				checkParsed(t, s, mustParsePacket(t, append([]byte(nil), p.B...)))
			}
		})
	}
}

// Many random packets, each rewritten in random ways, each compared with
// the same packet built directly: incremental updates against full
// computation.
func TestPacketRewriteRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	addr := func(v6 bool) netip.Addr {
		var a [16]byte
		switch rng.Intn(6) {
		case 0: // all zero
		case 1:
			for i := range a {
				a[i] = 0xff
			}
		default:
			rng.Read(a[:])
		}
		if v6 {
			return netip.AddrFrom16(a)
		}
		return netip.AddrFrom4([4]byte(a[:4]))
	}
	port := func() uint16 {
		switch rng.Intn(4) {
		case 0:
			return 0
		case 1:
			return 0xffff
		}
		return uint16(rng.Intn(0x10000))
	}
	spec := func(v6 bool, protos []uint8) pktSpec {
		s := pktSpec{v6: v6, src: addr(v6), dst: addr(v6), proto: protos[rng.Intn(len(protos))],
			sport: port(), dport: port(), ttl: uint8(2 + rng.Intn(250)), tcpFlags: uint8(rng.Intn(256))}
		s.payload = make([]byte, rng.Intn(64))
		if rng.Intn(3) == 0 {
			rng.Read(s.payload)
		}
		s.udpZero = !v6 && rng.Intn(4) == 0
		if s.proto == icmpProto(v6) {
			s.icmpType = 8
			if v6 {
				s.icmpType = 128
			}
			rng.Read(s.icmpRest[:])
		}
		return s
	}
	n := 0
	for i := 0; i < 20000; i++ {
		v6 := i%2 == 1
		icmp := icmpProto(v6)
		var s pktSpec
		if i%3 == 0 {
			in := spec(v6, []uint8{ipProtoTCP, ipProtoUDP, icmp})
			s = pktSpec{v6: v6, src: addr(v6), dst: addr(v6), proto: icmp, icmpType: 3, ttl: 64, inner: &in}
			if v6 {
				s.icmpType = 1 + uint8(rng.Intn(4))
			}
			s.quote = in.l4Off() + 8 + rng.Intn(30)
			if in.proto == ipProtoTCP && s.quote == in.l4Off()+17 {
				// Half a TCP checksum is left as it is; the builder
				// would show half of the recomputed one.
				s.quote++
			}
		} else {
			s = spec(v6, []uint8{ipProtoTCP, ipProtoUDP, icmp})
		}
		b := s.build()
		p := mustParsePacket(t, b)
		for k := 0; k < 4; k++ {
			a, pt := addr(v6), port()
			tcpudp := s.proto == ipProtoTCP || s.proto == ipProtoUDP
			switch rng.Intn(5) {
			case 0:
				p.SetSrc(a, pt)
				s.src = a
				if tcpudp {
					s.sport = pt
				}
			case 1:
				p.SetDst(a, pt)
				s.dst = a
				if tcpudp {
					s.dport = pt
				}
			case 2:
				if p.DecTTL() {
					s.ttl--
				}
			default:
				if s.inner == nil {
					continue
				}
				in := *s.inner
				s.inner = &in
				itcpudp := in.proto == ipProtoTCP || in.proto == ipProtoUDP
				if rng.Intn(2) == 0 {
					p.SetInnerSrc(a, pt)
					in.src = a
					if itcpudp {
						in.sport = pt
					}
				} else {
					p.SetInnerDst(a, pt)
					in.dst = a
					if itcpudp {
						in.dport = pt
					}
				}
			}
			if want := s.build(); !bytes.Equal(b, want) {
				t.Fatalf("case %d step %d:\n got %x\nwant %x", i, k, b, want)
			}
			if !p.VerifyL4Checksum() {
				t.Fatalf("case %d step %d: checksum", i, k)
			}
			n++
		}
	}
	t.Logf("%d rewrites checked", n)
}

// A UDP checksum that comes out as 0 after a rewrite is sent as 0xFFFF, as
// a full computation would send it; 0 would mean "none" in IPv4 and be
// wrong in IPv6.
func TestPacketUDPChecksumComputesToZero(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		s, na := specUDP4(), tReal4
		if v6 {
			s, na = specUDP6(), tReal6
		}
		// With port 0 the checksum is ~S; port ~~S = ~S makes the sum 0xFFFF.
		z := s
		z.dst, z.dport = na, 0
		port := binary.BigEndian.Uint16(z.l4()[6:])
		z.dport = port
		if c := binary.BigEndian.Uint16(z.l4()[6:]); c != 0xffff {
			t.Fatalf("v6 %v: test packet's checksum is %#04x, not 0xFFFF", v6, c)
		}
		p := mustParsePacket(t, s.build())
		p.SetDst(na, port)
		if want := z.build(); !bytes.Equal(p.B, want) {
			t.Errorf("v6 %v:\n got %x\nwant %x", v6, p.B, want)
		}
		if !p.VerifyL4Checksum() {
			t.Errorf("v6 %v: checksum wrong", v6)
		}
		// Quoted in an ICMP error, the same.
		e := pktSpec{src: tRouter4, dst: tClient4, proto: ipProtoICMP, icmpType: 3, inner: &s}
		if v6 {
			e = pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 1, inner: &s}
		}
		p = mustParsePacket(t, e.build())
		p.SetInnerDst(na, port)
		e.inner = &z
		if want := e.build(); !bytes.Equal(p.B, want) {
			t.Errorf("v6 %v, quoted:\n got %x\nwant %x", v6, p.B, want)
		}
	}
}

// A quoted later fragment has data where its L4 header would be: inner
// rewrites change its addresses only.
func TestPacketInnerLaterFragment(t *testing.T) {
	// Built as some protocol's data, then marked ICMPv6.
	in := pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: 253, ext: []uint8{ip6Fragment}, fragOff: 5,
		payload: []byte("later fragment data")}
	e := pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 3, icmpCode: 1, inner: &in}
	build := func() []byte {
		b := e.build()
		b[40+8+40] = ipProtoICMPv6
		b[42], b[43] = 0, 0
		ph := append(append([]byte(nil), b[8:40]...), 0, 0, 0, 0, 0, 0, 0, ipProtoICMPv6)
		binary.BigEndian.PutUint32(ph[32:], uint32(len(b)-40))
		binary.BigEndian.PutUint16(b[42:], nattest.Checksum(append(ph, b[40:]...), 0))
		return b
	}
	p := mustParsePacket(t, build())
	if p.Inner.Proto != ipProtoICMPv6 || p.Inner.L4 != p.L4+8+40+8 || !p.VerifyL4Checksum() {
		t.Fatalf("Inner %+v", p.Inner)
	}
	p.SetInnerSrc(tReal6, 1)
	moved := in
	moved.src = tReal6
	e.inner = &moved
	if want := build(); !bytes.Equal(p.B, want) {
		t.Errorf("\n got %x\nwant %x", p.B, want)
	}
}

func TestPacketUDPZeroChecksumStaysZero(t *testing.T) {
	s := specUDP4()
	s.udpZero = true
	p := mustParsePacket(t, s.build())
	p.SetDst(tReal4, 1)
	p.SetSrc(tVIP4, 2)
	if c := binary.BigEndian.Uint16(p.B[26:]); c != 0 {
		t.Errorf("checksum %#04x, want 0", c)
	}
	if !p.VerifyL4Checksum() {
		t.Error("VerifyL4Checksum false")
	}
	// IPv6 has no such thing: 0 is wrong.
	b := specUDP6().build()
	b[46], b[47] = 0, 0
	if mustParsePacket(t, b).VerifyL4Checksum() {
		t.Error("IPv6 UDP checksum 0 accepted")
	}
}

func TestPacketRewriteWrongFamily(t *testing.T) {
	for _, c := range baseSpecs() {
		b := c.s.build()
		orig := append([]byte(nil), b...)
		p := mustParsePacket(t, b)
		other := tReal6
		if c.s.v6 {
			other = tReal4
		}
		if p.SetSrc(other, 1) || p.SetDst(other, 1) || p.SetInnerSrc(other, 1) || p.SetInnerDst(other, 1) {
			t.Errorf("%s: rewrite with the other family accepted", c.name)
		}
		if p.SetSrc(netip.Addr{}, 1) || p.SetInnerDst(netip.Addr{}, 1) {
			t.Errorf("%s: invalid address accepted", c.name)
		}
		if !c.s.v6 && p.SetDst(netip.AddrFrom16(tReal4.As16()), 1) {
			t.Errorf("%s: IPv4-mapped IPv6 address accepted for IPv4", c.name)
		}
		if c.s.inner == nil {
			same := tReal4
			if c.s.v6 {
				same = tReal6
			}
			if p.SetInnerSrc(same, 1) || p.SetInnerDst(same, 1) {
				t.Errorf("%s: inner rewrite of a packet that is no ICMP error", c.name)
			}
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("%s: refused rewrite changed the packet", c.name)
		}
	}
}

func TestPacketDecTTL(t *testing.T) {
	for _, c := range baseSpecs() {
		for _, ttl := range []uint8{0, 1, 2, 255} {
			b := c.s.build()
			if c.s.v6 {
				b[7] = ttl
			} else {
				b[8] = ttl
				fixIP4Checksum(b)
			}
			p := mustParsePacket(t, b)
			orig := append([]byte(nil), b...)
			ok := p.DecTTL()
			if ok != (ttl > 1) {
				t.Errorf("%s: DecTTL at %d: %v", c.name, ttl, ok)
			}
			if !ok {
				if !bytes.Equal(b, orig) {
					t.Errorf("%s: DecTTL at %d changed the packet", c.name, ttl)
				}
				continue
			}
			if p.TTL() != ttl-1 || (!c.s.v6 && !ip4HeaderOK(b)) {
				t.Errorf("%s: DecTTL at %d: TTL %d, header ok %v", c.name, ttl, p.TTL(), ip4HeaderOK(b))
			}
			if !c.s.v6 {
				fixIP4Checksum(orig)
				orig[8] = ttl - 1
				fixIP4Checksum(orig)
				if !bytes.Equal(b, orig) {
					t.Errorf("%s: DecTTL at %d: checksum differs from recomputation", c.name, ttl)
				}
			}
		}
	}
}

// With a Routing header still to be walked the pseudo-header holds the
// final destination, which a NAT does not change.
func TestPacketRewriteRoutingHeader(t *testing.T) {
	final := netip.MustParseAddr("2001:db8:f::1")
	for _, proto := range []uint8{ipProtoTCP, ipProtoUDP, ipProtoICMPv6} {
		s := specTCP6()
		if proto == ipProtoUDP {
			s = specUDP6()
		}
		if proto == ipProtoICMPv6 {
			s = pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: proto, icmpType: 128}
		}
		s.ext = []uint8{ip6Routing}
		s.rtLeft = 1
		s.pseudoDst = final
		p := mustParsePacket(t, s.build())
		p.SetDst(tReal6, 8080)
		p.SetSrc(tRouter6, 1)
		s.dst, s.src = tReal6, tRouter6
		if proto != ipProtoICMPv6 {
			s.dport, s.sport = 8080, 1
		}
		if want := s.build(); !bytes.Equal(p.B, want) {
			t.Errorf("proto %d:\n got %x\nwant %x", proto, p.B, want)
		}
		// Segments left 0: the IPv6 destination is the final one.
		s.rtLeft = 0
		s.pseudoDst = netip.Addr{}
		p = mustParsePacket(t, s.build())
		if !p.VerifyL4Checksum() {
			t.Errorf("proto %d: segments left 0 not verified", proto)
		}
		b := s.build()
		b[len(b)-1] ^= 1
		if mustParsePacket(t, b).VerifyL4Checksum() {
			t.Errorf("proto %d: bad checksum accepted", proto)
		}
	}
}

func TestPacketVerifyL4ChecksumDetectsDamage(t *testing.T) {
	for _, c := range baseSpecs() {
		b := c.s.build()
		p := mustParsePacket(t, b)
		if p.Proto != ipProtoTCP && p.Proto != ipProtoUDP && p.Proto != icmpProto(p.V6) {
			continue
		}
		if c.s.udpZero {
			continue
		}
		for i := p.L4; i < len(b); i++ {
			if (i == p.L4+4 || i == p.L4+5) && p.Proto == ipProtoUDP {
				continue // the UDP length: a different packet
			}
			b[i] ^= 0x10
			if p.VerifyL4Checksum() {
				t.Errorf("%s: byte %d changed, checksum still ok", c.name, i)
			}
			b[i] ^= 0x10
		}
		// The addresses are covered for all but ICMPv4.
		dst := 19
		if p.V6 {
			dst = 39
		}
		b[dst] ^= 1
		if p.VerifyL4Checksum() != (p.Proto == ipProtoICMP) {
			t.Errorf("%s: pseudo-header coverage wrong", c.name)
		}
	}
}

func TestPacketAccessorsOfEmpty(t *testing.T) {
	var p Packet
	if p.Src().IsValid() || p.Dst().IsValid() || p.InnerSrc().IsValid() || p.InnerDst().IsValid() ||
		p.TTL() != 0 || p.DF() || p.Len() != 0 || p.DecTTL() {
		t.Error("zero Packet reports something")
	}
	if p.SetSrc(tReal4, 1) || p.SetDst(tReal4, 1) || p.SetInnerSrc(tReal4, 1) || p.SetInnerDst(tReal4, 1) {
		t.Error("zero Packet rewritten")
	}
	p.VerifyL4Checksum()
	// A failed parse leaves nothing to panic on either.
	Parse([]byte{0x45}, &p)
	p.SetSrc(tReal4, 1)
	p.SetInnerDst(tReal4, 1)
	p.DecTTL()
	p.VerifyL4Checksum()
}

func TestPacketAllocs(t *testing.T) {
	b4 := specTCP4().build()
	in := specTCP6()
	b6 := pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 2, inner: &in}.build()
	buf := make([]byte, 1280)
	var p Packet
	allocs := testing.AllocsPerRun(1000, func() {
		Parse(b4, &p)
		p.SetDst(tReal4, 8080)
		p.SetSrc(tClient4, 40000)
		p.VerifyL4Checksum()
		_, _ = p.Src(), p.Dst()
		Parse(b6, &p)
		p.SetInnerSrc(tReal6, 443)
		p.SetDst(tReal6, 0)
		p.VerifyL4Checksum()
		_, _ = p.InnerSrc(), p.InnerDst()
		p.DecTTL()
		Parse(b4, &p)
		BuildTooBig(buf, &p, tRouter4, 1400)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func BenchmarkParseRewriteTCP4(b *testing.B) {
	pkt := specTCP4().build()
	var p Packet
	for b.Loop() {
		Parse(pkt, &p)
		p.SetDst(tReal4, 8080)
		p.DecTTL()
	}
}

func BenchmarkVerifyTCP6(b *testing.B) {
	s := specTCP6()
	s.payload = make([]byte, 1400)
	pkt := s.build()
	var p Packet
	Parse(pkt, &p)
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		p.VerifyL4Checksum()
	}
}
