package tun

// The write side of the offloads: runs of TCP segments coalesced into
// super-packets for the kernel.

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

// tcpSeg describes a TCP segment that may take part in coalescing.
type tcpSeg struct {
	v6      bool
	l4      int // IP header length
	hdrLen  int // IP + TCP header length
	payload int
	seq     uint32
	flags   uint8
}

// parseTCPSeg reports whether p is a TCP segment with data that could be
// coalesced (a plain IPv4 header with DF and no fragmentation, or an
// IPv6 header without extension headers; flags ACK or ACK|PSH), and
// describes it.
func parseTCPSeg(p []byte) (tcpSeg, bool) {
	var t tcpSeg
	if len(p) < 40 {
		return t, false
	}
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || p[9] != protoTCP || int(binary.BigEndian.Uint16(p[2:])) != len(p) {
			return t, false
		}
		// DF set, MF clear, offset zero.
		if binary.BigEndian.Uint16(p[6:]) != 0x4000 {
			return t, false
		}
		t.l4 = ihl
	case 6:
		if len(p) < 60 || p[6] != protoTCP || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return t, false
		}
		t.v6 = true
		t.l4 = 40
	default:
		return t, false
	}
	if len(p) < t.l4+20 {
		return t, false
	}
	tcp := p[t.l4:]
	thl := int(tcp[12]>>4) * 4
	t.hdrLen = t.l4 + thl
	if thl < 20 || t.hdrLen > len(p) {
		return t, false
	}
	t.payload = len(p) - t.hdrLen
	t.flags = tcp[13]
	if t.payload == 0 || t.flags&^tcpFlagPSH != tcpFlagACK {
		return t, false
	}
	t.seq = binary.BigEndian.Uint32(tcp[4:])
	return t, true
}

// sameFlow reports whether segment q (described by qt) may follow segment
// p (described by pt, the first of the run) in one super-packet: identical
// IP headers except length, ID and checksum; same ports, ACK, window,
// urgent pointer and options; flags equal except PSH.
func sameFlow(p []byte, pt tcpSeg, q []byte, qt tcpSeg) bool {
	if pt.v6 != qt.v6 || pt.hdrLen != qt.hdrLen || pt.l4 != qt.l4 || !sameIPHeader(p, q, pt.l4, pt.v6) {
		return false
	}
	a, b := p[pt.l4:pt.hdrLen], q[qt.l4:qt.hdrLen]
	return string(a[0:4]) == string(b[0:4]) && // ports
		string(a[8:13]) == string(b[8:13]) && // ack, data offset
		a[13]&^tcpFlagPSH == b[13]&^tcpFlagPSH &&
		string(a[14:16]) == string(b[14:16]) && // window
		string(a[18:]) == string(b[18:]) // urgent pointer, options
}

// coalesceRun returns how many packets, from pkts[0] on, form one run to
// send as a super-packet (1 when pkts[0] goes alone). The run ends at a
// segment with PSH, at one smaller than the first, at a gap in sequence
// numbers or a change of flow, or when the IP packet would exceed 65535
// bytes.
// sameIPHeader reports whether the IP headers of p and q (l4 bytes long,
// the same version) are identical except length, ID and checksum, as the
// packets of one super-packet must be.
func sameIPHeader(p, q []byte, l4 int, v6 bool) bool {
	if v6 {
		return string(p[0:4]) == string(q[0:4]) && string(p[6:40]) == string(q[6:40])
	}
	return p[0] == q[0] && p[1] == q[1] && string(p[6:10]) == string(q[6:10]) &&
		string(p[12:l4]) == string(q[12:l4])
}

func coalesceRun(pkts [][]byte, offset int) int {
	p := pkts[0][offset:]
	pt, ok := parseTCPSeg(p)
	if !ok || pt.flags&tcpFlagPSH != 0 {
		return 1
	}
	total := len(p) - 40*btoi(pt.v6) // IPv4 total length or IPv6 payload length
	next := pt.seq + uint32(pt.payload)
	n := 1
	for n < len(pkts) {
		q := pkts[n][offset:]
		qt, ok := parseTCPSeg(q)
		if !ok || qt.seq != next || qt.payload > pt.payload || total+qt.payload > maxIPPacket ||
			!sameFlow(p, pt, q, qt) {
			break
		}
		total += qt.payload
		next += uint32(qt.payload)
		n++
		if qt.payload < pt.payload || qt.flags&tcpFlagPSH != 0 {
			break
		}
	}
	return n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// coalesce writes the virtio header and the super-packet made of the run
// pkts (as found by coalesceRun, at least two packets) into dst and
// returns the length written. dst must hold virtioNetHdrLen+65535+40
// bytes. The TCP checksum field carries the pseudo-header sum and the
// header says NEEDS_CSUM, so the kernel completes (or, segmenting,
// recomputes) the checksums; the segments' own checksums are not checked.
func coalesce(dst []byte, pkts [][]byte, offset int) int {
	p := pkts[0][offset:]
	pt, _ := parseTCPSeg(p)
	out := dst[virtioNetHdrLen:]
	n := copy(out, p)
	flags := pt.flags
	for _, b := range pkts[1:] {
		q := b[offset:]
		n += copy(out[n:], q[pt.hdrLen:])
		flags |= q[pt.l4+13] & tcpFlagPSH
	}
	sp := out[:n]
	h := virtioHdr{
		flags:      vnetFlagNeedsCsum,
		gsoType:    vnetGSOTCPv4,
		hdrLen:     uint16(pt.hdrLen),
		gsoSize:    uint16(pt.payload),
		csumStart:  uint16(pt.l4),
		csumOffset: 16,
	}
	if pt.v6 {
		h.gsoType = vnetGSOTCPv6
	}
	setIPLength(sp, pt.l4, pt.v6)
	h.encode(dst)
	tcp := sp[pt.l4:]
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[16:], csum.Fold(csum.PseudoIP(sp, pt.v6, protoTCP, len(tcp))))
	return virtioNetHdrLen + n
}

// setIPLength sets the length of super-packet sp in its IP header (l4
// bytes long), and for IPv4 the header checksum.
func setIPLength(sp []byte, l4 int, v6 bool) {
	if v6 {
		binary.BigEndian.PutUint16(sp[4:], uint16(len(sp)-40))
		return
	}
	binary.BigEndian.PutUint16(sp[2:], uint16(len(sp)))
	csum.SetIPv4Header(sp[:l4])
}
