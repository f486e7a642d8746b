package netstack

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tunvs/tunvs/internal/csum"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// Tunnel mode (-i): the client's packet, unchanged but for its TTL, goes
// inside a new IP packet from the director to the real server, as
// ip_vs_tunnel_xmit and ip_vs_tunnel_xmit_v6 (net/netfilter/ipvs/
// ip_vs_xmit.c) build it:
//
//   - outer source: the director's address on the route to the real
//     server (__ip_vs_get_out_rt's saddr); destination: the real server;
//   - TTL (hop limit): the inner packet's after decrement_ttl; TOS
//     (traffic class): the inner one's, ECN as INET_ECN_encapsulate
//     (a CE mark becomes ECT(0) outside);
//   - IPv4: DF copied from the inner packet (pmtu_disc is 1), the
//     identification 0 with DF set and a counter without
//     (ip_select_ident); a packet without DF that does not fit the
//     route's MTU is fragmented outside (ignore_df, ip_fragment). IPv6:
//     flow label 0 (the inner one never needs fragmenting: the table
//     sends "packet too big" first);
//   - ipip: protocol 4 (41 for IPv6 in IPv6); gue: UDP to the real
//     server's --tun-port from a port hashed from the flow in 32768-60999
//     (udp_flow_src_port), then a 4-byte GUE header (version 0, no
//     options, proto_ctype 4 or 41) (ipvs_gue_encap), the UDP checksum
//     set with --tun-csum or --tun-remcsum and 0 otherwise
//     (udp_set_csum); gre: a 4-byte GRE header with the inner
//     EtherType, 8 bytes with the C bit and the checksum for --tun-csum
//     (ipvs_gre_encap).
//
// --tun-remcsum adds the remote-checksum option only to a packet whose
// checksum is left to the device (CHECKSUM_PARTIAL); tunvs finishes
// every inner checksum before encapsulating (below), so, as the kernel
// for such a packet, it sends none and sets the UDP checksum.
//
// Offloads: a virtio-net header can describe a TCP or UDP super-packet,
// not one inside IPIP, GUE or GRE (VIRTIO_NET_HDR_GSO_* has no tunnel
// types a TUN or TAP device takes), so a super-packet is cut into
// segments first, each encapsulated and sent on its own, and a partial
// checksum is finished: what the kernel's validate_xmit_skb does for a
// device without tunnel offloads.

// tunTable holds the tunnel real servers' routes, published
// copy-on-write for the packet path; a tunnel connection's Egress[DirIn]
// holds an index + 1 into it.
type tunTable struct {
	mu    sync.Mutex
	index map[netip.Addr]uint32
	list  atomic.Pointer[[]*tunEP]
	// ipID is the identification of outer IPv4 packets without DF.
	ipID atomic.Uint32
}

// tunEP is the route to one tunnel real server: its hop and the
// director's address on it (the outer source).
type tunEP struct {
	hop     uint32
	src     netip.Addr
	dstAddr netip.Addr
}

// maxTunEPs bounds the table like the hops' (maxHops).
const maxTunEPs = 1 << 16

func (t *tunTable) at(i uint32) *tunEP { return (*t.list.Load())[i-1] }

// get returns the index + 1 of dst's entry, made from hop and src if new,
// or noBypass when the table is full. An entry whose route changed (a
// route change resolves the tunnel connections again: egress.go) is
// replaced in a new copy of the list, at the same index.
func (t *tunTable) get(dst netip.Addr, hop uint32, src netip.Addr) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var old []*tunEP
	if l := t.list.Load(); l != nil {
		old = *l
	}
	if i, ok := t.index[dst]; ok {
		if ep := old[i-1]; ep.hop != hop || ep.src != src {
			list := slices.Clone(old)
			list[i-1] = &tunEP{hop: hop, src: src, dstAddr: dst}
			t.list.Store(&list)
		}
		return i
	}
	if len(old) >= maxTunEPs {
		return noBypass
	}
	if t.index == nil {
		t.index = make(map[netip.Addr]uint32)
	}
	list := append(old[:len(old):len(old)], &tunEP{hop: hop, src: src, dstAddr: dst})
	t.list.Store(&list)
	i := uint32(len(list))
	t.index[dst] = i
	return i
}

// resolveTunnel finds the route to a tunnel real server: any link, TUN
// or TAP, directly or through a gateway (IP_VS_RT_MODE_NON_LOCAL), not
// one of the director's own addresses.
func (h *Host) resolveTunnel(dst netip.Addr) uint32 {
	eg, src := h.routeHop(dst)
	if eg == noBypass {
		return noBypass
	}
	return h.tuns.get(dst, eg, fromTCPIP(src))
}

