package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/tunvs/tunvs/internal/csum"
)

// Packet is a parsed, validated view of one IP packet held in the caller's
// buffer. Parsing and rewriting never allocate and never panic, whatever the
// bytes.
//
// For ICMP echo request and reply (ICMPv4 8/0, ICMPv6 128/129) SrcPort and
// DstPort both hold the echo identifier, so an echo can be keyed like a
// flow; rewrites never change it.
type Packet struct {
	B        []byte // the packet, trimmed to the IP total/payload length
	V6       bool
	Proto    uint8 // L4 protocol after any IPv6 extension headers (6, 17, 1, 58, ...)
	L4       int   // offset of the L4 header in B
	SrcPort  uint16
	DstPort  uint16
	TCPFlags uint8 // TCP only: FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10
	Frag     bool  // an IPv4 fragment (MF set or offset != 0) or an IPv6 Fragment header

	// ICMP / ICMPv6
	ICMPType, ICMPCode uint8
	// ICMPError is true for the error messages tunvs translates: v4
	// destination unreachable (3), time exceeded (11), parameter problem
	// (12); v6 destination unreachable (1), packet too big (2), time exceeded
	// (3), parameter problem (4). Inner describes the quoted packet then.
	ICMPError bool
	Inner     Inner

	// l4csum: the L4 checksum field (and for TCP/UDP the ports) lie in B,
	// so rewrites keep them right. False for protocols without one we
	// know, and for fragments whose L4 header is not (wholly) there.
	l4csum bool
	// rt, innerRt: an IPv6 Routing header with segments left. The
	// pseudo-header then holds the final destination from that header
	// (RFC 8200 section 8.1), not the IPv6 destination: rewriting the
	// destination leaves the L4 checksum alone, and it is not verified.
	rt, innerRt bool
	// rh: an IPv6 Routing header of any type, segments left or not.
	rh bool
	// innerLater: the quoted packet is a later fragment, whose "L4
	// header" is data: SetInner* leaves it alone.
	innerLater bool
	// partial: the TCP/UDP checksum field holds the pseudo-header sum
	// only (see Offload.PartialCsum). segLen: see Offload.SegLen.
	partial bool
	segLen  int
	// inMTU: see Offload.MTU.
	inMTU int
}

// Offload describes what a device's offloads left unfinished in a packet
// handed to ProcessOffload (a TUN device with a virtio-net header).
type Offload struct {
	// SegLen, when not zero, marks a GSO super-packet that the device
	// will cut into IP packets of at most SegLen bytes: the egress MTU is
	// checked against that, as the kernel's forwarding checks a GSO
	// packet (skb_gso_validate_network_len), not against the whole.
	SegLen int
	// PartialCsum: the TCP or UDP checksum field holds only the folded
	// pseudo-header sum (CHECKSUM_PARTIAL), which the device completes.
	// Port rewrites then leave it alone and address rewrites add their
	// change to it, as IPVS's tcp_partial_csum_update and
	// udp_partial_csum_update do. The caller guarantees the checksum
	// sits in the TCP or UDP header the parse finds (no IPv6 extension
	// headers, not a fragment); it is ignored for other protocols.
	PartialCsum bool
	// MTU, when not zero, is the MTU of the link the packet arrived by.
	// The SYN proxy's cookie SYN-ACK goes back out of that link (as
	// DPVS's dp_vs_synproxy_syn_rcv sends it back out of the port the
	// SYN came in by), and the MSS it offers is what that link can
	// receive (RFC 1122 4.2.2.6: the MSS sent is bounded by the largest
	// message that can be received). Without it the MSS follows the
	// route to the client, a route lookup that a flood's spoofed
	// sources, each new, never find cached.
	MTU int
}

// netLen is the length the MTU applies to: of each segment of a
// super-packet, or of the packet.
func (p *Packet) netLen() int {
	if p.segLen > 0 {
		return p.segLen
	}
	return len(p.B)
}

// Inner describes the packet quoted inside an ICMP error (offsets relative
// to Packet.B). Its L4 header may be truncated to 8 bytes: ports are there.
type Inner struct {
	IP      int // offset of the quoted IP header
	Proto   uint8
	L4      int // offset of the quoted L4 header
	SrcPort uint16
	DstPort uint16
}

