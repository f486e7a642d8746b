package tun

// Software halves of the Linux TUN offloads (offload_linux.go): splitting
// the GSO super-packets the kernel hands out into ordinary, fully
// checksummed IP packets (split.go), and coalescing runs of TCP segments
// into super-packets for the kernel (coalesce.go). This file holds what
// both share: the virtio-net header. The code is portable so that it is
// tested and benchmarked everywhere; only the device itself is Linux-only.

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
