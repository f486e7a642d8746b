package nat

import (
	"net/netip"
	"testing"
)

// packetShape is what a rewrite must not change about a parsed packet.
type packetShape struct {
	V6, Frag, ICMPError        bool
	Proto                      uint8
	L4                         int
	TCPFlags, Type, Code       uint8
	InnerIP, InnerL4           int
	InnerProto                 uint8
	l4csum, rt, innerRt        bool
	Len                        int
	SrcPort, DstPort           uint16
	InnerSrcPort, InnerDstPort uint16
}

func shapeOf(p *Packet) packetShape {
	return packetShape{p.V6, p.Frag, p.ICMPError, p.Proto, p.L4, p.TCPFlags, p.ICMPType, p.ICMPCode,
		p.Inner.IP, p.Inner.L4, p.Inner.Proto, p.l4csum, p.rt, p.innerRt, len(p.B),
		p.SrcPort, p.DstPort, p.Inner.SrcPort, p.Inner.DstPort}
}

func fuzzSeeds() [][]byte {
	var seeds [][]byte
	for _, c := range baseSpecs() {
		b := c.s.build()
		seeds = append(seeds, b, b[:len(b)-1], b[:len(b)/2], b[:min(len(b), 20)])
	}
	first4 := tcp4()
	first4.mf = true
	later6 := udp6()
	later6.ext = []uint8{ip6HopByHop, ip6Fragment}
	later6.fragOff = 9
	rt6 := tcp6()
	rt6.ext = []uint8{ip6Routing}
	rt6.rtLeft = 2
	inExt := udp6()
	inExt.ext = []uint8{ip6DestOpts, ip6Fragment}
	inExt.mf = true
	quoteExt := pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 3, inner: &inExt}
	surplus := udp4()
	surplus.udpLen = 9
	for _, s := range []pktSpec{first4, later6, rt6, quoteExt, surplus} {
		seeds = append(seeds, s.build())
	}
	return seeds
}

// FuzzPacket feeds Parse anything. What it accepts must survive every
// rewrite without panicking, growing or shrinking, and with every checksum
// that was right before still right after; parsing the result again must
// give the same packet with the new addresses and ports.
func FuzzPacket(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := append([]byte(nil), data...)
		var p Packet
		if Parse(b, &p) != DropNone {
			return
		}
		if len(p.B) > len(b) || len(p.B) > 0 && &p.B[0] != &b[0] {
			t.Fatal("B is not a prefix of the input")
		}
		if !p.V6 && !ip4HeaderOK(p.B) {
			t.Fatal("accepted a bad IPv4 header checksum")
		}
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
		ports := (p.Proto == ipProtoTCP || p.Proto == ipProtoUDP) && p.l4csum
		if ports {
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
		src := a1
		e := make([]byte, 1280)
		n := BuildTooBig(e, &p, src, 1280)
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
	})
}
