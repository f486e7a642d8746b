package nat

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/tunvs/tunvs/internal/csum"
	"github.com/tunvs/tunvs/rules"
)

// ICMP errors about tunnelled packets (-i): a router between the director
// and a real server that cannot forward an encapsulated packet tells the
// director, whose address is the outer source; the client, which sent the
// inner packet, must hear of it. ip_vs_in_icmp (net/netfilter/ipvs/
// ip_vs_core.c, "Special case for errors for IPIP/UDP/GRE tunnel packets
// originated from LVS") does it for IPv4 only; ip_vs_in_icmp_v6 has no
// such case, and neither has tunvs:
//
//   - only "destination unreachable" and "time exceeded" (the kernel's
//     third, source quench, is not an error tunvs parses: RFC 6633
//     deprecates it); the error must be addressed to the director
//     (RTCF_LOCAL: the caller checks);
//   - the quoted outer packet: not a later fragment; IPIP to a real
//     server tunnelling with ipip; or UDP to a GUE real server's port
//     with a GUE header of version 0, not a control message, carrying
//     IPIP (ipvs_udp_decap); or GRE with no flag but the checksum,
//     carrying IPv4 (ipvs_gre_decap). Anything else is left alone;
//   - the inner packet it quotes finds the connection as the client's
//     packet did (for a tunnel the error is about a request, not a
//     reply); none, and the error is left alone;
//   - the ICMP checksum must be right, or the error is dropped;
//   - "fragmentation needed" lowers the real server's path MTU
//     (ipv4_update_pmtu, below); if the client's packet did not forbid
//     fragmenting, nothing more is sent (the director fragments the outer
//     packet from then on). Otherwise the MTU the client hears is the
//     resulting path MTU less the outer headers (unless that would leave
//     68 bytes or less: then the path MTU as it is);
//   - the client gets icmp_send's error about its own packet (from the
//     quote) with the same type, code and second word, from the VIP (the
//     inner packet's destination, local to the director).
//
// The kernel checks that some tunnel dest of that address (ip_vs_find_tunnel)
// has that encapsulation; tunvs checks the connection's own dest, the one
// the packet was sent to.

// TunnelICMP is what TunnelError decided about an ICMP error.
type TunnelICMP struct {
	// Conn is the tunnel connection whose packet the error is about.
	Conn *Conn
	// Relay: send the client Type and Code with Info in the second
	// word about the packet the caller's orig describes (Build).
	// Otherwise the error is dropped: Reason says why.
	Relay      bool
	Type, Code uint8
	Info       uint32
	Reason     TunnelICMPDrop
}

// TunnelICMPDrop is why an ICMP error about a tunnelled packet was not
// relayed.
type TunnelICMPDrop uint8

const (
	TunnelICMPRelayed     TunnelICMPDrop = iota
	TunnelICMPBadChecksum                // the ICMP checksum is wrong
	TunnelICMPNoDF                       // "fragmentation needed" about a packet without DF: the path MTU is lowered, the client not told
)

// IPv4 path MTU bounds of the kernel's route cache (net/ipv4/route.c):
// ip_rt_min_pmtu (512 + 20 + 20) and ip_rt_mtu_expires (10 minutes).
const (
	minPMTU     = 552
	pmtuExpires = 10 * 60 * 1e9
)

// pathMTU is a tunnel real server's learnt path MTU: the MTU in the low
// 16 bits, the Unix second it expires in the high 48 (0: none).
type pathMTU struct{ v atomic.Uint64 }

// get returns the learnt path MTU at now, or 0.
func (m *pathMTU) get(now int64) int {
	v := m.v.Load()
	if v == 0 || int64(v>>16) <= now/1e9 {
		return 0
	}
	return int(v & 0xffff)
}

// lower is __ip_rt_update_pmtu: a path MTU is learnt only below the one
// in force (route, the MTU of the route to the real server, or 0 if
// unknown); below ip_rt_min_pmtu it is ip_rt_min_pmtu (or the MTU in
// force, if lower). It lasts ip_rt_mtu_expires. It returns the path MTU
// now in force (0 if none is known).
func (m *pathMTU) lower(mtu, route int, now int64) int {
	old := route
	if l := m.get(now); l > 0 && (old == 0 || l < old) {
		old = l
	}
	if old > 0 && old < mtu {
		return old
	}
	if mtu < minPMTU {
		mtu = minPMTU
		if old > 0 {
			mtu = min(old, minPMTU)
		}
	}
	m.v.Store(uint64(now+pmtuExpires)/1e9<<16 | uint64(mtu&0xffff))
	return mtu
}

// PathMTU is the MTU of the path to the tunnel real server at now (Unix
// nanoseconds): what an ICMP "fragmentation needed" taught the director,
// or 0 if nothing (or it expired). The host fragments outer packets to it.
func (c *Conn) PathMTU(now int64) int { return c.dest.pmtu.get(now) }

// tunnelMTU is the MTU a tunnel connection's packets to the real server
// meet: the route's (mtu, 0 if unknown) or the learnt path MTU, the lower.
func (c *Conn) tunnelMTU(mtu int, now int64) int {
	if l := c.dest.pmtu.get(now); l > 0 && (mtu == 0 || l < mtu) {
		return l
	}
	return mtu
}

