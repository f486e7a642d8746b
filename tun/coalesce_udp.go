package tun

// UDP datagrams coalesced into USO super-packets for the kernel: what
// the write side does for runs of TCP segments (coalesce.go), for the
// small datagrams that otherwise cost a write(2) each.

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

// maxUSOSegments bounds a UDP run: the kernel's own UDP_SEGMENT senders
// may not put more datagrams in one super-packet (UDP_MAX_SEGMENTS in
// include/linux/udp.h, 64 before Linux 6.9).
const maxUSOSegments = 64

// udpDgram describes a UDP datagram that may take part in coalescing.
type udpDgram struct {
	v6      bool
	l4      int // IP header length
	payload int
}

// parseUDPDgram reports whether p is a UDP datagram with data that could
// be coalesced (a plain IPv4 header with DF and no fragmentation, so that
// its ID carries nothing (RFC 6864), or an IPv6 header without extension
// headers; UDP length matching the packet), and describes it.
func parseUDPDgram(p []byte) (udpDgram, bool) {
	var u udpDgram
	if len(p) < 28 {
		return u, false
	}
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || p[9] != protoUDP || int(binary.BigEndian.Uint16(p[2:])) != len(p) ||
			binary.BigEndian.Uint16(p[6:]) != 0x4000 {
			return u, false
		}
		u.l4 = ihl
	case 6:
		if len(p) < 48 || p[6] != protoUDP || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return u, false
		}
		u.v6, u.l4 = true, 40
	default:
		return u, false
	}
	if len(p) < u.l4+8 || int(binary.BigEndian.Uint16(p[u.l4+4:])) != len(p)-u.l4 {
		return u, false
	}
	u.payload = len(p) - u.l4 - 8
	return u, u.payload > 0
}

// sameUDPFlow reports whether datagram q may follow datagram p (the first
// of the run) in one super-packet: identical IP headers except length, ID
// and checksum, and the same ports.
func sameUDPFlow(p []byte, pu udpDgram, q []byte, qu udpDgram) bool {
	return pu.v6 == qu.v6 && pu.l4 == qu.l4 && sameIPHeader(p, q, pu.l4, pu.v6) &&
		string(p[pu.l4:pu.l4+4]) == string(q[qu.l4:qu.l4+4])
}

// coalesceRunUDP returns how many datagrams, from pkts[0] on, form one
// USO super-packet (1 when pkts[0] goes alone): the same flow, every
// datagram the size of the first except the last, which may be smaller
// (the kernel cuts a USO super-packet into gso_size pieces and a
// remainder, __udp_gso_segment in net/ipv4/udp_offload.c), at most
// maxUSOSegments and 65535 bytes of IP packet.
func coalesceRunUDP(pkts [][]byte, offset int) int {
	p := pkts[0][offset:]
	pu, ok := parseUDPDgram(p)
	if !ok {
		return 1
	}
	total := len(p) - 40*btoi(pu.v6)
	n := 1
	for n < len(pkts) && n < maxUSOSegments {
		q := pkts[n][offset:]
		qu, ok := parseUDPDgram(q)
		if !ok || qu.payload > pu.payload || total+qu.payload > maxIPPacket || !sameUDPFlow(p, pu, q, qu) {
			break
		}
		total += qu.payload
		n++
		if qu.payload < pu.payload {
			break
		}
	}
	return n
}

// coalesceUDP is coalesce for a run found by coalesceRunUDP: the virtio
// header (GSO_UDP_L4, the checksum left to the kernel as for TCP) and
// the super-packet, into dst; it returns the length written.
func coalesceUDP(dst []byte, pkts [][]byte, offset int) int {
	p := pkts[0][offset:]
	pu, _ := parseUDPDgram(p)
	out := dst[virtioNetHdrLen:]
	n := copy(out, p)
	for _, b := range pkts[1:] {
		n += copy(out[n:], b[offset+pu.l4+8:])
	}
	sp := out[:n]
	h := virtioHdr{
		flags:      vnetFlagNeedsCsum,
		gsoType:    vnetGSOUDPL4,
		hdrLen:     uint16(pu.l4 + 8),
		gsoSize:    uint16(pu.payload),
		csumStart:  uint16(pu.l4),
		csumOffset: 6,
	}
	setIPLength(sp, pu.l4, pu.v6)
	h.encode(dst)
	udp := sp[pu.l4:]
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], csum.Fold(csum.PseudoIP(sp, pu.v6, protoUDP, len(udp))))
	return virtioNetHdrLen + n
}
