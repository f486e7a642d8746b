package tun

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

// GSOType is the kind of segmentation a super-packet asks for.
type GSOType uint8

const (
	// GSONone marks an ordinary packet.
	GSONone GSOType = iota
	// GSOTCPv4 and GSOTCPv6 are TCP super-packets (TSO).
	GSOTCPv4
	GSOTCPv6
	// GSOUDPL4 is a UDP super-packet (USO): every segment a datagram of
	// its own.
	GSOUDPL4
)

// GSO is the offload state of one packet handed out by ReadGSO or given
// to WriteGSO: what the virtio-net header says of it.
//
// A super-packet (Type != GSONone) is one IP packet of up to 64 KiB whose
// IP total (or payload) length covers it all; the device cuts it into
// packets of HdrLen+Size bytes (the last one shorter), repeating the
// headers, advancing TCP sequence numbers and IPv4 IDs.
//
// NeedsCsum means the TCP or UDP checksum is unfinished
// (CHECKSUM_PARTIAL): the 16 bits at CsumStart+CsumOffset hold the
// pseudo-header sum, folded but not complemented, and whoever finishes the
// packet sums from CsumStart on and stores the complement there. So
// rewriting ports changes nothing to fix, and rewriting addresses means
// adding their change to that sum, as the kernel's
// tcp_partial_csum_update does for IPVS. Super-packets always have it.
type GSO struct {
	Type       GSOType
	NeedsCsum  bool
	HdrLen     uint16 // IP and TCP/UDP header bytes (super-packets)
	Size       uint16 // payload bytes per segment (super-packets)
	CsumStart  uint16 // offset of the TCP/UDP header
	CsumOffset uint16 // of the checksum field within it: 16 TCP, 6 UDP
}

// SegLen is the IP length of the packets a super-packet is cut into (the
// last may be shorter), and 0 for an ordinary packet.
func (g GSO) SegLen() int {
	if g.Type == GSONone {
		return 0
	}
	return int(g.HdrLen) + int(g.Size)
}

// Pending reports whether the packet is not a finished IP packet: a
// super-packet, or one whose checksum is partial.
func (g GSO) Pending() bool { return g.Type != GSONone || g.NeedsCsum }

// The Ethernet header of a TAP frame, and the types it carries that
// have offloads.
const (
	ethHdrLen     = 14
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
)

// SmallSlot is the least room ReadGSO leaves a packet in its arena: a
// packet shorter than that may be rebuilt longer in place, up to
// SmallSlot bytes, without reaching the next (the NAT's SYN proxy turns
// a client's ACK into a SYN with more options, and a server's SYN-ACK into
// the client's held first segment).
const SmallSlot = 2048

// GSOPacket locates a packet that ReadGSO put in its arena.
type GSOPacket struct {
	Off, Len int // the IP packet is arena[Off:Off+Len]
	GSO      GSO
}

// GSODevice is a TUN or TAP device with offloads that can hand
// super-packets and partial checksums up whole and take them back, so that
// a router may rewrite a 64 KiB TCP run once instead of 45 times. Packets
// whose GSO.Pending is false are ordinary IP packets (TAP: frames).
//
// On a TAP a packet is an Ethernet frame, and one whose GSO is pending is
// always an IPv4 or IPv6 frame with a plain 14-byte Ethernet header; the
// offsets of its GSO (CsumStart, HdrLen) count from the IP header behind
// it, as on a TUN, so that GSO.InPlace, SegLen, FinishChecksum and
// Splitter.Load take the IP packet, frame[14:], unchanged. WriteGSO puts
// a super-frame out whole with the Ethernet header it carries.
type GSODevice interface {
	Device
	// ReadGSO reads packets one after another into arena, each at an
	// offset with at least headroom free bytes in front of it (and never
	// less than Headroom), and describes them in pkts. It blocks until at
	// least one packet is read, and returns when pkts is full, when the
	// arena has no room for another 64 KiB packet, or when the device has
	// nothing more. The arena must hold headroom + 64 KiB + 64 bytes at
	// least. Malformed packets are dropped and counted.
	ReadGSO(arena []byte, headroom int, pkts []GSOPacket) (int, error)
	// WriteGSO writes bufs[i][offset:] with gso[i], as Write does: the
	// virtio-net header goes into the headroom. Ordinary packets may be
	// coalesced.
	WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error)
}

