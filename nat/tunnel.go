package nat

import (
	"github.com/tunvs/tunvs/rules"
)

// Tunnel mode (-i, IP_VS_CONN_F_TUNNEL), as ip_vs_tunnel_xmit and
// ip_vs_tunnel_xmit_v6 (net/netfilter/ipvs/ip_vs_xmit.c) do it: the
// client's packet is not rewritten; the host puts it, TTL decremented,
// inside a new IP header from its own address towards the real server to
// the real server's address (with a UDP and GUE header, or a GRE header,
// between them for --tun-type gue or gre). The table's part is the
// connection (tracked by the client's packets alone, as direct routing),
// and the MTU check against the route's MTU less those headers.

// tunOn marks a tunnelling dest in Dest.tun; the low 24 bits hold its
// encapsulation: the type in bits 20-23, the flags in 16-19, the GUE port
// in 0-15.
const tunOn = 1 << 31

func packTun(e rules.Encap) uint32 {
	return tunOn | uint32(e.Type&0xf)<<20 | uint32(e.Flags&0xf)<<16 | uint32(e.Port)
}

func unpackTun(v uint32) rules.Encap {
	return rules.Encap{Type: rules.TunType(v >> 20 & 0xf), Flags: rules.TunFlags(v >> 16 & 0xf), Port: uint16(v)}
}

// setMethod sets the dest's forwarding method (and encapsulation) for its
// new connections.
func (d *Dest) setMethod(s rules.Server) {
	d.fullNAT.Store(s.Method == rules.FullNAT)
	d.route.Store(s.Method == rules.Route)
	var tun uint32
	if s.Method == rules.Tunnel {
		tun = packTun(s.Tun)
	}
	d.tun.Store(tun)
}

// methodFlags are the flags a new connection to the dest starts with for
// its method: direct routing and tunnelling are never rewritten and are
// tracked by the client's packets alone (IP_VS_CONN_F_NOOUTPUT, which
// __ip_vs_update_dest sets for every method but masquerading).
func (d *Dest) methodFlags() uint32 {
	switch {
	case d.route.Load():
		return flagRoute | flagNoOutput
	case d.tun.Load()&tunOn != 0:
		return flagTunnel | flagNoOutput
	}
	return 0
}

// Encap is a tunnelling dest's encapsulation, and whether it tunnels.
func (d *Dest) Encap() (rules.Encap, bool) {
	v := d.tun.Load()
	if v&tunOn == 0 {
		return rules.Encap{}, false
	}
	return unpackTun(v), true
}

// Tunnelled reports whether the connection is tunnel mode (-i): its
// packets from the client leave unchanged inside a packet to the real
// server (see Encap).
func (c *Conn) Tunnelled() bool { return c.hasFlag(flagTunnel) }

// Encap is the encapsulation of a tunnel connection's packets: its real
// server's now (an -e changes it for the connections the server has, as
// the kernel's transmitter reads cp->dest's at every packet).
func (c *Conn) Encap() rules.Encap {
	return unpackTun(c.dest.tun.Load())
}

// EncapLen is the length of the headers a tunnel connection's packets
// get in front: the outer IP header, and UDP and GUE (4 bytes: tunvs
// never sends the remote-checksum option, see netstack) or GRE (4, 8
// with a checksum), as __ip_vs_get_out_rt subtracts them from the MTU.
func (c *Conn) EncapLen() int {
	return EncapLen(c.Encap(), c.DAddr().Is6())
}

// Header lengths of the encapsulations.
const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	gueHeaderLen  = 4 // struct guehdr without options
	greHeaderLen  = 4 // flags and protocol (gre_calc_hlen without TUNNEL_CSUM)
	greCsumLen    = 4 // checksum and reserved1 (TUNNEL_CSUM)
)

// EncapLen is the length of the headers e puts in front of a packet
// sent to an IPv6 (v6) or IPv4 real server.
func EncapLen(e rules.Encap, v6 bool) int {
	n := ipv4HeaderLen
	if v6 {
		n = ipv6HeaderLen
	}
	switch e.Type {
	case rules.TunGUE:
		n += udpHeaderLen + gueHeaderLen
	case rules.TunGRE:
		n += greHeaderLen
		if e.Flags&rules.TunCsum != 0 {
			n += greCsumLen
		}
	}
	return n
}

// MaxEncapLen is the longest EncapLen: the headroom a packet needs.
const MaxEncapLen = ipv6HeaderLen + udpHeaderLen + gueHeaderLen
