package netstack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// noBypass marks a connection direction whose egress cannot skip the stack.
const noBypass = math.MaxUint32

// fastPath collects the packets of one read batch that skip the stack and
// writes them per egress queue when the batch is done. It belongs to one
// reader goroutine, that of queue qi of its NIC.
type fastPath struct {
	qi int
	// self is the queue the reader reads (nil for a reader without
	// offloads): its writes back to it may be deferred (see writer).
	self tun.GSODevice
	pend []pending
	bufs [][]byte
	gso  []tun.GSO

	// Software segmentation (tun.Splitter) for super-packets bound for
	// the stack or cut up on arrival (in), and for those leaving by a
	// device without offloads (out, at flush): seg holds the pieces of
	// one packet, each with bufOffset headroom. Two, so that a flush
	// in the middle of cutting up an arrival has its own.
	in, out segmenter
	// proxyBuf holds a first data segment with its PROXY protocol
	// header (forwardProxy), made on first use.
	proxyBuf []byte
	// frag holds one outer fragment of a tunnelled packet (tunnel.go).
	frag []byte
	// writers are the reader's own writers of the queues it writes
	// to, by txQueue.id (see writer).
	writers []writerSlot
	// order puts each flow's packets of a write together, so that a
	// device with offloads gets them coalesced (tun.FlowOrder).
	order tun.FlowOrder
}

type segmenter struct {
	sp  tun.Splitter
	seg []byte
}

type pending struct {
	out *txQueue
	nic *NIC
	buf []byte
	off int // where the frame to write starts in buf
	gso tun.GSO
}

// try sends an already rewritten packet of an established connection
// straight to its egress device. The route is looked up once per
// connection and direction and cached in the connection as a hop (see
// hop), and again after the host's routes, addresses or NICs changed
// (egress.go). On a TAP egress the frame's Ethernet header is rewritten in
// place: from the egress NIC's MAC to the next hop's, as the stack's
// neighbour table has it, which is also what makes a one-armed director
// (in and out of the same TAP) work. It returns false where the stack
// must handle the packet: the next hop's MAC unknown (the stack resolves
// it), a TTL about to expire (needs an ICMP error), no route, a frame not
// addressed to the NIC, a super-packet from a TUN for a TAP without
// offloads (cut up, its pieces would have no room for their Ethernet
// header). From a TUN to a TAP the Ethernet header goes into the
// headroom in front of the packet; from a TAP to a TUN it is left behind.
func (f *fastPath) try(in *NIC, res nat.Result, p *nat.Packet, whole []byte, g tun.GSO) bool {
	h := in.h
	eg, tag := h.cachedEgress(res.Conn, res.Dir)
	if eg == 0 {
		// The first packet of this direction, or the first since a
		// route, address or NIC changed (egress.go).
		if res.Conn.Routed() {
			eg = h.resolveDirect(res.Conn.DAddr())
		} else {
			eg = h.resolveEgress(p)
		}
		storeEgress(&res.Conn.Egress[res.Dir], eg, tag)
	}
	if eg == noBypass {
		return false
	}
	hp := h.hops.at(eg)
	out := hp.nic
	q := out.txq[f.txQueue(in, out)]
	// A bridge floods a frame for an address it has not learned to
	// every port: only those sent to this NIC are routed.
	if in.kind == tun.KindTAP && !in.forMe(whole[bufOffset:bufOffset+6]) {
		return false
	}
	off := bufOffset
	var mac uint64
	switch {
	case out.kind == tun.KindTAP:
		if mac = hp.mac.Load(); mac == 0 {
			return false
		}
		if in.kind == tun.KindTUN {
			if g.Pending() && q.gso == nil {
				return false
			}
			off = bufOffset - ethHdrLen
		}
		if hp.stale.Load() && !hp.used.Load() {
			hp.used.Store(true)
		}
	case in.kind == tun.KindTAP:
		off = bufOffset + ethHdrLen
	}
	// Direct routing decrements the TTL too: ip_vs_dr_xmit's
	// __ip_vs_get_out_rt calls decrement_ttl for every packet it sends
	// to another host (net/netfilter/ipvs/ip_vs_xmit.c, Linux 6.1).
	if !p.DecTTL() {
		return false
	}
	if mac != 0 {
		eth := whole[off : off+ethHdrLen]
		putMAC(eth[0:6], mac)
		copy(eth[6:12], out.curMAC())
		if in.kind == tun.KindTUN {
			binary.BigEndian.PutUint16(eth[12:], etherTypeOf(p.V6))
		}
	}
	f.pend = append(f.pend, pending{out: q, nic: out, buf: whole, off: off, gso: g})
	h.Counters.FastPath.Add(1)
	return true
}

