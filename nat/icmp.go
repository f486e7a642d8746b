package nat

import (
	"encoding/binary"
	"net/netip"
)

// Size limits of an ICMP error, IP header and quote included: RFC 1812
// section 4.3.2.3 for IPv4, RFC 4443 section 2.4 (c) (the IPv6 minimum
// MTU) for IPv6.
const (
	maxICMPError4 = 576
	maxICMPError6 = 1280
)

// BuildTooBig writes into dst the ICMP error that tells orig's sender to
// send smaller packets: an IPv4 "fragmentation needed and DF set" (type 3
// code 4, RFC 1191) with the next-hop MTU in bytes 6-7, or an ICMPv6
// "packet too big" (type 2, RFC 4443) with the MTU in bytes 4-7. It goes
// from src to orig's source with TTL (hop limit) 64, and quotes orig from
// its IP header on, as much as keeps the whole error within 576 bytes
// (IPv4) or 1280 (IPv6). mtu is clamped to what the field holds.
//
// It returns the length written, or 0 when nothing is to be sent: dst too
// small (1280 bytes is always enough), src not of orig's family, mtu
// negative, or no error is allowed about orig (RFC 1122 section 3.2.2,
// RFC 4443 section 2.4 (e)): orig is itself an ICMP error (or an ICMP
// fragment whose type is not there), a later IPv4 fragment, from an address
// that is not unicast, or IPv4 to a multicast or broadcast address.
//
// dst may share orig's buffer: orig is read before dst is written.
func BuildTooBig(dst []byte, orig *Packet, src netip.Addr, mtu int) int {
	if orig == nil || mtu < 0 || !tooBigAllowed(orig) {
		return 0
	}
	b := orig.B
	if orig.V6 {
		if !src.Is6() {
			return 0
		}
		n := min(len(b)+ipv6Header+icmpHeader, maxICMPError6)
		if len(dst) < n {
			return 0
		}
		to := [16]byte(b[8:24])
		copy(dst[ipv6Header+icmpHeader:n], b)
		h := dst[:ipv6Header]
		h[0], h[1], h[2], h[3] = 0x60, 0, 0, 0
		put16(h[4:], uint16(n-ipv6Header))
		h[6] = ipProtoICMPv6
		h[7] = 64
		s := src.As16()
		copy(h[8:24], s[:])
		copy(h[24:40], to[:])
		m := dst[ipv6Header:n]
		m[0], m[1], m[2], m[3] = 2, 0, 0, 0
		binary.BigEndian.PutUint32(m[4:], uint32(min(uint64(mtu), 0xffffffff)))
		put16(m[2:], ^FoldSum(SumBytes(m, PseudoHeaderSum(h[8:24], h[24:40], ipProtoICMPv6, len(m)))))
		return n
	}
	if !src.Is4() {
		return 0
	}
	n := min(len(b)+ipv4MinHeader+icmpHeader, maxICMPError4)
	if len(dst) < n {
		return 0
	}
	to := [4]byte(b[12:16])
	copy(dst[ipv4MinHeader+icmpHeader:n], b)
	h := dst[:ipv4MinHeader]
	h[0], h[1] = 0x45, 0
	put16(h[2:], uint16(n))
	// DF with ID 0: an atomic datagram may carry any ID (RFC 6864), and a
	// 576-byte packet has no business being fragmented.
	h[4], h[5], h[6], h[7] = 0, 0, 0x40, 0
	h[8], h[9], h[10], h[11] = 64, ipProtoICMP, 0, 0
	s := src.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], to[:])
	put16(h[10:], ^FoldSum(SumBytes(h, 0)))
	m := dst[ipv4MinHeader:n]
	m[0], m[1], m[2], m[3], m[4], m[5] = 3, 4, 0, 0, 0, 0
	put16(m[6:], uint16(min(mtu, 0xffff)))
	put16(m[2:], ^FoldSum(SumBytes(m, 0)))
	return n
}

// tooBigAllowed reports whether an ICMP error may be sent about orig.
func tooBigAllowed(orig *Packet) bool {
	b := orig.B
	if orig.V6 {
		if len(b) < ipv6Header || b[0]>>4 != 6 {
			return false
		}
	} else {
		if len(b) < ipv4MinHeader || b[0]>>4 != 4 || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return false
		}
		if d := orig.Dst(); d.IsMulticast() || d == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
	}
	if s := orig.Src(); !s.IsValid() || s.IsUnspecified() || s.IsMulticast() ||
		s == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if orig.Proto == icmpProto(orig.V6) && (!orig.l4csum || isAnyICMPError(orig.V6, orig.ICMPType)) {
		return false
	}
	return true
}

// isAnyICMPError: every ICMP error, not only those tunvs translates.
func isAnyICMPError(v6 bool, t uint8) bool {
	if v6 {
		return t < 128 // RFC 4443 section 2.1
	}
	switch t {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}
