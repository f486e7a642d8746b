package nat

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/tunvs/tunvs/rules"
)

// Full NAT is DPVS's FULLNAT (src/ipvs/ip_vs_proto_tcp.c tcp_fnat_in_handler,
// ip_vs_laddr.c): on the way in, the client's address and port become one of
// the service's local addresses (LADDR) and a port of the director's, and
// the destination the real server's; on the way out the reverse. The real
// server sees the director as its client and answers it, whatever its own
// routes. One connection entry holds the four tuples: client -> VIP (the in
// key), real server -> LADDR:lport (the out key), and the two rewrites.

// The local ports full NAT allocates: DPVS's sa_pool default range
// (1025..65535, sa_pool.c).
const (
	DefaultLocalPortMin = 1025
	DefaultLocalPortMax = 65535
)

// maxPortAttempts bounds the ports tried per local address for a new
// connection, as the kernel's NAT bounds its search
// (nf_nat_l4proto_unique_tuple, net/netfilter/nf_nat_core.c: at most 128
// attempts from a random offset): a nearly full pool refuses a new
// connection a little early rather than scan 64k ports on every SYN.
const maxPortAttempts = 128

// FullNAT reports whether c is a full-NAT connection.
func (c *Conn) FullNAT() bool { return c.hasFlag(flagFullNAT) }

// Local is a full-NAT connection's local address and port; the zero
// AddrPort for masquerading.
func (c *Conn) Local() netip.AddrPort {
	if !c.FullNAT() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(c.local())
}

// Method is the dest's forwarding method for new connections.
func (d *Dest) Method() rules.Method {
	if d.fullNAT.Load() {
		return rules.FullNAT
	}
	if d.route.Load() {
		return rules.Route
	}
	if d.tun.Load()&tunOn != 0 {
		return rules.Tunnel
	}
	return rules.Masquerade
}

// laddrPool is a service's local addresses, swapped whole when one is
// added or removed; next is the round-robin position (DPVS's
// laddr_curr).
type laddrPool struct {
	addrs []*laddrStat
	next  atomic.Uint32
}

// laddrStat is a local address and its counters, as DPVS's
// ip_vs_laddr_entry has them for --get-laddr: ports found taken while
// allocating (port_conflict) and connections using it (conn_counts).
type laddrStat struct {
	addr      netip.Addr
	conflicts atomic.Uint64
	conns     atomic.Int64
}

// setLocalAddrs makes a's pool; an address kept keeps its counters.
// s.mu or the table's writer lock is held.
func (s *Service) setLocalAddrs(a []netip.Addr) {
	if len(a) == 0 {
		s.laddrs.Store(nil)
		return
	}
	old := map[netip.Addr]*laddrStat{}
	if p := s.laddrs.Load(); p != nil {
		for _, l := range p.addrs {
			old[l.addr] = l
		}
	}
	p := &laddrPool{addrs: make([]*laddrStat, len(a))}
	for i, addr := range a {
		if p.addrs[i] = old[addr]; p.addrs[i] == nil {
			p.addrs[i] = &laddrStat{addr: addr}
		}
	}
	s.laddrs.Store(p)
}

// LocalAddrStat is a local address of a service and its counters.
type LocalAddrStat struct {
	Addr netip.Addr
	// Conflicts counts the ports found taken while allocating one.
	Conflicts uint64
	// Conns is the connections using the address now.
	Conns int64
}

// LocalAddrs is the service's local addresses in the order they were
// added, with their counters (--get-laddr).
func (s *Service) LocalAddrs() []LocalAddrStat {
	p := s.laddrs.Load()
	if p == nil {
		return nil
	}
	r := make([]LocalAddrStat, len(p.addrs))
	for i, l := range p.addrs {
		r[i] = LocalAddrStat{Addr: l.addr, Conflicts: l.conflicts.Load(), Conns: l.conns.Load()}
	}
	return r
}

// unbindLocal releases a full-NAT connection's hold on its local address
// (its port is free once the connection is out of the table).
func (c *Conn) unbindLocal() {
	if c.hasFlag(flagFullNAT) {
		if f := c.x.fnat; f.ls != nil {
			f.ls.conns.Add(-1)
		}
	}
}

// localPorts is the table's local port range.
func (t *Table) localPorts() (lo, n uint32) {
	lo, hi := uint32(t.cfg.LocalPortMin), uint32(t.cfg.LocalPortMax)
	return lo, hi - lo + 1
}

// insertFullNAT picks the local tuple of f and inserts it: the service's
// local addresses in turn (DPVS's laddr_get round robin), on each up to
// maxPortAttempts ports from a random offset, until one whose reply key
// (real server, LADDR:lport) no connection holds. A port is thereby
// unique per local address and real server, and is free again when the
// connection leaves the table. outTaken means no local tuple was free
// (or the service has no local address).
func (t *Table) insertFullNAT(c *Conn, svc *Service) insertResult {
	f := c.x.fnat
	pool := svc.laddrs.Load()
	if pool == nil || len(pool.addrs) == 0 {
		return outTaken
	}
	lo, n := t.localPorts()
	tries := min(n, maxPortAttempts)
	for range pool.addrs {
		l := pool.addrs[(pool.next.Add(1)-1)%uint32(len(pool.addrs))]
		f.laddr, f.ls = l.addr, l
		// Counted before the insert: the connection may be removed
		// (and uncounted) as soon as it is in the table.
		l.conns.Add(1)
		off := rand.Uint32()
		for i := range tries {
			f.lport = uint16(lo + (off+i)%n)
			r := t.insertKeys(c)
			if r != outTaken {
				if r != inserted {
					l.conns.Add(-1)
					f.ls = nil
				}
				return r
			}
			l.conflicts.Add(1)
		}
		l.conns.Add(-1)
	}
	f.ls = nil
	return outTaken
}
