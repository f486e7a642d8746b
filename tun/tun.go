// Package tun is where packets enter and leave tunvs: TUN (layer 3) and TAP
// (layer 2) devices behind one batch interface, plus in-memory devices for
// tests and the zero-privilege lab.
//
// It is not a router and knows nothing of addresses: netstack owns those.
package tun

import (
	"errors"
)

// Kind tells whether a device carries bare IP packets or Ethernet frames.
type Kind uint8

const (
	// KindTUN devices carry IP packets (IPv4 or IPv6, told apart by the
	// version nibble). No packet-information header.
	KindTUN Kind = iota + 1
	// KindTAP devices carry Ethernet II frames without FCS.
	KindTAP
)

func (k Kind) String() string {
	switch k {
	case KindTUN:
		return "tun"
	case KindTAP:
		return "tap"
	}
	return "unknown"
}

// ErrClosed is returned by Read and Write once the device is closed.
var ErrClosed = errors.New("tun: device closed")

// ErrTooManySegments is returned by Read when bufs is too short to receive
// every packet of an offloaded super-packet (devices with BatchSize > 1).
var ErrTooManySegments = errors.New("tun: too many segments for bufs")

// Device is a TUN or TAP device that moves packets in batches.
//
// The batch contract follows wireguard-go's tun.Device so that a Linux device
// with offloads (virtio-net header, GSO/GRO, multiple queues) fits behind the
// same interface without changes above it:
//
//   - Read fills bufs[i][offset:] with one packet each, sets sizes[i] to its
//     length (not counting offset) and returns how many packets it wrote,
//     n <= len(bufs). It blocks until at least one packet is available. The
//     offset bytes at the front of each buffer are left for the caller (a
//     device with a virtio-net header uses them). len(bufs) and len(sizes)
//     must be at least 1; passing BatchSize() buffers lets the device return
//     as many packets as one system call or one GRO super-packet yields.
//   - Write sends bufs[i][offset:] as one packet each and returns how many it
//     sent. Bytes before offset are scratch space the device may write into
//     (for its own header), so callers reserve at least Headroom() bytes
//     there. Write may modify bufs.
//   - Read and Write may be called concurrently with each other, but not
//     Read with Read nor Write with Write.
//   - After Close, Read and Write return ErrClosed (possibly wrapped).
type Device interface {
	// Read reads up to len(bufs) packets; see the type's comment.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes len(bufs) packets; see the type's comment.
	Write(bufs [][]byte, offset int) (n int, err error)
	// BatchSize is the largest number of packets Read may return at once
	// and the number of buffers callers should pass.
	BatchSize() int
	// Headroom is the number of bytes Write needs in front of each packet.
	Headroom() int
	// MTU is the device's MTU: the largest IP packet (TUN) or Ethernet
	// payload (TAP) it carries.
	MTU() int
	// Kind tells whether packets are IP packets or Ethernet frames.
	Kind() Kind
	// Name is the interface name (e.g. "tunvs0"), or a label for in-memory
	// devices.
	Name() string
	// Close closes the device and unblocks pending Reads.
	Close() error
}
