package netstack

import (
	"sync/atomic"

	"github.com/tunvs/tunvs/nat"
)

// A connection direction's Egress slot (nat.Conn.Egress) holds what the
// bypass resolved for it, and the route generation it was resolved in:
//
//	bits 0-16:  the hop's index + 1 (a tunnel connection's DirIn: its
//	            tunnel endpoint's), or egNone for noBypass; maxHops and
//	            maxTunEPs, 1<<16, fit
//	bits 17-31: the low 15 bits of the route generation (routeCache.gen)
//
// 0 is unresolved. A slot of another generation is resolved again, so an
// established connection follows a route change from its next packet, as
// IPVS's transmitters do: __ip_vs_get_out_rt checks the route it keeps in
// each real server on every packet (__ip_vs_dst_check against the
// generation, rt_genid, and dst->obsolete, in
// net/netfilter/ipvs/ip_vs_xmit.c) and looks it up again when it is stale;
// the replies, which the kernel forwards, are routed per packet anyway.
// The check is one more atomic load per packet (of the generation) and a
// compare. The tag is 15 bits because the entry has no room for more (see
// nat.Conn's layout): a slot last resolved exactly a multiple of 32768
// route changes ago looks current, and keeps the egress it had, as every
// connection did before this check.
const (
	egBits   = 17
	egMask   = 1<<egBits - 1
	egNone   = egMask
	egTagged = ^uint32(egMask)
)

// egressTag is the current route generation as a slot keeps it. Read it
// before resolving: a change during the resolution then leaves the slot
// stale, to be resolved again by the next packet, never current with an
// old answer.
func (h *Host) egressTag() uint32 { return uint32(h.routes.gen.Load()) << egBits }

// cachedEgress returns what dir's Egress slot of c holds for the current
// route generation (0: resolve it, then storeEgress with tag). A slot
// resolved in an older generation first has its MTU follow the route
// (rerouted).
func (h *Host) cachedEgress(c *nat.Conn, dir nat.Dir) (eg, tag uint32) {
	slot := &c.Egress[dir]
	tag = h.egressTag()
	v := slot.Load()
	if eg = loadEgress(v, tag); eg == 0 && v != 0 {
		h.rerouted(c, dir)
	}
	return eg, tag
}

// loadEgress returns what a slot holding v holds for generation tag (noBypass
// included), or 0 if it holds nothing of that generation.
func loadEgress(v, tag uint32) uint32 {
	if v == 0 || v&egTagged != tag {
		return 0
	}
	if v &= egMask; v == egNone {
		return noBypass
	}
	return v
}

// storeEgress keeps eg (an index + 1, or noBypass) in slot, resolved in
// generation tag.
func storeEgress(slot *atomic.Uint32, eg, tag uint32) {
	slot.Store(tag | eg&egMask)
}

// heldEgress is what slot holds, of whatever generation, or 0 if nothing
// (or noBypass): for the trace, which names the egress a packet took.
func heldEgress(slot *atomic.Uint32) uint32 {
	if v := slot.Load() & egMask; v != egNone {
		return v
	}
	return 0
}

// rerouted is called for a connection direction resolved before whose
// routes changed since: the MTU the NAT checks its packets against
// follows the route, as the kernel checks each packet against the MTU of
// the route it takes (nat.Conn.SetEgressMTU). The NAT has checked the
// packet in hand already, against the old MTU, where the kernel would
// check it against the new one (__ip_vs_get_out_rt looks the route up
// again before its MTU check); the new MTU holds from the next packet.
func (h *Host) rerouted(c *nat.Conn, dir nat.Dir) {
	dst := c.DAddr()
	if dir == nat.DirOut {
		dst = c.CAddr()
	}
	c.SetEgressMTU(dir, h.EgressMTU(dst))
}
