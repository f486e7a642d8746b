package nat

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net/netip"
	"testing"
)

// checkTooBig checks an error built by BuildTooBig about orig: it parses as
// an ICMP error from src to orig's sender, right in every checksum and
// size, and quotes orig.
func checkTooBig(t *testing.T, name string, e []byte, orig *Packet, src netip.Addr, mtu int) {
	t.Helper()
	limit := 576
	if orig.V6 {
		limit = 1280
	}
	if want := min(len(orig.B)+28, limit); orig.V6 {
		if want = min(len(orig.B)+48, limit); len(e) != want {
			t.Errorf("%s: length %d, want %d", name, len(e), want)
		}
	} else if len(e) != want {
		t.Errorf("%s: length %d, want %d", name, len(e), want)
	}
	var p Packet
	if r := Parse(e, &p); r != DropNone {
		t.Fatalf("%s: built error does not parse: %v", name, r)
	}
	if !p.ICMPError || p.Src() != src || p.Dst() != orig.Src() || p.TTL() != 64 || !p.VerifyL4Checksum() {
		t.Errorf("%s: error %+v from %v to %v ttl %d checksum ok %v", name, p, p.Src(), p.Dst(), p.TTL(), p.VerifyL4Checksum())
	}
	l4 := p.B[p.L4:]
	if orig.V6 {
		if p.ICMPType != 2 || p.ICMPCode != 0 || binary.BigEndian.Uint32(l4[4:]) != uint32(mtu) {
			t.Errorf("%s: type %d code %d mtu %d", name, p.ICMPType, p.ICMPCode, binary.BigEndian.Uint32(l4[4:]))
		}
	} else {
		if p.ICMPType != 3 || p.ICMPCode != 4 || binary.BigEndian.Uint16(l4[4:]) != 0 || int(binary.BigEndian.Uint16(l4[6:])) != mtu {
			t.Errorf("%s: type %d code %d bytes 4-7 %x", name, p.ICMPType, p.ICMPCode, l4[4:8])
		}
		if !ip4HeaderOK(p.B) || p.B[9] != ipProtoICMP {
			t.Errorf("%s: bad IPv4 header %x", name, p.B[:20])
		}
	}
	if !bytes.Equal(p.B[p.Inner.IP:], orig.B[:len(p.B)-p.Inner.IP]) {
		t.Errorf("%s: quote is not orig's beginning", name)
	}
	if p.InnerSrc() != orig.Src() || p.InnerDst() != orig.Dst() || p.Inner.Proto != orig.Proto ||
		p.Inner.L4-p.Inner.IP != orig.L4 {
		t.Errorf("%s: Inner %+v (%v -> %v), orig proto %d L4 %d", name, p.Inner, p.InnerSrc(), p.InnerDst(), orig.Proto, orig.L4)
	}
	if (orig.Proto == ipProtoTCP || orig.Proto == ipProtoUDP) && (p.Inner.SrcPort != orig.SrcPort || p.Inner.DstPort != orig.DstPort) {
		t.Errorf("%s: inner ports %d %d, orig %d %d", name, p.Inner.SrcPort, p.Inner.DstPort, orig.SrcPort, orig.DstPort)
	}
}

func TestICMPBuildTooBig(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	big := make([]byte, 1460)
	rng.Read(big)
	var specs []namedSpec
	for _, c := range baseSpecs() {
		if c.s.inner == nil {
			specs = append(specs, c)
			b := c.s
			b.payload = big
			specs = append(specs, namedSpec{c.name + " big", b})
		}
	}
	// Sizes around both limits.
	for _, n := range []int{547, 548, 549, 1231, 1232, 1233} {
		s := specUDP4()
		if n > 1000 {
			s = specUDP6()
		}
		s.payload = big[:n-28]
		if s.v6 {
			s.payload = big[:n-48]
		}
		specs = append(specs, namedSpec{"size", s})
	}
	for _, c := range specs {
		orig := mustParsePacket(t, c.s.build())
		src, mtu := tRouter4, 1400
		if c.s.v6 {
			src, mtu = tRouter6, 1280
		}
		dst := make([]byte, 1280)
		n := BuildTooBig(dst, orig, src, mtu)
		if n == 0 {
			t.Errorf("%s: nothing built", c.name)
			continue
		}
		checkTooBig(t, c.name, dst[:n], orig, src, mtu)
	}
}

