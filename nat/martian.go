package nat

import "net/netip"

// The kernel drops these packets in its input path, before IPVS (at
// NF_INET_LOCAL_IN) ever sees them; tunvs is its own input path, so it
// drops them itself, for packets to a service:
//
//   - IPv4 sources no host may use, ip_route_input_slow (net/ipv4/route.c):
//     multicast or limited broadcast, 0.0.0.0/8 and 127.0.0.0/8 (without
//     route_localnet) go to martian_source. Class E (240.0.0.0/4) is
//     reserved (RFC 1112 section 4) and never assigned: tunvs drops it
//     too, where Linux leaves it to the FIB.
//   - IPv6 sources, ip6_rcv_core (net/ipv6/ip6_input.c): multicast (RFC
//     4291 2.7), loopback on a device other than lo (RFC 4291 2.5.3),
//     IPv4-mapped (draft-itojun-v6ops-v4mapped-harmful), and the
//     unspecified address, which only duplicate address detection sends
//     and no connection can answer.
//   - A source that is one of the director's own addresses (a VIP, a
//     DIP): fib_validate_source (net/ipv4/fib_frontend.c) finds the source
//     local (RTN_LOCAL, not RTN_UNICAST) and refuses it. A real server's
//     address is not local to the director, so the kernel accepts it, and
//     so does tunvs: a real server that opens a connection to a VIP is
//     scheduled like any client (in masquerade the reply then goes from
//     real server to real server, past the director, and the connection
//     fails as it does with IPVS; in full NAT it works).
//   - IPv6 Routing headers: ipv6_rthdr_rcv (net/ipv6/exthdrs.c) drops
//     type 0 (RFC 5095), type 2 and 3 unless the host is their endpoint,
//     and type 4 (SRv6) while seg6_enabled is 0, the default. A director is
//     none of those endpoints; a routing header would also steer the
//     translated packet somewhere other than the real server.

// martianV4 reports IPv4 sources in 0/8, 127/8, 224/4 and 240/4 (which
// holds 255.255.255.255).
func martianV4(b0 byte) bool { return b0 == 0 || b0 == 127 || b0 >= 224 }

// martianSource reports a source address no packet to a service may have.
func martianSource(a netip.Addr) bool {
	if a.Is4() {
		return martianV4(a.As4()[0])
	}
	return a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.Is4In6()
}

// martian is the drop reason of a packet to a service from src, or
// DropNone. It runs on the packets that find no connection only.
func (t *Table) martian(p *Packet, src netip.Addr) DropReason {
	if martianSource(src) {
		return DropMartian
	}
	if _, own := t.svcs.Load().own[src.As16()]; own {
		return DropOwnSource
	}
	if p.rh {
		return DropRoutingHeader
	}
	return DropNone
}

// SetLocalAddrs tells the table the director's own addresses (its DIPs;
// VIPs are known from the services), which no packet to a service may come
// from.
func (t *Table) SetLocalAddrs(addrs []netip.Addr) {
	a := append([]netip.Addr(nil), addrs...)
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	t.local.Store(&a)
	w := t.writer()
	w.publish()
}

// ownAddrs is idx's VIPs, the director's addresses and the full-NAT local
// addresses: the sources fib_validate_source finds local.
func (t *Table) ownAddrs(idx *svcIndex) map[[16]byte]struct{} {
	own := make(map[[16]byte]struct{}, len(idx.vips))
	for a := range idx.vips {
		own[a] = struct{}{}
	}
	if l := t.local.Load(); l != nil {
		for _, a := range *l {
			own[a.Unmap().As16()] = struct{}{}
		}
	}
	for _, s := range idx.order {
		if p := s.laddrs.Load(); p != nil {
			for _, a := range p.addrs {
				own[a.addr.As16()] = struct{}{}
			}
		}
	}
	return own
}
