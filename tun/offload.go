package tun

// Software halves of the Linux TUN offloads (offload_linux.go): splitting
// the GSO super-packets the kernel hands out into ordinary, fully
// checksummed IP packets, and coalescing runs of TCP segments into
// super-packets for the kernel. The code is portable so that it is tested
// and benchmarked everywhere; only the device itself is Linux-only.

import (
	"encoding/binary"
	"errors"
)

// virtioNetHdrLen is the size of struct virtio_net_hdr (without the
// num_buffers field of the mergeable-buffers variant), the header the
// kernel puts in front of every packet on a device opened with
// IFF_VNET_HDR and TUNSETVNETHDRSZ 10.
const virtioNetHdrLen = 10

// virtio_net_hdr flags and gso types (include/uapi/linux/virtio_net.h).
const (
	vnetFlagNeedsCsum = 1

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
	vnetGSOUDPL4 = 5
	vnetGSOECN   = 0x80
)

// maxIPPacket is the largest IPv4 total length and IPv6 payload length.
const maxIPPacket = 65535

// readBufSize holds the largest packet the kernel can send: the virtio
// header and a 64 KiB IP packet (IPv6 payload length 65535 plus its
// header). It is also the size of the coalescing buffer.
const readBufSize = virtioNetHdrLen + maxIPPacket + 40

const (
	protoTCP = 6
	protoUDP = 17

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagURG = 0x20
	tcpFlagCWR = 0x80
)

// virtioHdr is struct virtio_net_hdr. The legacy header the TUN driver
// uses is in host byte order (unless TUNSETVNETLE/BE says otherwise,
// which this package never does).
type virtioHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *virtioHdr) decode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *virtioHdr) encode(b []byte) {
	_ = b[virtioNetHdrLen-1]
	b[0] = h.flags
	b[1] = h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// Errors of malformed packets from the kernel (never expected: they mean
// a kernel or a configuration this code does not understand). Read drops
// such a packet and counts it in Stats().Drops.
var (
	errBadVirtioHdr = errors.New("tun: malformed virtio-net header or packet")
	errSegTooBig    = errors.New("tun: packet larger than the read buffer")
)

// ---- checksums ----

// sumBytes adds b, as big-endian 16-bit words (an odd last byte padded
// with zero), to the ones'-complement accumulator acc, unfolded.
func sumBytes(b []byte, acc uint64) uint64 {
	for len(b) >= 32 {
		acc += uint64(binary.BigEndian.Uint32(b[0:])) + uint64(binary.BigEndian.Uint32(b[4:])) +
			uint64(binary.BigEndian.Uint32(b[8:])) + uint64(binary.BigEndian.Uint32(b[12:])) +
			uint64(binary.BigEndian.Uint32(b[16:])) + uint64(binary.BigEndian.Uint32(b[20:])) +
			uint64(binary.BigEndian.Uint32(b[24:])) + uint64(binary.BigEndian.Uint32(b[28:]))
		b = b[32:]
	}
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold folds an accumulator into 16 bits (not complemented).
func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// pseudoSum is the unfolded sum of the TCP/UDP pseudo-header of the IP
// packet p (v4 or v6, by the version nibble) for a transport segment of
// l4Len bytes.
func pseudoSum(p []byte, v6 bool, proto uint8, l4Len int) uint64 {
	var acc uint64
	if v6 {
		acc = sumBytes(p[8:40], 0)
	} else {
		acc = sumBytes(p[12:20], 0)
	}
	return acc + uint64(proto) + uint64(l4Len)
}

// ipv4HeaderChecksum recomputes the header checksum of the IPv4 header h.
func ipv4HeaderChecksum(h []byte) {
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], ^fold(sumBytes(h, 0)))
}

