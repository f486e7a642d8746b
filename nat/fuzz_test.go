package nat

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat/nattest"
)

// packetShape is what a rewrite must not change about a parsed packet.
type packetShape struct {
	V6, Frag, ICMPError             bool
	Proto                           uint8
	L4                              int
	TCPFlags, Type, Code            uint8
	InnerIP, InnerL4                int
	InnerProto                      uint8
	l4csum, rt, innerRt, innerLater bool
	Len                             int
	SrcPort, DstPort                uint16
	InnerSrcPort, InnerDstPort      uint16
}

func shapeOf(p *Packet) packetShape {
	return packetShape{p.V6, p.Frag, p.ICMPError, p.Proto, p.L4, p.TCPFlags, p.ICMPType, p.ICMPCode,
		p.Inner.IP, p.Inner.L4, p.Inner.Proto, p.l4csum, p.rt, p.innerRt, p.innerLater, len(p.B),
		p.SrcPort, p.DstPort, p.Inner.SrcPort, p.Inner.DstPort}
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, c := range baseSpecs() {
		b := c.s.build()
		seeds = append(seeds, b, b[:len(b)-1], b[:len(b)/2], b[:min(len(b), 20)])
	}
	first4 := specTCP4()
	first4.mf = true
	later6 := specUDP6()
	later6.ext = []uint8{ip6HopByHop, ip6Fragment}
	later6.fragOff = 9
	rt6 := specTCP6()
	rt6.ext = []uint8{ip6Routing}
	rt6.rtLeft = 2
	inExt := specUDP6()
	inExt.ext = []uint8{ip6DestOpts, ip6Fragment}
	inExt.mf = true
	quoteExt := pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 3, inner: &inExt}
	surplus := specUDP4()
	surplus.udpLen = 9
	for _, s := range []pktSpec{first4, later6, rt6, quoteExt, surplus} {
		seeds = append(seeds, s.build())
	}
	// An ICMPv6 error quoting a later fragment of ICMPv6.
	inLater := pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: 253, ext: []uint8{ip6Fragment}, fragOff: 5, payload: make([]byte, 12)}
	e := pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 3, inner: &inLater}.build()
	e[40+8+40] = ipProtoICMPv6
	seeds = append(seeds, e)
	return seeds
}

// FuzzPacket feeds Parse anything. What it accepts must survive every
// rewrite without panicking, growing or shrinking, and with every checksum
// that was right before still right after; parsing the result again must
// give the same packet with the new addresses and ports.
//
// Each input is tried as it is and with its checksums made right (by the
// reference sum), since a fuzzer mutating bytes rarely keeps a checksum
// right by itself: the IPv4 header checksum would hide the rest of an
// IPv4 packet from it, and the "still right after" checks would seldom
// have anything to check.
func FuzzPacket(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzPacket(t, append([]byte(nil), data...), false)
		fuzzPacket(t, append([]byte(nil), data...), true)
	})
}

// fixIP4Header makes an IPv4 header checksum right if there is a header.
func fixIP4Header(b []byte) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	if hl := int(b[0]&0x0f) * 4; hl >= 20 && hl <= len(b) {
		fixIP4Checksum(b)
	}
}

// fixL4 makes the L4 checksum of a parsed whole packet right, computing it
// with the reference sum and a pseudo-header of its own.
func fixL4(p *Packet) {
	if p.Frag || !p.l4csum || p.rt {
		return
	}
	b, l4 := p.B, p.B[p.L4:]
	var ph []byte
	pseudo := func(n int) []byte {
		if p.V6 {
			ph = append(append([]byte(nil), b[8:40]...), 0, 0, 0, 0, 0, 0, 0, p.Proto)
			binary.BigEndian.PutUint32(ph[32:], uint32(n))
			return ph
		}
		return append(append([]byte(nil), b[12:20]...), 0, p.Proto, byte(n>>8), byte(n))
	}
	switch p.Proto {
	case ipProtoTCP:
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:], nattest.Checksum(append(pseudo(len(l4)), l4...), 0))
	case ipProtoUDP:
		if !p.V6 && l4[6] == 0 && l4[7] == 0 {
			return // none, and that is right
		}
		n := int(binary.BigEndian.Uint16(l4[4:]))
		l4[6], l4[7] = 0, 0
		c := nattest.Checksum(append(pseudo(n), l4[:n]...), 0)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	case ipProtoICMP:
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:], nattest.Checksum(l4, 0))
	case ipProtoICMPv6:
		l4[2], l4[3] = 0, 0
		binary.BigEndian.PutUint16(l4[2:], nattest.Checksum(append(pseudo(len(l4)), l4...), 0))
	}
}

