package nat

import (
	"encoding/binary"
	"net/netip"

	"github.com/tunvs/tunvs/internal/csum"
)

// buildICMPError writes into dst an ICMP (v4) or ICMPv6 (v6) error of the
// given type and code about orig, from src to orig's source, with info in
// the message's second word, quoting orig as far as the size limits allow.
// It returns the length, or 0 where no error may or can be sent (see
// BuildTooBig).
func buildICMPError(dst []byte, orig *Packet, src netip.Addr, typ, code uint8, info uint32) int {
	if orig == nil || !tooBigAllowed(orig) {
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
		m[0], m[1], m[2], m[3] = typ, code, 0, 0
		binary.BigEndian.PutUint32(m[4:], info)
		put16(m[2:], ^csum.Fold(csum.Sum(m, csum.Pseudo(h[8:24], h[24:40], ipProtoICMPv6, len(m)))))
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
	// DF with ID 0: an atomic datagram may carry any ID (RFC 6864).
	h[4], h[5], h[6], h[7] = 0, 0, 0x40, 0
	h[8], h[9] = 64, ipProtoICMP
	s := src.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], to[:])
	csum.SetIPv4Header(h)
	m := dst[ipv4MinHeader:n]
	m[0], m[1], m[2], m[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(m[4:], info)
	put16(m[2:], ^csum.Fold(csum.Sum(m, 0)))
	return n
}

// icmpKind is an ICMP error by its ICMP and ICMPv6 type and code.
type icmpKind struct{ t4, c4, t6, c6 uint8 }

func (k icmpKind) build(dst []byte, orig *Packet, src netip.Addr) int {
	if orig == nil {
		return 0
	}
	if orig.V6 {
		return buildICMPError(dst, orig, src, k.t6, k.c6, 0)
	}
	return buildICMPError(dst, orig, src, k.t4, k.c4, 0)
}

var (
	portUnreachable = icmpKind{t4: 3, c4: 3, t6: 1, c6: 4}
	timeExceeded    = icmpKind{t4: 11, c4: 0, t6: 3, c6: 0}
)

// BuildPortUnreachable writes an ICMP port unreachable (type 3 code 3) or
// ICMPv6 port unreachable (type 1 code 4) about orig, from src, into dst:
// what IPVS sends a client when a service has no real server available
// (ip_vs_leave). Returns the length, or 0 (see BuildTooBig).
func BuildPortUnreachable(dst []byte, orig *Packet, src netip.Addr) int {
	return portUnreachable.build(dst, orig, src)
}

// BuildTimeExceeded writes an ICMP time exceeded in transit (type 11 code
// 0) or ICMPv6 hop limit exceeded (type 3 code 0) about orig, from src,
// into dst: what a router sends when a packet's TTL runs out. Returns the
// length, or 0 (see BuildTooBig).
func BuildTimeExceeded(dst []byte, orig *Packet, src netip.Addr) int {
	return timeExceeded.build(dst, orig, src)
}
