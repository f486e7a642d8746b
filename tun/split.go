package tun

// The read side of the offloads: GSO super-packets from the kernel split
// into ordinary, fully checksummed IP packets.

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

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
			csum.Finish(p, start, off)
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
		csum.SetIPv4Header(seg[:s.l4])
	}
	l4 := seg[s.l4:]
	l4Len := len(l4)
	if s.udp {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4Len))
		l4[6], l4[7] = 0, 0
		c := ^csum.Fold(csum.Sum(l4, csum.PseudoIP(seg, s.v6, protoUDP, l4Len)))
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
		binary.BigEndian.PutUint16(l4[16:], ^csum.Fold(csum.Sum(l4, csum.PseudoIP(seg, s.v6, protoTCP, l4Len))))
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