func TestICMPBuildTooBigRefuses(t *testing.T) {
	type tc struct {
		name string
		s    pktSpec
		src  netip.Addr
		mtu  int
		dst  int
	}
	inTCP4 := specTCP4()
	inTCP6 := specTCP6()
	later4 := specTCP4()
	later4.fragOff = 10
	mcast := specUDP4()
	mcast.src = netip.MustParseAddr("224.0.0.1")
	unspec6 := specUDP6()
	unspec6.src = netip.IPv6Unspecified()
	bcast := specUDP4()
	bcast.dst = netip.MustParseAddr("255.255.255.255")
	bcastSrc := specUDP4()
	bcastSrc.src = netip.MustParseAddr("255.255.255.255")
	mdst4 := specUDP4()
	mdst4.dst = netip.MustParseAddr("239.1.2.3")
	icmpFrag6 := pktSpec{v6: true, src: tClient6, dst: tVIP6, proto: ipProtoICMPv6, ext: []uint8{ip6Fragment}, fragOff: 2}
	big4 := specTCP4()
	big4.payload = make([]byte, 1000)
	cases := []tc{
		{"dst too small v4", specTCP4(), tRouter4, 1400, len(specTCP4().build()) + 27},
		{"dst too small v6", specTCP6(), tRouter6, 1400, len(specTCP6().build()) + 47},
		{"dst too small for the limit", big4, tRouter4, 1400, 575},
		{"family v4/v6", specTCP4(), tRouter6, 1400, 1280},
		{"family v6/v4", specTCP6(), tRouter4, 1400, 1280},
		{"invalid src", specTCP4(), netip.Addr{}, 1400, 1280},
		{"negative mtu", specTCP4(), tRouter4, -1, 1280},
		{"icmp4 error", pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 3, inner: &inTCP4}, tRouter4, 1400, 1280},
		{"icmp4 redirect", pktSpec{src: tRouter4, dst: tVIP4, proto: ipProtoICMP, icmpType: 5, inner: &inTCP4}, tRouter4, 1400, 1280},
		{"icmp6 error", pktSpec{v6: true, src: tRouter6, dst: tClient6, proto: ipProtoICMPv6, icmpType: 2, inner: &inTCP6}, tRouter6, 1400, 1280},
		{"icmp6 later fragment", icmpFrag6, tRouter6, 1400, 1280},
		{"later v4 fragment", later4, tRouter4, 1400, 1280},
		{"multicast src", mcast, tRouter4, 1400, 1280},
		{"unspecified src", unspec6, tRouter6, 1400, 1280},
		{"broadcast src", bcastSrc, tRouter4, 1400, 1280},
		{"broadcast dst", bcast, tRouter4, 1400, 1280},
		{"multicast dst v4", mdst4, tRouter4, 1400, 1280},
	}
	for _, c := range cases {
		orig := mustParsePacket(t, c.s.build())
		dst := make([]byte, c.dst)
		if n := BuildTooBig(dst, orig, c.src, c.mtu); n != 0 {
			t.Errorf("%s: built %d bytes", c.name, n)
		}
	}
	if BuildTooBig(make([]byte, 1280), &Packet{}, tRouter4, 1400) != 0 || BuildTooBig(make([]byte, 1280), nil, tRouter4, 1400) != 0 {
		t.Error("built an error about no packet")
	}
	// Not errors: an echo, and IPv6 to a multicast group.
	echo := pktSpec{src: tClient4, dst: tVIP4, proto: ipProtoICMP, icmpType: 8}
	m6 := specUDP6()
	m6.dst = netip.MustParseAddr("ff0e::1")
	for _, s := range []pktSpec{echo, m6} {
		src := tRouter4
		if s.v6 {
			src = tRouter6
		}
		if BuildTooBig(make([]byte, 1280), mustParsePacket(t, s.build()), src, 1300) == 0 {
			t.Errorf("refused about %+v", s)
		}
	}
}

func TestICMPBuildTooBigMTUClamp(t *testing.T) {
	dst := make([]byte, 1280)
	n := BuildTooBig(dst, mustParsePacket(t, specTCP4().build()), tRouter4, 1<<20)
	if n == 0 || binary.BigEndian.Uint16(dst[26:]) != 0xffff {
		t.Errorf("v4: %d bytes, mtu field %#x", n, dst[26:28])
	}
	n = BuildTooBig(dst, mustParsePacket(t, specTCP6().build()), tRouter6, 1<<40)
	if n == 0 || binary.BigEndian.Uint32(dst[44:]) != 0xffffffff {
		t.Errorf("v6: %d bytes, mtu field %#x", n, dst[44:48])
	}
}

// The error may be built over the packet it is about.
func TestICMPBuildTooBigInPlace(t *testing.T) {
	for _, c := range baseSpecs() {
		if c.s.inner != nil {
			continue
		}
		src := tRouter4
		if c.s.v6 {
			src = tRouter6
		}
		b := c.s.build()
		apart := make([]byte, 1280)
		n := BuildTooBig(apart, mustParsePacket(t, b), src, 1300)
		buf := make([]byte, 1280)
		copy(buf, b)
		m := BuildTooBig(buf, mustParsePacket(t, buf[:len(b)]), src, 1300)
		if n == 0 || m != n || !bytes.Equal(buf[:m], apart[:n]) {
			t.Errorf("%s: in place\n got %x\nwant %x", c.name, buf[:m], apart[:n])
		}
	}
}