// IP protocol numbers. ProtoTCP and ProtoUDP name the services' protocols
// elsewhere; these are the wire values the parser needs.
const (
	ipProtoICMP   = 1
	ipProtoTCP    = 6
	ipProtoUDP    = 17
	ipProtoICMPv6 = 58

	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6DestOpts = 60
)

const (
	ipv4MinHeader = 20
	ipv6Header    = 40
	tcpMinHeader  = 20
	udpHeader     = 8
	icmpHeader    = 8
)

// Parse parses and validates b, an IPv4 or IPv6 packet without link
// header, into p, and returns DropNone or why the packet is unusable. p.B
// is b trimmed to the length the IP header states; rewrites change b in
// place. On a drop p's contents are unspecified.
//
// Lengths: a packet shorter than a header's fixed part or than its stated
// length (IPv4 total length, IPv6 payload length, UDP length) is
// DropTruncated, as is an IPv4 total length below the header length. A
// header length field below its minimum or reaching past the packet (IPv4
// IHL, TCP data offset, IPv6 extension header length) is DropBadHeaderLen,
// as is a UDP length below 8. A wrong IPv4 header checksum is
// DropBadChecksum.
//
// Fragments are not dropped here: Frag is set and the caller decides. The
// L4 header of a later fragment is not parsed; of a first fragment the
// ports (and TCP flags, ICMP type and code) are read if the L4 header is
// there, without checking it, and ICMPError stays false. An IPv6 Fragment
// header makes a fragment even with offset 0 and no more fragments
// (RFC 6946's atomic fragment), and the headers after it are not walked.
//
// A UDP length below the IP payload length is accepted (the surplus is
// RFC 9868 options space): the UDP checksum covers the UDP length only.
//
// Parse does not verify L4 checksums: see VerifyL4Checksum.
func Parse(b []byte, p *Packet) DropReason {
	*p = Packet{}
	if len(b) == 0 {
		return DropTruncated
	}
	switch b[0] >> 4 {
	case 4:
		return p.parse4(b)
	case 6:
		return p.parse6(b)
	}
	return DropBadVersion
}