// TunnelError looks at p, an IPv4 ICMP error addressed to the director,
// for an error about a packet the director tunnelled (see above). It
// returns false if p is not one: the caller leaves it to the stack. Else
// orig describes the client's packet as quoted (its IP header and what
// follows, up to the end of the error), for Build.
func (t *Table) TunnelError(p *Packet, orig *Packet, now int64) (TunnelICMP, bool) {
	if !p.ICMPError || p.V6 || (p.ICMPType != 3 && p.ICMPType != 11) {
		return TunnelICMP{}, false
	}
	b := p.B
	q := b[p.Inner.IP:] // parseInner checked the IPv4 header is whole
	ohl := int(q[0]&0x0f) * 4
	if binary.BigEndian.Uint16(q[6:8])&0x1fff != 0 {
		return TunnelICMP{}, false
	}
	raddr := netip.AddrFrom4([4]byte(q[16:20]))
	typ := rules.TunIPIP
	var port uint16
	ulen := 0
	l4 := q[ohl:]
	switch q[9] {
	case 4: // IPPROTO_IPIP
	case ipProtoUDP: // ipvs_udp_decap
		if len(l4) < udpHeader+4 {
			return TunnelICMP{}, false
		}
		typ, port = rules.TunGUE, binary.BigEndian.Uint16(l4[2:4])
		g := l4[udpHeader:]
		// Version (2 bits) and control (1) 0, proto_ctype IPIP.
		if g[0]&0xe0 != 0 || g[1] != 4 {
			return TunnelICMP{}, false
		}
		ulen = udpHeader + 4 + int(g[0]&0x1f)*4
	case 47: // ipvs_gre_decap
		if len(l4) < 4 {
			return TunnelICMP{}, false
		}
		typ = rules.TunGRE
		flags := binary.BigEndian.Uint16(l4[0:2])
		if flags&^0x8000 != 0 || binary.BigEndian.Uint16(l4[2:4]) != 0x0800 {
			return TunnelICMP{}, false
		}
		ulen = 4
		if flags != 0 {
			ulen = 8
		}
	default:
		return TunnelICMP{}, false
	}
	// The client's packet: a whole IPv4 header, the first fragment,
	// and its ports.
	off := p.Inner.IP + ohl + ulen
	if len(b)-off < ipv4MinHeader {
		return TunnelICMP{}, false
	}
	in := b[off:]
	ihl := int(in[0]&0x0f) * 4
	if in[0]>>4 != 4 || ihl < ipv4MinHeader || len(in) < ihl+4 ||
		binary.BigEndian.Uint16(in[6:8])&0x1fff != 0 || (in[9] != ipProtoTCP && in[9] != ipProtoUDP) {
		return TunnelICMP{}, false
	}
	src, dst := netip.AddrFrom4([4]byte(in[12:16])), netip.AddrFrom4([4]byte(in[16:20]))
	k := makeKey(in[9], src, binary.BigEndian.Uint16(in[ihl:]), dst, binary.BigEndian.Uint16(in[ihl+2:]))
	c := t.in.get(&k)
	if c == nil || !c.hasFlag(flagTunnel) || c.DAddr() != raddr {
		return TunnelICMP{}, false
	}
	if e := c.Encap(); e.Type != typ || (typ == rules.TunGUE && e.Port != port) {
		return TunnelICMP{}, false
	}
	if csum.Fold(csum.Sum(b[p.L4:], 0)) != 0xffff {
		t.drops[DropBadChecksum].Add(1)
		return TunnelICMP{Conn: c, Reason: TunnelICMPBadChecksum}, true
	}
	*orig = Packet{B: in, Proto: in[9], L4: ihl, l4csum: true}
	e := TunnelICMP{Conn: c, Relay: true, Type: p.ICMPType, Code: p.ICMPCode,
		Info: binary.BigEndian.Uint32(b[p.L4+4:])}
	if p.ICMPType == 3 && p.ICMPCode == 4 {
		mtu := c.dest.pmtu.lower(int(binary.BigEndian.Uint16(b[p.L4+6:])), c.egressMTU(DirIn), now)
		if in[6]&0x40 == 0 {
			// The client does not use PMTUD: the outer packets are
			// fragmented from now on.
			return TunnelICMP{Conn: c, Reason: TunnelICMPNoDF}, true
		}
		if hl := ohl + ulen; mtu > 68+hl {
			mtu -= hl
		}
		e.Info = uint32(mtu)
	}
	// ip_vs_out_stats: the error counts as the connection's outgoing
	// traffic.
	c.dest.countOut(uint64(len(in)))
	return e, true
}

// Build writes the error to relay into dst, about orig (TunnelError's),
// from the VIP to the client; it returns the length, or 0 when none may be
// sent (see BuildTooBig).
func (e *TunnelICMP) Build(dst []byte, orig *Packet) int {
	if !e.Relay || e.Conn == nil {
		return 0
	}
	return buildICMPError(dst, orig, e.Conn.VAddr(), e.Type, e.Code, e.Info)
}
