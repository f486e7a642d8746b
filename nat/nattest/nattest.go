// Package nattest builds valid IPv4/IPv6 TCP and UDP packets for tests and
// benchmarks of the NAT and the hosts around it. It is not for production
// code paths.
package nattest

import (
	"encoding/binary"
	"net/netip"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// Seg describes a packet to build.
type Seg struct {
	Src, Dst netip.AddrPort
	Proto    uint8 // 6 or 17
	Flags    uint8 // TCP
	Seq, Ack uint32
	Payload  []byte
	// Size, if larger than the headers plus payload, pads the payload
	// with zeros to make the whole IP packet this long.
	Size int
	TTL  uint8 // default 64
	DF   bool
	// Options are TCP options, padded with EOL to a multiple of 4.
	Options []byte
	// Window is the TCP window (0: 65535).
	Window uint16
}

// The checksums of the packets built here come from the reference
// implementation, not from the code under test.
var (
	sum  = csumtest.Sum
	fold = csumtest.Fold
)

// Build returns the packet.
func Build(s Seg) []byte {
	v6 := s.Src.Addr().Is6()
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	l4Len := 8
	if s.Proto == 6 {
		l4Len = 20 + (len(s.Options)+3)/4*4
	}
	payload := s.Payload
	if n := s.Size - ipLen - l4Len; n > len(payload) {
		p := make([]byte, n)
		copy(p, payload)
		payload = p
	}
	total := ipLen + l4Len + len(payload)
	b := make([]byte, total)
	ttl := s.TTL
	if ttl == 0 {
		ttl = 64
	}
	var src, dst []byte
	if v6 {
		b[0] = 0x60
		binary.BigEndian.PutUint16(b[4:], uint16(l4Len+len(payload)))
		b[6] = s.Proto
		b[7] = ttl
		a, d := s.Src.Addr().As16(), s.Dst.Addr().As16()
		copy(b[8:24], a[:])
		copy(b[24:40], d[:])
		src, dst = b[8:24], b[24:40]
	} else {
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(total))
		binary.BigEndian.PutUint16(b[4:], 0x1234)
		if s.DF {
			b[6] = 0x40
		}
		b[8] = ttl
		b[9] = s.Proto
		a, d := s.Src.Addr().As4(), s.Dst.Addr().As4()
		copy(b[12:16], a[:])
		copy(b[16:20], d[:])
		binary.BigEndian.PutUint16(b[10:], ^fold(sum(b[:20], 0)))
		src, dst = b[12:16], b[16:20]
	}
	l4 := b[ipLen:]
	binary.BigEndian.PutUint16(l4[0:], s.Src.Port())
	binary.BigEndian.PutUint16(l4[2:], s.Dst.Port())
	copy(l4[l4Len:], payload)
	ps := sum(src, 0)
	ps = sum(dst, ps)
	ps += uint32(s.Proto) + uint32(len(l4))
	if s.Proto == 6 {
		binary.BigEndian.PutUint32(l4[4:], s.Seq)
		binary.BigEndian.PutUint32(l4[8:], s.Ack)
		l4[12] = byte(l4Len/4) << 4
		copy(l4[20:], s.Options)
		l4[13] = s.Flags
		win := s.Window
		if win == 0 {
			win = 65535
		}
		binary.BigEndian.PutUint16(l4[14:], win)
		binary.BigEndian.PutUint16(l4[16:], ^fold(sum(l4, ps)))
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		c := ^fold(sum(l4, ps))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	return b
}

// TCP builds a TCP packet of the given size (0: headers only).
func TCP(src, dst netip.AddrPort, flags uint8, size int) []byte {
	return Build(Seg{Src: src, Dst: dst, Proto: 6, Flags: flags, Size: size})
}

// UDP builds a UDP packet with the payload.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	return Build(Seg{Src: src, Dst: dst, Proto: 17, Payload: payload})
}

// AP parses "a:p" or "[a]:p", panicking on a typo (tests only).
func AP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// Checksum is the Internet checksum of b, starting from a partial sum (a
// pseudo-header's, say), complemented and ready to store.
func Checksum(b []byte, initial uint32) uint16 { return csumtest.Checksum(b, initial) }

// Echo builds an ICMP (IPv4) or ICMPv6 echo request with the given TTL
// (hop limit; 0 means 64).
func Echo(src, dst netip.Addr, ttl uint8) []byte {
	if ttl == 0 {
		ttl = 64
	}
	if src.Is4() {
		b := make([]byte, 28)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], 28)
		b[8], b[9] = ttl, 1
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		binary.BigEndian.PutUint16(b[10:], Checksum(b[:20], 0))
		m := b[20:]
		m[0] = 8
		binary.BigEndian.PutUint16(m[4:], 0x77)
		binary.BigEndian.PutUint16(m[6:], 1)
		binary.BigEndian.PutUint16(m[2:], Checksum(m, 0))
		return b
	}
	b := make([]byte, 48)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], 8)
	b[6], b[7] = 58, ttl
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	m := b[40:]
	m[0] = 128
	binary.BigEndian.PutUint16(m[4:], 0x77)
	binary.BigEndian.PutUint16(m[2:], Checksum(m, PseudoSum(b[8:24], b[24:40], 58, len(m))))
	return b
}

// PseudoSum is the partial sum of a TCP/UDP/ICMPv6 pseudo-header.
func PseudoSum(src, dst []byte, proto uint8, length int) uint32 {
	return csumtest.Pseudo(src, dst, proto, length)
}
