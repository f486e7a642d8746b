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
	if orig == nil || mtu < 0 {
		return 0
	}
	if orig.V6 {
		return buildICMPError(dst, orig, src, 2, 0, uint32(min(uint64(mtu), 0xffffffff)))
	}
	// The next-hop MTU sits in the low half of the second word.
	return buildICMPError(dst, orig, src, 3, 4, uint32(min(mtu, 0xffff)))
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