// txQueue is the index of the queue of out that f's reader, the reader of
// queue f.qi of in, writes to. Across devices it is the reader's own
// index. Back out of the device it came from (hairpin, as in the article's
// one-armed director) it is the next queue: the kernel steers a flow's
// packets to the queue that last wrote packets of that flow, by a hash of
// its addresses and ports that is the same both ways
// (tun_automq_select_queue and tun_flow_update in drivers/net/tun.c,
// __skb_get_hash_symmetric). The client's packets to the VIP, rewritten
// for the real server, go out of the next queue, so the real server's
// replies are steered to it; the replies, rewritten back, go out of this
// one, so the client's packets keep coming here. Each reader then carries
// one direction of a connection, and the receiving host's TCP, which runs
// inside each write(2), runs in both readers at once rather than one
// after the other in a single reader that carries both.
func (f *fastPath) txQueue(in, out *NIC) int {
	n := out.queues()
	if out == in && n > 1 {
		return (f.qi + 1) % n
	}
	return f.qi % n
}

// resolveEgress finds the hop (index+1) the packet's destination is
// routed by, or noBypass.
func (h *Host) resolveEgress(p *nat.Packet) uint32 {
	eg, _ := h.routeHop(p.Dst())
	return eg
}

// routeHop finds the hop (index+1) dst is routed by, or noBypass, and
// the route's source address.
func (h *Host) routeHop(dst netip.Addr) (uint32, tcpip.Address) {
	r := h.route(dst)
	if !r.ok || r.nic == 0 || fromTCPIP(r.local) == dst {
		return noBypass, tcpip.Address{}
	}
	if eg := r.eg.Load(); eg != 0 {
		return eg, r.local
	}
	out := h.nicByID(r.nic)
	if out == nil {
		return noBypass, tcpip.Address{}
	}
	eg := h.egressHop(out, r.next, r.local, protoOf(dst))
	if eg != noBypass {
		// noBypass (the hop table full) is asked again next time.
		r.eg.Store(eg)
	}
	return eg, r.local
}

// resolveDirect finds the hop of a direct-routing real server: a TAP
// NIC whose segment holds dst itself (a connected route, no gateway), as
// ip_vs_dr_xmit needs the real server on a link of the director's
// (__ip_vs_get_out_rt with IP_VS_RT_MODE_KNOWN_NH: the next hop is the
// real server). Anything else is noBypass and the packet is dropped.
func (h *Host) resolveDirect(dst netip.Addr) uint32 {
	out, local, err := h.directNIC(dst)
	if err != nil {
		return noBypass
	}
	return h.egressHop(out, toTCPIP(dst), local, protoOf(dst))
}

// Why a real server cannot be direct routing (directNIC).
var (
	errDirectNoRoute = errors.New("no route to it")
	errDirectLocal   = errors.New("it is an address of the director's")
	errDirectGateway = errors.New("it is reached through a gateway, not on a directly connected segment")
	errDirectTUN     = errors.New("it is reached by a TUN link, which has no Ethernet addresses")
)

// directNIC is the TAP NIC on whose segment dst is, and the director's
// address there; or why there is none.
func (h *Host) directNIC(dst netip.Addr) (*NIC, tcpip.Address, error) {
	r := h.route(dst)
	if !r.ok {
		return nil, tcpip.Address{}, errDirectNoRoute
	}
	out := h.nicByID(r.nic)
	switch {
	case out == nil || r.nic == 0:
		return nil, tcpip.Address{}, errDirectNoRoute
	case fromTCPIP(r.local) == dst:
		return nil, tcpip.Address{}, errDirectLocal
	case r.gateway:
		return nil, tcpip.Address{}, errDirectGateway
	case out.kind != tun.KindTAP:
		return nil, tcpip.Address{}, fmt.Errorf("%w (%s)", errDirectTUN, out.name)
	}
	return out, r.local, nil
}

// CheckDirect says whether dst can be a direct-routing (-g) real server:
// on the segment of one of the host's TAP links, as the table's
// nat.Config.DirectRoute asks before it takes one.
func (h *Host) CheckDirect(dst netip.Addr) error {
	if _, _, err := h.directNIC(dst); err != nil {
		return fmt.Errorf("%w (-g) to %v: %w; -g needs the real server on the segment of a TAP link", rules.ErrNoDirectRoute, dst, err)
	}
	return nil
}