func fuzzPacket(t *testing.T, b []byte, fix bool) {
	if fix {
		fixIP4Header(b)
	}
	var p Packet
	if Parse(b, &p) != DropNone {
		return
	}
	if fix {
		if p.ICMPError && !p.V6 {
			fixIP4Checksum(p.B[p.Inner.IP:]) // before the ICMP checksum, which covers it
		}
		fixL4(&p)
		if !p.VerifyL4Checksum() {
			t.Fatal("VerifyL4Checksum disagrees with the reference sum")
		}
	}
	if len(p.B) > len(b) || len(p.B) > 0 && &p.B[0] != &b[0] {
		t.Fatal("B is not a prefix of the input")
	}
	if !p.V6 && !ip4HeaderOK(p.B) {
		t.Fatal("accepted a bad IPv4 header checksum")
	}
	before := append([]byte(nil), p.B...)
	l4OK := p.VerifyL4Checksum()
	innerOK := p.ICMPError && !p.V6 && ip4HeaderOK(p.B[p.Inner.IP:])
	shape := shapeOf(&p)

	a1, a2 := netip.MustParseAddr("10.9.8.7"), netip.MustParseAddr("172.31.0.1")
	if p.V6 {
		a1, a2 = netip.MustParseAddr("fd00::9:8:7"), netip.MustParseAddr("2001:db8:ffff::1")
	}
	if !p.SetSrc(a1, 1111) || !p.SetDst(a2, 2222) {
		t.Fatal("rewrite refused")
	}
	if (p.Proto == ipProtoTCP || p.Proto == ipProtoUDP) && p.l4csum {
		shape.SrcPort, shape.DstPort = 1111, 2222
	}
	if p.ICMPError {
		if !p.SetInnerSrc(a2, 3333) || !p.SetInnerDst(a1, 4444) {
			t.Fatal("inner rewrite refused")
		}
		if p.Inner.Proto == ipProtoTCP || p.Inner.Proto == ipProtoUDP {
			shape.InnerSrcPort, shape.InnerDstPort = 3333, 4444
		}
	}
	ttl := p.TTL()
	if p.DecTTL() != (ttl > 1) {
		t.Fatal("DecTTL")
	}

	if got := shapeOf(&p); got != shape {
		t.Fatalf("fields after rewrite\n got %+v\nwant %+v", got, shape)
	}
	if i := strayChange(&p, before); i >= 0 {
		t.Fatalf("byte %d changed: %#02x -> %#02x", i, before[i], p.B[i])
	}
	if !p.V6 && !ip4HeaderOK(p.B) {
		t.Fatal("IPv4 header checksum broken by rewrite")
	}
	if l4OK && !p.VerifyL4Checksum() {
		t.Fatal("L4 checksum broken by rewrite")
	}
	if innerOK && !ip4HeaderOK(p.B[p.Inner.IP:]) {
		t.Fatal("quoted IPv4 header checksum broken by rewrite")
	}
	if p.Src() != a1 || p.Dst() != a2 || p.ICMPError && (p.InnerSrc() != a2 || p.InnerDst() != a1) {
		t.Fatal("addresses not rewritten")
	}
	var q Packet
	if r := Parse(p.B, &q); r != DropNone {
		t.Fatalf("rewritten packet does not parse: %v", r)
	}
	if shapeOf(&q) != shape {
		t.Fatalf("parsed again\n got %+v\nwant %+v", shapeOf(&q), shape)
	}

	// An error about it, if one may be sent, is well formed.
	e := make([]byte, 1280)
	n := BuildTooBig(e, &p, a1, 1280)
	if n == 0 {
		return
	}
	var ep Packet
	switch r := Parse(e[:n], &ep); r {
	case DropNone:
	case DropBadICMP:
		return // the quote ends inside long IPv6 extension headers
	default:
		t.Fatalf("built error does not parse: %v", r)
	}
	if !ep.ICMPError || !ep.VerifyL4Checksum() || ep.Dst() != p.Src() || ep.InnerSrc() != p.Src() ||
		ep.Inner.Proto != p.Proto || ep.Inner.L4-ep.Inner.IP != p.L4 {
		t.Fatalf("built error %+v about %+v", ep, p)
	}
}

// strayChange returns the offset of a byte that differs between before and
// p.B but is no address, port, TTL or checksum a rewrite may change; or -1.
func strayChange(p *Packet, before []byte) int {
	may := make([]bool, len(p.B))
	mark := func(off, n int) {
		for i := off; i < off+n && i < len(may); i++ {
			may[i] = true
		}
	}
	l4 := func(off int, proto uint8, ports bool) {
		switch {
		case (proto == ipProtoTCP || proto == ipProtoUDP) && ports:
			mark(off, 4)
			if proto == ipProtoTCP {
				mark(off+16, 2)
			} else {
				mark(off+6, 2)
			}
		case proto == ipProtoICMPv6 && p.V6, proto == ipProtoICMP && !p.V6:
			mark(off+2, 2)
		}
	}
	if p.V6 {
		mark(7, 33)
	} else {
		mark(8, 12)
	}
	if p.l4csum {
		l4(p.L4, p.Proto, true)
	}
	if p.ICMPError {
		if p.V6 {
			mark(p.Inner.IP+8, 32)
		} else {
			mark(p.Inner.IP+10, 10)
		}
		if !p.innerLater {
			l4(p.Inner.L4, p.Inner.Proto, true)
		}
	}
	for i := range p.B {
		if p.B[i] != before[i] && !may[i] {
			return i
		}
	}
	return -1
}