// tunnelTx is what one packet's encapsulation needs.
type tunnelTx struct {
	ep    *tunEP
	out   *NIC
	q     *txQueue
	mac   uint64 // the next hop's on a TAP, 0 on a TUN
	enc   rules.Encap
	sport uint16 // GUE's UDP source port
	ids   *atomic.Uint32
	// pmtu is the path MTU routers reported (nat's tunicmp.go), or 0:
	// outer fragments are cut to it, as ip_fragment to the route's
	// learnt MTU.
	pmtu int
}

// tunnel sends the packet of a tunnel connection from its client (in
// whole, after bufOffset bytes of headroom and the NIC's link header)
// encapsulated to the real server. It returns false if it could not: no
// route to the real server, its next hop's MAC not yet known (the stack
// is resolving it), a frame on a TAP not addressed to the NIC.
func (f *fastPath) tunnel(in *NIC, res nat.Result, p *nat.Packet, whole []byte, g tun.GSO, now int64) bool {
	h := in.h
	c := res.Conn
	if in.kind == tun.KindTAP && string(whole[bufOffset:bufOffset+6]) != string(in.mac) {
		return false
	}
	ti, tag := h.cachedEgress(c, nat.DirIn)
	if ti == 0 {
		ti = h.resolveTunnel(c.DAddr())
		storeEgress(&c.Egress[nat.DirIn], ti, tag)
	}
	if ti == noBypass {
		return false
	}
	ep := h.tuns.at(ti)
	hp := h.hops.at(ep.hop)
	t := tunnelTx{ep: ep, out: hp.nic, enc: c.Encap(), ids: &h.tuns.ipID, pmtu: c.PathMTU(now)}
	t.q = t.out.txq[f.txQueue(in, t.out)]
	if t.out.kind == tun.KindTAP {
		if t.mac = hp.mac.Load(); t.mac == 0 {
			return false
		}
		if hp.stale.Load() && !hp.used.Load() {
			hp.used.Store(true)
		}
	}
	if t.enc.Type == rules.TunGUE {
		t.sport = flowPort(c)
	}
	// decrement_ttl, in __ip_vs_get_out_rt: the table checked it is
	// above 1.
	if !p.DecTTL() {
		return false
	}
	l2 := in.l2()
	if !g.Pending() {
		return f.encap(h, &t, whole, l2)
	}
	// A super-packet (or a partial checksum): in pieces, each sent at
	// once, for they share the segmenter's buffer.
	f.flush(h)
	ok := true
	f.in.split(h, whole, g, l2, func(seg []byte) {
		if !f.encap(h, &t, seg, l2) {
			ok = false
			return
		}
		f.flush(h)
	})
	return ok
}

// encap writes the outer headers in front of the IP packet in buf (after
// bufOffset bytes of headroom and l2 bytes of link header), and the
// Ethernet header in front of those on a TAP, and queues the frame.
func (f *fastPath) encap(h *Host, t *tunnelTx, buf []byte, l2 int) bool {
	pkt := buf[bufOffset+l2:]
	if len(pkt) < 20 {
		return false
	}
	v6 := pkt[0]>>4 == 6
	var tos, ttl uint8
	df := false
	next := uint8(4) // IPPROTO_IPIP
	if v6 {
		if len(pkt) < 40 {
			return false
		}
		tos, ttl, next = pkt[0]<<4|pkt[1]>>4, pkt[7], 41 // IPPROTO_IPV6
	} else {
		tos, ttl, df = pkt[1], pkt[8], pkt[6]&0x40 != 0
	}
	src := t.ep.src
	outer6 := src.Is6()
	hl := nat.EncapLen(t.enc, outer6)
	start := bufOffset + l2 - hl
	total := hl + len(pkt)
	o := buf[start : start+total]
	iphl := 20
	if outer6 {
		iphl = 40
	}
	proto := next
	l4 := o[iphl:]
	switch t.enc.Type {
	case rules.TunGUE:
		proto = 17
		put16(l4[0:], t.sport)
		put16(l4[2:], t.enc.Port)
		put16(l4[4:], uint16(total-iphl))
		l4[6], l4[7] = 0, 0
		l4[8], l4[9], l4[10], l4[11] = 0, next, 0, 0 // version 0, hlen 0, proto_ctype, flags 0
	case rules.TunGRE:
		proto = 47
		var flags uint16
		if t.enc.Flags&rules.TunCsum != 0 {
			flags = 0x8000 // GRE_CSUM
			l4[4], l4[5], l4[6], l4[7] = 0, 0, 0, 0
		}
		put16(l4[0:], flags)
		put16(l4[2:], etherTypeOf(v6))
	}
	// The outer IP header.
	ds := ecnEncapsulate(tos)
	dst := t.dst()
	if outer6 {
		o[0], o[1], o[2], o[3] = 0x60|ds>>4, ds<<4, 0, 0
		put16(o[4:], uint16(total-40))
		o[6], o[7] = proto, ttl
		s16, d16 := src.As16(), dst.As16()
		copy(o[8:24], s16[:])
		copy(o[24:40], d16[:])
	} else {
		o[0], o[1] = 0x45, ds
		put16(o[2:], uint16(total))
		var id uint16
		var frag uint16
		if df {
			frag = 0x4000
		} else {
			id = uint16(t.ids.Add(1))
		}
		put16(o[4:], id)
		put16(o[6:], frag)
		o[8], o[9] = ttl, proto
		s4, d4 := src.As4(), dst.As4()
		copy(o[12:16], s4[:])
		copy(o[16:20], d4[:])
		csum.SetIPv4Header(o[:20])
	}
	switch {
	case t.enc.Type == rules.TunGUE && t.enc.Flags != 0:
		// udp_set_csum / udp6_set_csum; a sum of 0 is sent as 0xFFFF.
		c := ^csum.Fold(csum.Sum(l4, csum.PseudoIP(o, outer6, 17, total-iphl)))
		if c == 0 {
			c = 0xffff
		}
		put16(l4[6:], c)
	case t.enc.Type == rules.TunGRE && t.enc.Flags&rules.TunCsum != 0:
		put16(l4[4:], ^csum.Fold(csum.Sum(l4, 0)))
	}
	mtu := t.out.MTU()
	if t.pmtu > 0 && t.pmtu < mtu {
		mtu = t.pmtu
	}
	if total > mtu {
		if df || outer6 {
			// The table sends "too big" for these first; an MTU
			// changed since the connection was made lands here.
			return false
		}
		return f.fragment(h, t, o, mtu)
	}
	f.queue(h, t, buf, start)
	return true
}

