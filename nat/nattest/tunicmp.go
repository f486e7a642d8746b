package nattest

import (
	"encoding/binary"
	"net/netip"
)

// Encapsulations TunnelError knows, as --tun-type names them.
const (
	EncapIPIP = iota
	EncapGUE
	EncapGRE
)

// Encap wraps the IPv4 packet inner as a director sends it to a tunnel
// real server: an outer IPv4 header from dir to rs (DF copied from inner),
// and for EncapGUE a UDP header to port and a 4-byte GUE header, for
// EncapGRE a 4-byte GRE header (8 with csum). Checksums the receiver
// ignores for this purpose (UDP) are 0.
func Encap(kind int, dir, rs netip.Addr, port uint16, csum bool, inner []byte) []byte {
	hl := 20
	proto := uint8(4)
	switch kind {
	case EncapGUE:
		hl, proto = 20+8+4, 17
	case EncapGRE:
		hl, proto = 24, 47
		if csum {
			hl = 28
		}
	}
	b := make([]byte, hl+len(inner))
	copy(b[hl:], inner)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[6] = inner[6] & 0x40
	b[8], b[9] = inner[8], proto
	s, d := dir.As4(), rs.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], Checksum(b[:20], 0))
	l4 := b[20:hl]
	switch kind {
	case EncapGUE:
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], port)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(b)-20))
		l4[9] = 4
	case EncapGRE:
		binary.BigEndian.PutUint16(l4[2:], 0x0800)
		if csum {
			l4[0] = 0x80
			binary.BigEndian.PutUint16(l4[4:], Checksum(b[20:], 0))
		}
	}
	return b
}

// ICMPError builds the IPv4 ICMP error a router at from sends to the
// source of pkt, quoting its first quote bytes (all if 0 or more), with
// info in the second word.
func ICMPError(from netip.Addr, pkt []byte, typ, code uint8, info uint32, quote int) []byte {
	if quote <= 0 || quote > len(pkt) {
		quote = len(pkt)
	}
	b := make([]byte, 28+quote)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 1
	s := from.As4()
	copy(b[12:], s[:])
	copy(b[16:], pkt[12:16])
	binary.BigEndian.PutUint16(b[10:], Checksum(b[:20], 0))
	m := b[20:]
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint32(m[4:], info)
	copy(m[8:], pkt[:quote])
	binary.BigEndian.PutUint16(m[2:], Checksum(m, 0))
	return b
}