// finishChecksum stores the complemented sum of b[start:] at
// b[start+off:], where the field already holds the pseudo-header sum
// (what NEEDS_CSUM means). A result of zero is sent as 0xffff, as the
// kernel does, which is the same value in ones' complement and keeps UDP's
// "no checksum" meaning away.
func finishChecksum(b []byte, start, off int) {
	c := ^fold(sumBytes(b[start:], 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
}

// ---- split (read side) ----

// splitter holds one packet read from the device and hands it out as
// ordinary IP packets: a GSO super-packet segment by segment, anything
// else whole. It keeps what it has not handed out yet, so a Read whose
// buffers run out leaves the rest for the next one.
type splitter struct {
	pkt     []byte // the IP packet, without the virtio header
	gso     bool
	v6      bool
	udp     bool
	l4      int // offset of the TCP/UDP header
	hdrLen  int // IP + TCP/UDP header length
	gsoSize int
	off     int // offset in pkt of the next segment's payload
	idx     int // index of the next segment
	done    bool
}

// pending reports whether packets are left to hand out.
func (s *splitter) pending() bool { return s.pkt != nil && !s.done }

// reset forgets the packet.
func (s *splitter) reset() { *s = splitter{} }

// load takes a packet as read: a virtio header then the IP packet. It
// validates the header against the packet, completes the checksum of a
// non-GSO packet marked NEEDS_CSUM in place, and prepares the split of a
// GSO one. On error the packet is to be dropped.
func (s *splitter) load(b []byte) error {
	if len(b) < virtioNetHdrLen+1 {
		s.reset()
		return errBadVirtioHdr
	}
	var h virtioHdr
	h.decode(b)
	return s.loadParts(&h, b[virtioNetHdrLen:])
}

// loadParts is load with the header decoded and the packet apart.
func (s *splitter) loadParts(h *virtioHdr, p []byte) error {
	s.reset()
	if len(p) == 0 {
		return errBadVirtioHdr
	}
	gsoType := h.gsoType &^ vnetGSOECN
	if gsoType == vnetGSONone {
		if h.flags&vnetFlagNeedsCsum != 0 {
			start, off := int(h.csumStart), int(h.csumOffset)
			if start+off+2 > len(p) || off < 0 {
				return errBadVirtioHdr
			}
			finishChecksum(p, start, off)
		}
		s.pkt = p
		return nil
	}
	s.gso = true
	s.gsoSize = int(h.gsoSize)
	s.l4 = int(h.csumStart)
	if s.gsoSize == 0 {
		return errBadVirtioHdr
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 || int(p[0]&0xf)*4 != s.l4 || s.l4 < 20 {
			return errBadVirtioHdr
		}
	case 6:
		s.v6 = true
		if len(p) < 40 || s.l4 < 40 {
			return errBadVirtioHdr
		}
	default:
		return errBadVirtioHdr
	}
	switch gsoType {
	case vnetGSOTCPv4, vnetGSOTCPv6:
		if (gsoType == vnetGSOTCPv6) != s.v6 || len(p) < s.l4+20 {
			return errBadVirtioHdr
		}
		// The protocol, where it can be seen without walking IPv6
		// extension headers.
		if !s.v6 && p[9] != protoTCP || s.v6 && s.l4 == 40 && p[6] != protoTCP {
			return errBadVirtioHdr
		}
		// The TCP header's own length, not hdr_len: the kernel's
		// hdr_len is only a hint (and has been wrong in some versions).
		s.hdrLen = s.l4 + int(p[s.l4+12]>>4)*4
		if s.hdrLen < s.l4+20 {
			return errBadVirtioHdr
		}
	case vnetGSOUDPL4:
		s.udp = true
		if !s.v6 && p[9] != protoUDP || s.v6 && s.l4 == 40 && p[6] != protoUDP {
			return errBadVirtioHdr
		}
		s.hdrLen = s.l4 + 8
	default:
		return errBadVirtioHdr
	}
	if s.hdrLen > len(p) {
		return errBadVirtioHdr
	}
	s.pkt = p
	s.off = s.hdrLen
	return nil
}

// next writes the next packet into dst and returns its length. When dst
// is too small the packet is skipped and errSegTooBig returned.
func (s *splitter) next(dst []byte) (int, error) {
	p := s.pkt
	if !s.gso {
		s.done = true
		if len(p) > len(dst) {
			return 0, errSegTooBig
		}
		return copy(dst, p), nil
	}
	payload := min(s.gsoSize, len(p)-s.off)
	first := s.idx == 0
	last := s.off+payload >= len(p)
	segLen := s.hdrLen + payload
	if segLen > len(dst) {
		s.advance(payload, last)
		return 0, errSegTooBig
	}
	copy(dst, p[:s.hdrLen])
	copy(dst[s.hdrLen:], p[s.off:s.off+payload])
	seg := dst[:segLen]
	if s.v6 {
		binary.BigEndian.PutUint16(seg[4:], uint16(segLen-40))
	} else {
		binary.BigEndian.PutUint16(seg[2:], uint16(segLen))
		id := binary.BigEndian.Uint16(p[4:])
		binary.BigEndian.PutUint16(seg[4:], id+uint16(s.idx))
		ipv4HeaderChecksum(seg[:s.l4])
	}
	l4 := seg[s.l4:]
	l4Len := len(l4)
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4Len))
		l4[6], l4[7] = 0, 0
		c := ^fold(sumBytes(l4, pseudoSum(seg, s.v6, protoUDP, l4Len)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	} else {
		seq := binary.BigEndian.Uint32(p[s.l4+4:])
		binary.BigEndian.PutUint32(l4[4:], seq+uint32(s.off-s.hdrLen))
		if !last {
			l4[13] &^= tcpFlagFIN | tcpFlagPSH
		}
		if !first {
			l4[13] &^= tcpFlagCWR
		}
		l4[16], l4[17] = 0, 0
		binary.BigEndian.PutUint16(l4[16:], ^fold(sumBytes(l4, pseudoSum(seg, s.v6, protoTCP, l4Len))))
	}
	s.advance(payload, last)
	return segLen, nil
}

func (s *splitter) advance(payload int, last bool) {
	s.off += payload
	s.idx++
	if last {
		s.done = true
	}
}

// ---- coalesce (write side) ----

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
	if pt.v6 != qt.v6 || pt.hdrLen != qt.hdrLen || pt.l4 != qt.l4 {
		return false
	}
	if pt.v6 {
		if string(p[0:4]) != string(q[0:4]) || string(p[6:40]) != string(q[6:40]) {
			return false
		}
	} else {
		if p[0] != q[0] || p[1] != q[1] || string(p[6:10]) != string(q[6:10]) ||
			string(p[12:pt.l4]) != string(q[12:pt.l4]) {
			return false
		}
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
		binary.BigEndian.PutUint16(sp[4:], uint16(n-40))
	} else {
		binary.BigEndian.PutUint16(sp[2:], uint16(n))
		ipv4HeaderChecksum(sp[:pt.l4])
	}
	h.encode(dst)
	tcp := sp[pt.l4:]
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudoSum(sp, pt.v6, protoTCP, len(tcp))))
	return virtioNetHdrLen + n
}
