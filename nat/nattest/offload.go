package nattest

import "encoding/binary"

// Helpers for packets as a TUN device with offloads (a virtio-net header)
// hands them out: a transport checksum left partial (CHECKSUM_PARTIAL),
// and GSO super-packets.

// L4 returns the offset of the transport header of b, an IPv4 packet (of
// any header length) or an IPv6 packet without extension headers, its
// protocol and the offset of its checksum field within it (16 for TCP, 6
// for UDP, 0 for anything else).
func L4(b []byte) (start int, proto uint8, csumOff int) {
	if b[0]>>4 == 6 {
		start, proto = 40, b[6]
	} else {
		start, proto = int(b[0]&0xf)*4, b[9]
	}
	switch proto {
	case 6:
		csumOff = 16
	case 17:
		csumOff = 6
	}
	return start, proto, csumOff
}

// Partial turns b, a TCP or UDP packet (see L4), into what a device with
// checksum offload leaves: the checksum field holds the pseudo-header sum
// over the whole transport length, folded and not complemented. It
// returns the csum_start and csum_offset of its virtio-net header.
func Partial(b []byte) (start, off int) {
	start, proto, off := L4(b)
	var ps uint32
	if b[0]>>4 == 6 {
		ps = PseudoSum(b[8:24], b[24:40], proto, len(b)-start)
	} else {
		ps = PseudoSum(b[12:16], b[16:20], proto, len(b)-start)
	}
	binary.BigEndian.PutUint16(b[start+off:], fold(ps))
	return start, off
}

// Finish completes a partial checksum the way a device does: the
// complement of the sum of b[start:], the field included, stored at
// start+off (a zero result is stored as 0xffff).
func Finish(b []byte, start, off int) {
	c := ^fold(sum(b[start:], 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[start+off:], c)
}

// L4ChecksumOK reports whether the TCP or UDP checksum of b (see L4) is
// right, computed in full over the whole packet.
func L4ChecksumOK(b []byte) bool {
	start, proto, _ := L4(b)
	var ps uint32
	if b[0]>>4 == 6 {
		ps = PseudoSum(b[8:24], b[24:40], proto, len(b)-start)
	} else {
		ps = PseudoSum(b[12:16], b[16:20], proto, len(b)-start)
	}
	return fold(sum(b[start:], ps)) == 0xffff
}

// IPv4HeaderOK reports whether the IPv4 header checksum of b is right.
func IPv4HeaderOK(b []byte) bool {
	return fold(sum(b[:int(b[0]&0xf)*4], 0)) == 0xffff
}