// dst is the outer destination: the real server.
func (t *tunnelTx) dst() netip.Addr {
	return t.ep.dstAddr
}

// queue puts the Ethernet header in front of the packet at buf[start:]
// on a TAP and queues the frame for t's device.
func (f *fastPath) queue(h *Host, t *tunnelTx, buf []byte, start int) {
	off := start
	if t.mac != 0 {
		off -= ethHdrLen
		eth := buf[off:start]
		putMAC(eth[0:6], t.mac)
		copy(eth[6:12], t.out.mac)
		binary.BigEndian.PutUint16(eth[12:], etherTypeOf(t.ep.src.Is6()))
	}
	f.pend = append(f.pend, pending{out: t.q, nic: t.out, buf: buf, off: off})
	h.Counters.TunnelSent.Add(1)
}

// fragment sends the outer IPv4 packet o, larger than mtu and without
// DF, in fragments as ip_fragment does: the payload in pieces of a
// multiple of 8 bytes, each behind a copy of the header with its offset,
// MF on all but the last. Each goes out at once: they share a buffer.
func (f *fastPath) fragment(h *Host, t *tunnelTx, o []byte, mtu int) bool {
	step := (mtu - 20) &^ 7
	if step <= 0 {
		return false
	}
	if f.frag == nil {
		f.frag = make([]byte, bufOffset+maxPacket)
	}
	payload := o[20:]
	for off := 0; off < len(payload); off += step {
		n := min(step, len(payload)-off)
		ip := f.frag[bufOffset : bufOffset+20+n]
		copy(ip, o[:20])
		copy(ip[20:], payload[off:off+n])
		put16(ip[2:], uint16(20+n))
		fo := uint16(off / 8)
		if off+n < len(payload) {
			fo |= 0x2000 // MF
		}
		put16(ip[6:], fo)
		csum.SetIPv4Header(ip[:20])
		f.flush(h)
		f.queue(h, t, f.frag[:bufOffset+20+n], bufOffset)
		f.flush(h)
	}
	return true
}

// ecnEncapsulate is INET_ECN_encapsulate(tos, tos): the outer TOS is the
// inner one, but a CE mark is not copied outside (ECT(0) instead).
func ecnEncapsulate(tos uint8) uint8 {
	if tos&3 == 3 {
		return tos&^3 | 2
	}
	return tos
}

// flowPort is udp_flow_src_port's choice of a GUE source port: a hash of
// the flow scaled into the default local port range, 32768-60999, so
// that a flow keeps its port and flows spread over a receiver's queues.
// (The kernel hashes the skb with a boot-time secret; tunvs hashes the
// connection's client, VIP and ports with FNV-1a.)
func flowPort(c *nat.Conn) uint16 {
	hsh := uint32(2166136261)
	mix := func(b byte) { hsh = (hsh ^ uint32(b)) * 16777619 }
	ca, va := c.CAddr().As16(), c.VAddr().As16()
	for i := range ca {
		mix(ca[i])
		mix(va[i])
	}
	mix(byte(c.CPort >> 8))
	mix(byte(c.CPort))
	mix(byte(c.VPort >> 8))
	mix(byte(c.VPort))
	mix(c.Proto)
	hsh ^= hsh << 16
	const lo, hi = 32768, 60999
	return uint16(uint64(hsh)*(hi-lo)>>32 + lo)
}

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