// etherTypeOf is the Ethernet type of IPv4 or IPv6.
func etherTypeOf(v6 bool) uint16 {
	if v6 {
		return uint16(header.IPv6ProtocolNumber)
	}
	return uint16(header.IPv4ProtocolNumber)
}

// flush writes the collected packets, one Write per egress queue (and
// frame offset).
func (f *fastPath) flush(h *Host) {
	for len(f.pend) > 0 {
		out, off := f.pend[0].out, f.pend[0].off
		nic := f.pend[0].nic
		f.bufs, f.gso = f.bufs[:0], f.gso[:0]
		rest := f.pend[:0]
		for _, pd := range f.pend {
			if pd.out != out || pd.off != off {
				rest = append(rest, pd)
				continue
			}
			if pd.gso.Pending() && out.gso == nil {
				// A device without offloads: what is collected
				// goes first, then this packet in pieces (never
				// one whose frame starts in the headroom: try).
				f.write(h, nic, out, off)
				f.out.split(h, pd.buf[off-bufOffset:], pd.gso, nic.l2(), func(seg []byte) {
					f.bufs = append(f.bufs[:0], seg)
					f.write(h, nic, out, bufOffset)
				})
				continue
			}
			f.bufs = append(f.bufs, pd.buf)
			f.gso = append(f.gso, pd.gso)
		}
		f.write(h, nic, out, off)
		f.pend = rest
	}
	clear(f.bufs[:cap(f.bufs)])
	f.bufs = f.bufs[:0]
}

// write sends f.bufs, whose frames start at off, (with f.gso, on a
// device that takes it) out of q, a queue of nic, and empties them.
func (f *fastPath) write(h *Host, nic *NIC, q *txQueue, off int) {
	if len(f.bufs) == 0 {
		return
	}
	bufs, gso := f.bufs, f.gso
	w := f.writer(q)
	if w != nil || q.gso != nil {
		// Coalescing joins neighbours only: on a one-armed TAP every
		// flow leaves by the one device, interleaved as it came.
		bufs, gso = f.order.Group(bufs, gso, off, nic.l2())
	}
	if hk := h.hooks; hk != nil && hk.capture != nil {
		for _, b := range bufs {
			hk.capture.Frame(nic.name, nic.kind, true, b[off:])
		}
	}
	var err error
	if w != nil {
		_, err = w.WriteGSO(bufs, gso, off)
	} else {
		q.mu.Lock()
		if q.gso != nil {
			_, err = q.gso.WriteGSO(bufs, gso, off)
		} else {
			_, err = q.dev.Write(f.bufs, off)
		}
		q.mu.Unlock()
	}
	if err != nil {
		h.Counters.WriteErrors.Add(1)
	}
	f.bufs, f.gso = f.bufs[:0], f.gso[:0]
}

// split cuts the packet in whole (after bufOffset bytes of headroom and
// l2 bytes of link header, which every piece gets a copy of), a packet
// with pending offload state g, into ordinary packets and calls fn with
// each, in a buffer with bufOffset bytes of headroom that is reused for
// the next. A packet that is not a super-packet only has its checksum
// finished, in place, and fn gets whole. A packet or piece that cannot be
// made is counted as a link drop.
func (s *segmenter) split(h *Host, whole []byte, g tun.GSO, l2 int, fn func(seg []byte)) {
	pkt := whole[bufOffset+l2:]
	if g.Type == tun.GSONone {
		if !tun.FinishChecksum(pkt, g) {
			h.Counters.LinkDrops.Add(1)
			return
		}
		fn(whole)
		return
	}
	h.Counters.GSOSplit.Add(1)
	if err := s.sp.Load(pkt, g); err != nil {
		h.Counters.LinkDrops.Add(1)
		return
	}
	if s.seg == nil {
		s.seg = make([]byte, bufOffset+ethHdrLen+tun.MaxGSOPacket)
	}
	copy(s.seg[bufOffset:], whole[bufOffset:bufOffset+l2])
	for s.sp.Pending() {
		m, err := s.sp.Next(s.seg[bufOffset+l2:])
		if err != nil {
			h.Counters.LinkDrops.Add(1)
			continue
		}
		fn(s.seg[:bufOffset+l2+m])
	}
}
