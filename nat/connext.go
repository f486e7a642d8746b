package nat

import (
	"net/netip"
	"sync/atomic"
)

// connExt is what only some connections need, kept out of line so that a
// plain IPv4 masqueraded connection is a 96-byte Conn and nothing else
// (issue 11: a million flows in 200 MB). A Conn has one when it is IPv6,
// full NAT, or a persistence template; a feature that needs more state per
// connection adds its fields here, not to Conn (see
// _notes/memory-layout.md and TestFlowMemory, which measures both).
//
// x is set by ext before the connection is published (inserted in the
// table or handed to a packet) and never replaced, so readers need no
// lock; fields that change later are atomics or under their own lock.
type connExt struct {
	// addr6 are an IPv6 connection's client, virtual and real server
	// addresses (flag6; aClient etc.).
	addr6 [3][16]byte

	// fnat is a full-NAT connection's local tuple (flagFullNAT).
	fnat *fnatExt

	// nControl counts the connections a template controls (the
	// kernel's n_control; flagTemplate).
	nControl atomic.Int32

	// sp is a SYN-proxied connection's handshake and offsets
	// (flagSynProxy; synproxy.go).
	sp *synState
}

// fnatExt is the local tuple of a full-NAT connection: the address and
// port the real server sees as the client, and the address's counters.
type fnatExt struct {
	laddr netip.Addr
	lport uint16
	ls    *laddrStat
	// pp is the PROXY protocol state (flagProxy; proxyproto.go).
	pp *ppExt
}

// ext returns c's out-of-line state, allocating it for a connection not
// yet published.
func (c *Conn) ext() *connExt {
	if c.x == nil {
		c.x = new(connExt)
	}
	return c.x
}

// local is the address and port the real server sees as the client: the
// local tuple for full NAT, the client's own for masquerading.
func (c *Conn) local() (netip.Addr, uint16) {
	if c.hasFlag(flagFullNAT) {
		return c.x.fnat.laddr, c.x.fnat.lport
	}
	return c.CAddr(), c.CPort
}

// local16 is local with the address in the 16-byte form keys hold.
func (c *Conn) local16() ([16]byte, uint16) {
	if c.hasFlag(flagFullNAT) {
		return c.x.fnat.laddr.As16(), c.x.fnat.lport
	}
	return c.addr16(aClient), c.CPort
}
