package tun

// Packets of one flow brought together before a write is coalesced, as
// the kernel's GRO merges a packet with the held packet of its own flow
// whatever came between them: dev_gro_receive looks in the per-flow
// buckets of napi->gro_hash (net/core/gro.c), so the interleaved
// segments of several flows still leave as one super-packet per flow.
// coalesceRun and coalesceRunUDP only join packets that are next to
// each other. The bypass groups what it writes (netstack's fastPath);
// WriteGSO itself keeps the order it is given, and its count of packets
// written means the first ones. On the article's one-armed TAP every flow of every real
// server leaves by the one device, in the order the senders' packets
// happened to arrive: four flows of small datagrams interleaved in
// bursts went out about eight to a write, where on a TUN per real
// server they went out twenty-six to a write.

import "encoding/binary"

// maxFlowGroups bounds the flows grouped in one batch; a batch with more
// is written in the order it came (a handful of flows is what gains).
const maxFlowGroups = 64

// FlowOrder groups the packets of a batch by flow (Group). Its zero value
// is ready; it keeps scratch space, grown to the largest batch, so that
// grouping allocates nothing after the first batches. One per goroutine.
type FlowOrder struct {
	grp   []int32
	gkey  []uint64
	start []int32
	bufs  [][]byte
	gso   []GSO
}

// Group returns the packets of bufs (frames with l2 bytes of link header,
// from offset on) and their offload states with the packets of each flow
// together: in the order each flow's first packet came, each flow's
// packets in the order they came. Packets that are not TCP or UDP (or
// are IPv4 fragments) are each a flow of their own, so their order among
// themselves is kept too; a super-packet belongs to its flow like any
// other packet, so no flow's segments are reordered. On a TAP the
// Ethernet header is part of the flow. When no flow is interleaved with
// another, or there are more than maxFlowGroups, bufs and gso are
// returned as they are; otherwise the result is in o's scratch space,
// valid until the next call, and bufs and gso are not changed.
func (o *FlowOrder) Group(bufs [][]byte, gso []GSO, offset, l2 int) ([][]byte, []GSO) {
	n := len(bufs)
	if n < 3 || len(gso) < n {
		return bufs, gso
	}
	if cap(o.grp) < n {
		o.grp = make([]int32, n)
	}
	grp := o.grp[:n]
	o.gkey = o.gkey[:0]
	interleaved := false
	prev := int32(-1)
	for i, b := range bufs {
		k := flowKey(b[offset:], l2)
		g := int32(-1)
		if k != 0 {
			for j, gk := range o.gkey {
				if gk == k {
					g = int32(j)
					break
				}
			}
		}
		if g < 0 {
			if len(o.gkey) == maxFlowGroups {
				return bufs, gso
			}
			o.gkey = append(o.gkey, k)
			g = int32(len(o.gkey) - 1)
		} else if g != prev {
			interleaved = true
		}
		grp[i], prev = g, g
	}
	if !interleaved {
		return bufs, gso
	}
	// A stable counting sort by group.
	ng := len(o.gkey)
	if cap(o.start) < ng+1 {
		o.start = make([]int32, maxFlowGroups+1)
	}
	start := o.start[:ng+1]
	clear(start)
	for _, g := range grp {
		start[g+1]++
	}
	for g := 1; g <= ng; g++ {
		start[g] += start[g-1]
	}
	if cap(o.bufs) < n {
		o.bufs, o.gso = make([][]byte, n), make([]GSO, n)
	}
	out, outGSO := o.bufs[:n], o.gso[:n]
	for i, g := range grp {
		out[start[g]], outGSO[start[g]] = bufs[i], gso[i]
		start[g]++
	}
	return out, outGSO
}

// flowKey is a hash of what identifies frame f's flow (after l2 bytes of
// link header, which are part of it): IP version, protocol, addresses and
// ports of a TCP or UDP packet that is not an IPv4 fragment; 0 for
// anything else, which is a flow of its own.
func flowKey(f []byte, l2 int) uint64 {
	if len(f) < l2+1 {
		return 0
	}
	p := f[l2:]
	var h uint64
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return 0
		}
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || len(p) < ihl+4 || p[9] != protoTCP && p[9] != protoUDP ||
			binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return 0
		}
		h = mixKey(uint64(p[9])<<8|4, binary.LittleEndian.Uint64(p[12:20]))
		h = mixKey(h, uint64(binary.LittleEndian.Uint32(p[ihl:])))
	case 6:
		if len(p) < 44 || p[6] != protoTCP && p[6] != protoUDP {
			return 0
		}
		h = mixKey(uint64(p[6])<<8|6, binary.LittleEndian.Uint64(p[8:16]))
		h = mixKey(h, binary.LittleEndian.Uint64(p[16:24]))
		h = mixKey(h, binary.LittleEndian.Uint64(p[24:32]))
		h = mixKey(h, binary.LittleEndian.Uint64(p[32:40]))
		h = mixKey(h, uint64(binary.LittleEndian.Uint32(p[40:])))
	default:
		return 0
	}
	if l2 >= 12 {
		h = mixKey(h, binary.LittleEndian.Uint64(f[0:8]))
		h = mixKey(h, uint64(binary.LittleEndian.Uint32(f[8:12])))
	}
	return h | 1
}

// mixKey folds v into the hash h (a multiply-xorshift step: collisions
// only make two flows share a group, which coalescing then tells apart).
func mixKey(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}
