// Package vrrp is VRRP version 3 (RFC 5798), IPv4 and IPv6, for a
// director's TAP links: the advertisement codec, the frames a router
// sends on takeover (gratuitous ARP, unsolicited Neighbor Advertisement)
// and the router state machine, which runs on an injected clock.
//
// It moves virtual addresses between directors; it does not move
// connections (that is the sync daemons' work, package ipvssync), and it
// has no authentication (version 3 has none) and no unicast peers.
package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tunvs/tunvs/internal/csum"
)

// Protocol constants (RFC 5798 5.1, 5.2).
const (
	// Proto is VRRP's IP protocol number.
	Proto = 112
	// Version is the VRRP version sent and the only one accepted.
	Version = 3
	// TTL is the TTL (hop limit) every advertisement carries; one with
	// any other arrived from off the link and is discarded (7.1).
	TTL         = 255
	typeAdvert  = 1
	hdrLen      = 8
	maxInterval = 0xfff // centiseconds, 12 bits
	// OwnerPriority is the address owner's priority; 0 is a master's
	// resignation.
	OwnerPriority = 255
)

// The multicast groups adverts go to (RFC 5798 5.1.1.2, 5.1.2.2).
var (
	Group4 = netip.MustParseAddr("224.0.0.18")
	Group6 = netip.MustParseAddr("ff02::12")
)

// Advert is a VRRP advertisement.
type Advert struct {
	VRID     uint8
	Priority uint8
	// Interval is Max Adver Int, in centiseconds.
	Interval uint16
	Addrs    []netip.Addr
}

// Reason says why a received packet was discarded (RFC 5798 7.1); each
// has its counter.
type Reason uint8

const (
	ReasonNone     Reason = iota
	ReasonShort           // shorter than its headers or its count of addresses
	ReasonTTL             // TTL or hop limit not 255
	ReasonVersion         // not version 3
	ReasonType            // not an advertisement
	ReasonChecksum        // bad checksum
	ReasonFamily          // an IPv4 advert in IPv6 or the reverse, or a fragment, or options we do not read
	ReasonInterval        // Max Adver Int of 0
	ReasonVRID            // a VRID with no instance here
	ReasonAddrs           // addresses differ from ours (logged, the advert still counts: 7.1)
	ReasonOwn             // our own advert, looped back
	ReasonQueue           // the instance's queue was full
	numReasons
)

var reasonNames = [...]string{"none", "short", "ttl", "version", "type", "checksum", "family", "interval", "vrid", "addrs", "own", "queue"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason %d", r)
}

// Reasons lists the reasons, for counters.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonShort; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// ParseError is a packet discarded, with the reason.
type ParseError struct {
	Reason Reason
	Detail string
}

func (e *ParseError) Error() string { return "vrrp: " + e.Reason.String() + ": " + e.Detail }

