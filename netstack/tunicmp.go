package netstack

import (
	"net/netip"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

// tunnelError handles p, an ICMP error the NAT left alone, if it is a
// router's error about a packet the director tunnelled (-i) to a real
// server (nat.Table.TunnelError, ip_vs_in_icmp's tunnel case): the error
// must be IPv4 and addressed to the director (RTCF_LOCAL), and the NAT
// decides; the client gets the error about its own packet by the route
// to it, as icmp_send sends it: rate-limited as the host's other errors
// are, "fragmentation needed" never (icmpv4_xrlim_allow). It returns
// false if p is not such an error: the stack gets it.
func (f *fastPath) tunnelError(in *NIC, p *nat.Packet, now int64) bool {
	h := in.h
	if p.V6 || !p.ICMPError {
		return false
	}
	switch p.Inner.Proto {
	case 4, 17, 47: // IPIP, UDP (GUE), GRE
	default:
		return false
	}
	if !h.isLocal(p.Dst()) {
		return false
	}
	var orig nat.Packet
	e, ok := h.nat.TunnelError(p, &orig, now)
	if !ok {
		return false
	}
	if !e.Relay {
		h.Counters.TunnelICMPDrops.Add(1)
		return true
	}
	client := orig.Src()
	if !(e.Type == 3 && e.Code == 4) && !h.icmpAllowed(client) {
		h.Counters.TunnelICMPDrops.Add(1)
		return true
	}
	if !h.sendToward(client, &e, &orig) {
		h.Counters.TunnelICMPDrops.Add(1)
	}
	return true
}

// sendToward builds e's error about orig in the NIC's ICMP buffer of the
// route to the client and writes it there, to the next hop's Ethernet
// address on a TAP. It reports false if it could not: no route, the next
// hop's address not yet known, no error allowed about orig.
func (h *Host) sendToward(client netip.Addr, e *nat.TunnelICMP, orig *nat.Packet) bool {
	eg, _ := h.routeHop(client)
	if eg == noBypass {
		return false
	}
	hp := h.hops.at(eg)
	out := hp.nic
	var mac uint64
	if out.kind == tun.KindTAP {
		if mac = hp.mac.Load(); mac == 0 {
			return false
		}
	}
	b := out.icmpBuffer()
	defer out.icmpMu.Unlock()
	off := bufOffset + ethHdrLen
	size := e.Build(b[off:], orig)
	if size == 0 {
		return false
	}
	end := off + size
	if mac != 0 {
		eth := b[bufOffset:off]
		putMAC(eth[0:6], mac)
		copy(eth[6:12], out.curMAC())
		put16(eth[12:], 0x0800)
		off = bufOffset
	}
	// Counted before the write, which a reader may see at once.
	h.Counters.TunnelICMPRelayed.Add(1)
	out.writeICMP(b, off, end)
	return true
}