func (p *Packet) parse4(b []byte) DropReason {
	if len(b) < ipv4MinHeader {
		return DropTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinHeader || ihl > len(b) {
		return DropBadHeaderLen
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total > len(b) || total < ihl {
		return DropTruncated
	}
	b = b[:total]
	if csum.Fold(csum.Sum(b[:ihl], 0)) != 0xffff {
		return DropBadChecksum
	}
	p.B = b
	p.Proto = b[9]
	p.L4 = ihl
	if fo := binary.BigEndian.Uint16(b[6:8]); fo&0x3fff != 0 { // MF or offset
		p.Frag = true
		if fo&0x1fff == 0 {
			p.peekL4()
		}
		return DropNone
	}
	return p.parseL4()
}

func (p *Packet) parse6(b []byte) DropReason {
	if len(b) < ipv6Header {
		return DropTruncated
	}
	n := ipv6Header + int(binary.BigEndian.Uint16(b[4:6]))
	if n > len(b) {
		return DropTruncated
	}
	b = b[:n]
	p.B = b
	p.V6 = true
	proto, l4, w, r := walk6(b, b[6], ipv6Header)
	if r != DropNone {
		return r
	}
	p.Proto = proto
	p.L4 = l4
	p.rt = w&walkRouting != 0
	p.rh = w&walkRH != 0
	if w&walkFrag != 0 {
		p.Frag = true
		if w&walkFirst != 0 {
			p.peekL4()
		}
		return DropNone
	}
	return p.parseL4()
}

// What walk6 met on the way.
const (
	walkFrag    = 1 << iota // a Fragment header
	walkFirst               // ... with offset 0
	walkRouting             // a Routing header with segments left
	walkRH                  // a Routing header, segments left or not
)

// walk6 follows the IPv6 extension headers of b from next-header nh at
// offset off: Hop-by-Hop, Routing and Destination Options by their length,
// up to a Fragment header or any other next header. It returns the L4
// protocol and offset.
func walk6(b []byte, nh uint8, off int) (proto uint8, l4 int, w uint8, r DropReason) {
	// Every header is at least 8 bytes long, so this loop ends.
	for {
		switch nh {
		case ip6HopByHop, ip6Routing, ip6DestOpts:
			if off+8 > len(b) {
				return 0, 0, 0, DropTruncated
			}
			n := (int(b[off+1]) + 1) * 8
			if n > len(b)-off {
				return 0, 0, 0, DropBadHeaderLen
			}
			if nh == ip6Routing {
				w |= walkRH
				if b[off+3] != 0 {
					w |= walkRouting
				}
			}
			nh = b[off]
			off += n
		case ip6Fragment:
			if off+8 > len(b) {
				return 0, 0, 0, DropTruncated
			}
			w |= walkFrag
			if binary.BigEndian.Uint16(b[off+2:off+4])&0xfff8 == 0 {
				w |= walkFirst
			}
			return b[off], off + 8, w, DropNone
		default:
			return nh, off, w, DropNone
		}
	}
}

// icmpProto is the ICMP protocol of the packet's IP version.
func icmpProto(v6 bool) uint8 {
	if v6 {
		return ipProtoICMPv6
	}
	return ipProtoICMP
}

func isICMPError(v6 bool, t uint8) bool {
	if v6 {
		return t >= 1 && t <= 4
	}
	return t == 3 || t == 11 || t == 12
}

func isICMPEcho(v6 bool, t uint8) bool {
	if v6 {
		return t == 128 || t == 129
	}
	return t == 8 || t == 0
}

// peekL4 reads what it can of a first fragment's L4 header, trusting
// nothing: its lengths describe the whole datagram, not this fragment.
func (p *Packet) peekL4() {
	l4 := p.B[p.L4:]
	switch p.Proto {
	case ipProtoTCP:
		if len(l4) < tcpMinHeader {
			return
		}
		p.TCPFlags = l4[13]
	case ipProtoUDP:
		if len(l4) < udpHeader {
			return
		}
	case icmpProto(p.V6):
		if len(l4) < icmpHeader {
			return
		}
		p.readICMP(l4)
		p.l4csum = true
		return
	default:
		return
	}
	p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	p.l4csum = true
}

func (p *Packet) readICMP(l4 []byte) {
	p.ICMPType, p.ICMPCode = l4[0], l4[1]
	if isICMPEcho(p.V6, p.ICMPType) {
		id := binary.BigEndian.Uint16(l4[4:6])
		p.SrcPort, p.DstPort = id, id
	}
}

// parseL4 validates and reads the L4 header of a whole packet.
func (p *Packet) parseL4() DropReason {
	l4 := p.B[p.L4:]
	switch p.Proto {
	case ipProtoTCP:
		if len(l4) < tcpMinHeader {
			return DropTruncated
		}
		if doff := int(l4[12]>>4) * 4; doff < tcpMinHeader || doff > len(l4) {
			return DropBadHeaderLen
		}
		p.TCPFlags = l4[13]
	case ipProtoUDP:
		if len(l4) < udpHeader {
			return DropTruncated
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < udpHeader {
			return DropBadHeaderLen
		}
		if ulen > len(l4) {
			return DropTruncated
		}
	case icmpProto(p.V6):
		if len(l4) < icmpHeader {
			return DropTruncated
		}
		p.l4csum = true
		p.readICMP(l4)
		if isICMPError(p.V6, p.ICMPType) {
			p.ICMPError = true
			return p.parseInner()
		}
		return DropNone
	default:
		return DropNone
	}
	p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	p.DstPort = binary.BigEndian.Uint16(l4[2:4])
	p.l4csum = true
	return DropNone
}

// parseInner validates the packet quoted by an ICMP error: an IP header of
// the outer packet's version, whole, and for TCP and UDP the 8 bytes of L4
// header that hold the ports, which ICMP guarantees (RFC 792, RFC 4443).
// The quoted lengths and checksums describe the original packet, not the
// quote, and are not checked.
func (p *Packet) parseInner() DropReason {
	b := p.B
	ip := p.L4 + icmpHeader
	q := b[ip:]
	in := &p.Inner
	in.IP = ip
	nonFirst := false
	if !p.V6 {
		if len(q) < ipv4MinHeader || q[0]>>4 != 4 {
			return DropBadICMP
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < ipv4MinHeader || ihl > len(q) {
			return DropBadICMP
		}
		in.Proto = q[9]
		in.L4 = ip + ihl
		nonFirst = binary.BigEndian.Uint16(q[6:8])&0x1fff != 0
	} else {
		if len(q) < ipv6Header || q[0]>>4 != 6 {
			return DropBadICMP
		}
		proto, l4, w, r := walk6(b, q[6], ip+ipv6Header)
		if r != DropNone {
			return DropBadICMP
		}
		in.Proto = proto
		in.L4 = l4
		nonFirst = w&walkFrag != 0 && w&walkFirst == 0
		p.innerRt = w&walkRouting != 0
	}
	p.innerLater = nonFirst
	if in.Proto == ipProtoTCP || in.Proto == ipProtoUDP {
		// A later fragment quotes data, not ports.
		if nonFirst || len(b)-in.L4 < 8 {
			return DropBadICMP
		}
		in.SrcPort = binary.BigEndian.Uint16(b[in.L4:])
		in.DstPort = binary.BigEndian.Uint16(b[in.L4+2:])
	}
	return DropNone
}

// Len is the packet's length in bytes.
func (p *Packet) Len() int { return len(p.B) }

// Src is the source address; the zero Addr if p holds no packet.
func (p *Packet) Src() netip.Addr { return addrAt(p.B, 0, p.V6, false) }

// Dst is the destination address; the zero Addr if p holds no packet.
func (p *Packet) Dst() netip.Addr { return addrAt(p.B, 0, p.V6, true) }

// InnerSrc is the quoted packet's source address; the zero Addr unless p
// is an ICMP error.
func (p *Packet) InnerSrc() netip.Addr {
	if !p.ICMPError {
		return netip.Addr{}
	}
	return addrAt(p.B, p.Inner.IP, p.V6, false)
}

// InnerDst is the quoted packet's destination address; the zero Addr
// unless p is an ICMP error.
func (p *Packet) InnerDst() netip.Addr {
	if !p.ICMPError {
		return netip.Addr{}
	}
	return addrAt(p.B, p.Inner.IP, p.V6, true)
}

// addrOff is the offset of an address within an IP header.
func addrOff(v6, dst bool) int {
	switch {
	case v6 && dst:
		return 24
	case v6:
		return 8
	case dst:
		return 16
	}
	return 12
}

func addrAt(b []byte, ip int, v6, dst bool) netip.Addr {
	off := ip + addrOff(v6, dst)
	if v6 {
		if off < 0 || off+16 > len(b) {
			return netip.Addr{}
		}
		return netip.AddrFrom16([16]byte(b[off : off+16]))
	}
	if off < 0 || off+4 > len(b) {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(b[off : off+4]))
}

// TTL is the IPv4 time to live or the IPv6 hop limit.
func (p *Packet) TTL() uint8 {
	if p.V6 {
		if len(p.B) < ipv6Header {
			return 0
		}
		return p.B[7]
	}
	if len(p.B) < ipv4MinHeader {
		return 0
	}
	return p.B[8]
}

// DF reports whether the packet must not be fragmented on the way: the
// IPv4 DF bit; always true for IPv6, which routers never fragment.
func (p *Packet) DF() bool {
	if p.V6 {
		return true
	}
	return len(p.B) >= ipv4MinHeader && p.B[6]&0x40 != 0
}

// VerifyL4Checksum reports whether the L4 checksum is right, computing it
// in full: TCP, UDP (over the UDP length; in IPv4 a zero checksum means
// none and is right, in IPv6 it is wrong), ICMPv4 (no pseudo-header) and
// ICMPv6. It reports true where there is nothing it can check: fragments,
// other protocols, IPv6 packets whose pseudo-header takes its
// destination from a Routing header, and packets whose checksum is
// partial (Offload.PartialCsum: there is none yet, as tcp_csum_check
// skips CHECKSUM_PARTIAL).
func (p *Packet) VerifyL4Checksum() bool {
	if p.Frag || !p.l4csum || p.rt || p.partial || p.L4 < 0 || p.L4 > len(p.B) {
		return true
	}
	l4 := p.B[p.L4:]
	switch p.Proto {
	case ipProtoTCP:
		return len(l4) >= tcpMinHeader && csum.Fold(csum.Sum(l4, p.pseudoSum(ipProtoTCP, len(l4)))) == 0xffff
	case ipProtoUDP:
		if len(l4) < udpHeader {
			return false
		}
		if binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return !p.V6
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < udpHeader || ulen > len(l4) {
			return false
		}
		return csum.Fold(csum.Sum(l4[:ulen], p.pseudoSum(ipProtoUDP, ulen))) == 0xffff
	case ipProtoICMP:
		return !p.V6 && csum.Fold(csum.Sum(l4, 0)) == 0xffff
	case ipProtoICMPv6:
		return p.V6 && csum.Fold(csum.Sum(l4, p.pseudoSum(ipProtoICMPv6, len(l4)))) == 0xffff
	}
	return true
}

func (p *Packet) pseudoSum(proto uint8, length int) uint32 {
	return csum.PseudoIP(p.B, p.V6, proto, length)
}

// SetSrc rewrites the source address and, for TCP and UDP, the source port,
// keeping every checksum right by incremental update (RFC 1624); an IPv4
// UDP checksum of 0 (none) stays 0. For ICMP the port is ignored. It
// returns false, changing nothing, if a is not of the packet's family.
//
// Of a fragment, the first gets the port and its L4 checksum updated too
// (if its L4 header is there), later ones the address only: the datagram
// they reassemble to is then right.
func (p *Packet) SetSrc(a netip.Addr, port uint16) bool { return p.setAddr(a, port, false) }

// SetDst rewrites the destination address and, for TCP and UDP, the
// destination port, like SetSrc.
func (p *Packet) SetDst(a netip.Addr, port uint16) bool { return p.setAddr(a, port, true) }

func (p *Packet) setAddr(a netip.Addr, port uint16, dst bool) bool {
	b := p.B
	off := addrOff(p.V6, dst)
	var d uint32 // change of the address words
	if p.V6 {
		if !a.Is6() || len(b) < ipv6Header {
			return false
		}
		na := a.As16()
		old := (*[16]byte)(b[off : off+16])
		d = csum.AddrDelta16(old, &na)
		*old = na
		if dst && p.rt {
			d = 0 // not in the pseudo-header: see Packet.rt
		}
	} else {
		if !a.Is4() || len(b) < ipv4MinHeader {
			return false
		}
		na := a.As4()
		old := (*[4]byte)(b[off : off+4])
		d = csum.AddrDelta4(old, &na)
		*old = na
		put16(b[10:], csum.ApplyDelta(binary.BigEndian.Uint16(b[10:12]), d))
	}
	if !p.l4csum || p.L4 < 0 {
		return true
	}
	switch p.Proto {
	case ipProtoTCP, ipProtoUDP:
		pp := &p.SrcPort
		if dst {
			pp = &p.DstPort
		}
		if p.partial {
			setPortPartial(b, p.L4, p.Proto, dst, port, d)
		} else {
			setPort(b, p.L4, p.Proto, p.V6, dst, port, d)
		}
		*pp = port
	case ipProtoICMPv6:
		if p.V6 && p.L4+4 <= len(b) { // ICMPv4 has no pseudo-header
			c := b[p.L4+2 : p.L4+4]
			put16(c, csum.ApplyDelta(binary.BigEndian.Uint16(c), d))
		}
	}
	return true
}

// setPort writes port into the TCP or UDP header at l4 and updates its
// checksum for that and for the pseudo-header change d. It returns the
// change of the header's words, checksum included, for an enclosing ICMP
// checksum; the checksum is left alone (and not counted) if it lies beyond
// b, as in a short ICMP quote.
func setPort(b []byte, l4 int, proto uint8, v6, dst bool, port uint16, d uint32) uint32 {
	if l4 < 0 || l4+8 > len(b) {
		return 0
	}
	po := l4
	if dst {
		po += 2
	}
	var outer uint32
	if old := binary.BigEndian.Uint16(b[po:]); old != port {
		w := csum.WordDelta(old, port)
		d += w
		outer += w
		put16(b[po:], port)
	}
	co := l4 + 6
	if proto == ipProtoTCP {
		co = l4 + 16
	}
	if co+2 > len(b) {
		return outer
	}
	oc := binary.BigEndian.Uint16(b[co:])
	if proto == ipProtoUDP && oc == 0 && !v6 {
		return outer // no checksum, and none is made up
	}
	nc := csum.ApplyDelta(oc, d)
	if proto == ipProtoUDP && nc == 0 {
		nc = 0xffff // a computed 0 is sent as all ones (RFC 768)
	}
	put16(b[co:], nc)
	return outer + csum.WordDelta(oc, nc)
}

// setPortPartial is setPort for a packet whose checksum field holds the
// pseudo-header sum S (Offload.PartialCsum): the port is not in S, and an
// address change d makes it S + d, which is ~csum.ApplyDelta(~S, d).
func setPortPartial(b []byte, l4 int, proto uint8, dst bool, port uint16, d uint32) {
	co := l4 + 6
	if proto == ipProtoTCP {
		co = l4 + 16
	}
	if co+2 > len(b) {
		return
	}
	po := l4
	if dst {
		po += 2
	}
	put16(b[po:], port)
	put16(b[co:], ^csum.ApplyDelta(^binary.BigEndian.Uint16(b[co:]), d))
}

// SetInnerSrc rewrites the source address and, for TCP and UDP, port of
// the packet quoted by an ICMP error: the quoted IPv4 header checksum and
// the quoted L4 checksum (if quoted) are updated for it, and the ICMP
// checksum for every byte changed. It returns false, changing nothing, if p
// is not an ICMP error or a is not of its family.
func (p *Packet) SetInnerSrc(a netip.Addr, port uint16) bool { return p.setInner(a, port, false) }

// SetInnerDst rewrites the destination of the packet quoted by an ICMP
// error, like SetInnerSrc.
func (p *Packet) SetInnerDst(a netip.Addr, port uint16) bool { return p.setInner(a, port, true) }

func (p *Packet) setInner(a netip.Addr, port uint16, dst bool) bool {
	b := p.B
	in := &p.Inner
	if !p.ICMPError || p.L4 < 0 || p.L4+icmpHeader > len(b) || in.IP < 0 {
		return false
	}
	off := in.IP + addrOff(p.V6, dst)
	var d, outer uint32 // pseudo-header change; change within the ICMP message
	if p.V6 {
		if !a.Is6() || in.IP+ipv6Header > len(b) {
			return false
		}
		na := a.As16()
		old := (*[16]byte)(b[off : off+16])
		d = csum.AddrDelta16(old, &na)
		*old = na
		outer = d
		if dst && p.innerRt {
			d = 0
		}
	} else {
		if !a.Is4() || in.IP+ipv4MinHeader > len(b) {
			return false
		}
		na := a.As4()
		old := (*[4]byte)(b[off : off+4])
		d = csum.AddrDelta4(old, &na)
		*old = na
		outer = d
		c := b[in.IP+10 : in.IP+12]
		oc := binary.BigEndian.Uint16(c)
		nc := csum.ApplyDelta(oc, d)
		put16(c, nc)
		outer += csum.WordDelta(oc, nc)
	}
	switch in.Proto {
	case ipProtoTCP, ipProtoUDP:
		outer += setPort(b, in.L4, in.Proto, p.V6, dst, port, d)
		if in.L4+8 <= len(b) {
			if dst {
				in.DstPort = port
			} else {
				in.SrcPort = port
			}
		}
	case ipProtoICMPv6:
		if p.V6 && !p.innerLater && in.L4 >= 0 && in.L4+4 <= len(b) {
			c := b[in.L4+2 : in.L4+4]
			oc := binary.BigEndian.Uint16(c)
			nc := csum.ApplyDelta(oc, d)
			put16(c, nc)
			outer += csum.WordDelta(oc, nc)
		}
	}
	c := b[p.L4+2 : p.L4+4]
	put16(c, csum.ApplyDelta(binary.BigEndian.Uint16(c), outer))
	return true
}

// DecTTL decrements the IPv4 TTL (updating the header checksum) or the
// IPv6 hop limit. It returns false, changing nothing, if it is 1 or 0: the
// packet must not be forwarded.
func (p *Packet) DecTTL() bool {
	b := p.B
	if p.V6 {
		if len(b) < ipv6Header || b[7] <= 1 {
			return false
		}
		b[7]--
		return true
	}
	if len(b) < ipv4MinHeader || b[8] <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(b[8:10]) // TTL and protocol
	b[8]--
	put16(b[10:], csum.Update(binary.BigEndian.Uint16(b[10:12]), old, binary.BigEndian.Uint16(b[8:10])))
	return true
}

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