func perr(r Reason, format string, a ...any) error {
	return &ParseError{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// ReasonOf is err's reason, ReasonNone if it is not a ParseError.
func ReasonOf(err error) Reason {
	var pe *ParseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ReasonNone
}

// pseudoSum is the ones'-complement sum of the IPv4 or IPv6 pseudo-header
// a version 3 checksum covers (RFC 5798 5.2.8: "the same pseudo-header
// as TCP and UDP", RFC 793 / RFC 8200 8.1).
func pseudoSum(src, dst netip.Addr, length int) uint32 {
	var s uint32
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s = csum.Sum(a[:], 0)
		s = csum.Sum(b[:], s)
	} else {
		a, b := src.As16(), dst.As16()
		s = csum.Sum(a[:], 0)
		s = csum.Sum(b[:], s)
	}
	var t [4]byte
	binary.BigEndian.PutUint16(t[0:], uint16(length))
	binary.BigEndian.PutUint16(t[2:], Proto)
	return csum.Sum(t[:], s)
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// Append appends the advertisement, its checksum computed for an IP
// packet from src to dst, to b.
func (a *Advert) Append(b []byte, src, dst netip.Addr) []byte {
	start := len(b)
	b = append(b, Version<<4|typeAdvert, a.VRID, a.Priority, uint8(len(a.Addrs)))
	b = binary.BigEndian.AppendUint16(b, a.Interval&maxInterval)
	b = append(b, 0, 0)
	for _, x := range a.Addrs {
		b = append(b, x.AsSlice()...)
	}
	m := b[start:]
	binary.BigEndian.PutUint16(m[6:], fold(csum.Sum(m, pseudoSum(src, dst, len(m)))))
	return b
}

// Decode reads the advertisement msg (the IP payload) carried from src to
// dst into a, its address list reusing a.Addrs' storage.
func (a *Advert) Decode(msg []byte, src, dst netip.Addr) error {
	if len(msg) < hdrLen {
		return perr(ReasonShort, "%d bytes", len(msg))
	}
	if v := msg[0] >> 4; v != Version {
		return perr(ReasonVersion, "version %d", v)
	}
	if t := msg[0] & 0xf; t != typeAdvert {
		return perr(ReasonType, "type %d", t)
	}
	alen := 4
	if src.Is6() {
		alen = 16
	}
	n := int(msg[3])
	if len(msg) < hdrLen+n*alen {
		return perr(ReasonShort, "%d addresses in %d bytes", n, len(msg))
	}
	if fold(csum.Sum(msg, pseudoSum(src, dst, len(msg)))) != 0 {
		return perr(ReasonChecksum, "from %v", src)
	}
	iv := binary.BigEndian.Uint16(msg[4:]) & maxInterval
	if iv == 0 {
		return perr(ReasonInterval, "max adver int 0 from %v", src)
	}
	a.VRID, a.Priority, a.Interval = msg[1], msg[2], iv
	a.Addrs = a.Addrs[:0]
	for i := range n {
		x, _ := netip.AddrFromSlice(msg[hdrLen+i*alen : hdrLen+(i+1)*alen])
		a.Addrs = append(a.Addrs, x)
	}
	return nil
}

// IP is what ParseIP reads from an IP packet's header.
type IP struct {
	Src, Dst netip.Addr
	Payload  []byte
}

// ParseIP reads the header of an IPv4 or IPv6 packet carrying VRRP and
// checks what RFC 5798 7.1 asks of it: protocol 112, TTL 255, not a
// fragment.
func ParseIP(l3 []byte) (IP, error) {
	if len(l3) < 1 {
		return IP{}, perr(ReasonShort, "empty packet")
	}
	switch l3[0] >> 4 {
	case 4:
		if len(l3) < 20 {
			return IP{}, perr(ReasonShort, "ipv4 header")
		}
		ihl := int(l3[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(l3[2:]))
		if ihl < 20 || tot < ihl || tot > len(l3) {
			return IP{}, perr(ReasonShort, "ipv4 lengths %d/%d of %d", ihl, tot, len(l3))
		}
		if l3[9] != Proto {
			return IP{}, perr(ReasonFamily, "protocol %d", l3[9])
		}
		if binary.BigEndian.Uint16(l3[6:])&0x3fff != 0 {
			return IP{}, perr(ReasonFamily, "fragment")
		}
		if l3[8] != TTL {
			return IP{}, perr(ReasonTTL, "ttl %d", l3[8])
		}
		return IP{Src: netip.AddrFrom4([4]byte(l3[12:16])), Dst: netip.AddrFrom4([4]byte(l3[16:20])), Payload: l3[ihl:tot]}, nil
	case 6:
		if len(l3) < 40 {
			return IP{}, perr(ReasonShort, "ipv6 header")
		}
		pl := int(binary.BigEndian.Uint16(l3[4:]))
		if 40+pl > len(l3) {
			return IP{}, perr(ReasonShort, "ipv6 payload %d of %d", pl, len(l3)-40)
		}
		// Extension headers are not read: no VRRP router sends them.
		if l3[6] != Proto {
			return IP{}, perr(ReasonFamily, "next header %d", l3[6])
		}
		if l3[7] != TTL {
			return IP{}, perr(ReasonTTL, "hop limit %d", l3[7])
		}
		return IP{Src: netip.AddrFrom16([16]byte(l3[8:24])), Dst: netip.AddrFrom16([16]byte(l3[24:40])), Payload: l3[40 : 40+pl]}, nil
	}
	return IP{}, perr(ReasonFamily, "ip version %d", l3[0]>>4)
}

// IsVRRP reports whether an IPv4 or IPv6 packet carries VRRP (the cheap
// test the packet path makes before handing a packet over).
func IsVRRP(l3 []byte) bool {
	if len(l3) < 40 {
		return len(l3) >= 20 && l3[0]>>4 == 4 && l3[9] == Proto
	}
	switch l3[0] >> 4 {
	case 4:
		return l3[9] == Proto
	case 6:
		return l3[6] == Proto
	}
	return false
}