// MaxGSOPacket is the largest packet ReadGSO hands out.
const MaxGSOPacket = maxIPPacket + 40

func (g GSO) hdr() virtioHdr {
	h := virtioHdr{
		hdrLen:     g.HdrLen,
		gsoSize:    g.Size,
		csumStart:  g.CsumStart,
		csumOffset: g.CsumOffset,
	}
	if g.NeedsCsum {
		h.flags = vnetFlagNeedsCsum
	}
	switch g.Type {
	case GSOTCPv4:
		h.gsoType = vnetGSOTCPv4
	case GSOTCPv6:
		h.gsoType = vnetGSOTCPv6
	case GSOUDPL4:
		h.gsoType = vnetGSOUDPL4
	}
	return h
}

// gsoOf is the offload state of a super-packet the splitter has
// validated (h its header): always NeedsCsum, the headers' own length.
func gsoOf(h *virtioHdr, s *splitter) GSO {
	g := GSO{
		Type: GSOTCPv4, NeedsCsum: true,
		HdrLen: uint16(s.hdrLen), Size: uint16(s.gsoSize),
		CsumStart: h.csumStart, CsumOffset: h.csumOffset,
	}
	switch {
	case s.udp:
		g.Type = GSOUDPL4
	case s.v6:
		g.Type = GSOTCPv6
	}
	return g
}

// Splitter cuts a super-packet into ordinary, fully checksummed IP
// packets, and finishes the checksum of a packet with a partial one: the
// software fallback for a path that cannot take the packet as it is (a
// device without offloads, the gVisor stack). The zero value is ready.
type Splitter struct {
	s splitter
}

// Load takes pkt with its offload state; Next then hands out its packets.
func (sp *Splitter) Load(pkt []byte, g GSO) error {
	h := g.hdr()
	return sp.s.loadParts(&h, pkt)
}

// Pending reports whether Next has packets left.
func (sp *Splitter) Pending() bool { return sp.s.pending() }

// Next writes the next packet into dst and returns its length; a packet
// larger than dst is skipped with an error.
func (sp *Splitter) Next(dst []byte) (int, error) { return sp.s.next(dst) }

// FinishChecksum completes the partial checksum of an ordinary packet in
// place (the NeedsCsum of a GSONone packet): afterwards it is an ordinary
// IP packet. It returns false, changing nothing, when the header does not
// fit the packet.
func FinishChecksum(pkt []byte, g GSO) bool {
	start, off := int(g.CsumStart), int(g.CsumOffset)
	if g.Type != GSONone || !g.NeedsCsum || start+off+2 > len(pkt) {
		return false
	}
	csum.Finish(pkt, start, off)
	return true
}

// InPlace reports whether a router may rewrite p, a packet with offload
// state g, as it is: either g is not pending, or the checksum it leaves
// partial is that of a TCP or UDP header right after a plain IP header
// (an IPv4 header of any length, not a fragment; an IPv6 header without
// extension headers), where the router's own parse finds the ports and
// the checksum. Otherwise the packet is to be split (or finished) first.
func (g GSO) InPlace(p []byte) bool {
	if !g.Pending() {
		return true
	}
	if !g.NeedsCsum || len(p) < 20 {
		return false
	}
	var l4 int
	var proto uint8
	switch p[0] >> 4 {
	case 4:
		l4, proto = int(p[0]&0xf)*4, p[9]
		if binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return false // a fragment
		}
	case 6:
		if len(p) < 40 {
			return false
		}
		l4, proto = 40, p[6]
	default:
		return false
	}
	if int(g.CsumStart) != l4 {
		return false
	}
	switch proto {
	case protoTCP:
		return g.CsumOffset == 16 && len(p) >= l4+20 &&
			(g.Type == GSONone || g.Type == GSOTCPv4 && p[0]>>4 == 4 || g.Type == GSOTCPv6 && p[0]>>4 == 6)
	case protoUDP:
		return g.CsumOffset == 6 && len(p) >= l4+8 && (g.Type == GSONone || g.Type == GSOUDPL4)
	}
	return false
}
