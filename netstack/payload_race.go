//go:build race

package netstack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/buffer"
)

// stackPayload is the buffer a frame goes to the stack in. In race builds
// a packet the stack is to forward goes in a chunk larger than any gVisor
// pools (buffer.MaxChunkSize), so the Go heap, not gVisor's chunk pools,
// owns it once released; others go in a pooled one, as in release builds
// (payload_norace.go), because two 64 KiB copies a packet (the chunk, and
// the stack's copy on write of it) are slow under the race detector.
//
// Why: gVisor's IP forwarding (ipv4 and ipv6 forwardPacketWithRoute, gVisor
// v0.0.0-20260905035102) takes a slice of the packet's network header, then
// calls DeepCopyForForwarding, whose header Slice() pulls up a chunk it has
// just shared with its own clone of the payload: Buffer.PullUp gives the
// packet a private copy of the chunk (copy on write) and the clone's
// Release frees the original to the pool. The header slice taken before is
// then read (h.TTL()) after the free; another goroutine that gets the
// chunk from the pool meanwhile overwrites it. TestGVisorForwardingRereadsFreedHeader
// shows the mechanism and TestGVisorForwardingRace (TUNVS_GVISOR_RACE=1)
// the race report. An unpooled chunk is never reused while the stale slice
// references it, so the read is of the packet's own bytes and the race
// detector, which sees no pool hand-over, has nothing to report; tunvs's
// own code is still checked. Release builds keep the pooled buffer: the
// window there is a few instructions between the free and the read.
func (n *NIC) stackPayload(frame []byte) buffer.Buffer {
	dst := frameDst(frame[min(n.l2(), len(frame)):])
	if !n.h.cfg.Forwarding || !dst.IsValid() || n.h.isLocal(dst) {
		return buffer.MakeWithData(frame)
	}
	return forwardPayload(frame)
}

// forwardPayload is the buffer of a packet the stack is to forward: in race
// builds, an unpooled chunk (see stackPayload).
func forwardPayload(frame []byte) buffer.Buffer {
	v := buffer.NewView(buffer.MaxChunkSize + 1 + len(frame))
	if _, err := v.Write(frame); err != nil {
		panic(err) // cannot happen: the view has room for the frame
	}
	return buffer.MakeWithView(v)
}

// frameDst is the destination of the IP packet p, or the zero address.
func frameDst(p []byte) netip.Addr {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(p[16:20]))
	case len(p) >= 40 && p[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(p[24:40]))
	}
	return netip.Addr{}
}
