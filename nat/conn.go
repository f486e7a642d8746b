package nat

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Dir is the direction of a packet relative to its connection.
type Dir uint8

const (
	// DirIn is client to real server (DNAT): the kernel's IP_VS_DIR_INPUT.
	DirIn Dir = iota
	// DirOut is real server to client (SNAT): IP_VS_DIR_OUTPUT.
	DirOut
)

func (d Dir) String() string {
	if d == DirIn {
		return "in"
	}
	return "out"
}

// Conn is one connection: both directions in one entry. The addresses and
// ports never change after creation; state and expiry do.
//
// Layout (see TestFlowMemory): a plain IPv4 masqueraded connection is this
// struct alone, 96 bytes, an allocator size class. Everything only some
// connections need (IPv6 addresses, full NAT's local tuple, a template's
// count) is out of line in x, allocated with the connection and never
// replaced once it is published, so the common flow does not pay for it.
type Conn struct {
	svc  *Service
	dest *Dest

	// control is the template that controls this connection (set before
	// the connection is published, never changed); see Template.
	control *Conn

	// x is the connection's out-of-line state (connext.go); nil for an
	// IPv4 connection that needs none.
	x *connExt

	timeout atomic.Int64 // of the current state, ns
	expires atomic.Int64 // unix ns

	// addr4 holds the client, virtual and real server addresses of an
	// IPv4 connection; an IPv6 one keeps them in x (flag6).
	addr4 [3][4]byte

	CPort, VPort uint16
	DPort        uint16
	Proto        uint8

	// mtu is the egress MTU in each direction, DirIn in the low 16
	// bits, DirOut in the high (0: unknown, no check); looked up when the
	// connection is made, and again by the router when its route
	// changes (SetEgressMTU). An IP packet's length is 16 bits, so is an
	// MTU worth checking. See connmtu.go.
	mtu atomic.Uint32

	// Egress is free for the router to cache its forwarding decision per
	// direction (netstack stores a hop's index + 1 and the route
	// generation it was found in: netstack/egress.go); 0 means unknown.
	Egress [2]atomic.Uint32

	// flags are bits that change without a lock: see flagInvalid etc.
	flags atomic.Uint32

	// st is the state word: the state, the state the sync master last
	// sent (the kernel's old_state; see sync.go) and the stInactive and
	// stDead bits, changed together by compare-and-swap where the kernel
	// holds the connection's lock.
	st atomic.Uint32

	// inPkts counts the packets from the client (the kernel's in_pkts),
	// for the sync master's sync_period and drop_entry; syncEnd is its
	// sync_endtime (sync.go), 0 and unused without a sync daemon.
	inPkts  atomic.Uint32
	syncEnd atomic.Uint32
}

// Bits of Conn.st above the state (bits 0-7) and the old state (8-15).
const (
	// stInactive: not counted in dest.active (IP_VS_CONN_F_INACTIVE).
	stInactive = 1 << (16 + iota)
	// stDead: out of the table, unbound from its dest.
	stDead
)

// state is the current state (for a template, StateNone).
func (c *Conn) state() State { return State(c.st.Load()) }

// oldState is the state the sync master last sent.
func (c *Conn) oldState() State { return State(c.st.Load() >> 8) }

// initState sets the state word of a connection not yet published.
func (c *Conn) initState(s State, inactive bool) {
	w := uint32(s)
	if inactive {
		w |= stInactive
	}
	c.st.Store(w)
}

// updateState changes the state word by f, atomically, and returns the
// words before and after. The service's half-open count follows the
// change that won (halfopen.go).
func (c *Conn) updateState(f func(old uint32) uint32) (old, nw uint32) {
	for {
		old = c.st.Load()
		nw = f(old)
		if nw == old {
			return old, nw
		}
		if c.st.CompareAndSwap(old, nw) {
			c.halfOpenMove(old, nw)
			return old, nw
		}
	}
}

// Bits of Conn.flags.
const (
	// flagInvalid: the template was invalidated (ip_vs_check_template)
	// and lists with ports 0xffff.
	flagInvalid = 1 << iota
	// flagAssured: IP_VS_CTPL_S_ASSURED, set when a controlled TCP
	// connection became ESTABLISHED or a controlled UDP connection saw a
	// reply.
	flagAssured
	// flagOnePacket: IP_VS_CONN_F_ONE_PACKET, a connection of an --ops
	// service, never in the table.
	flagOnePacket
	// flagSynced: IP_VS_CONN_F_SYNC, made by the sync backup.
	flagSynced
	// flagFullNAT: a full-NAT connection, its local tuple in x (set
	// before the connection is published, never cleared).
	flagFullNAT
	// flagRoute: a direct-routing connection (IP_VS_CONN_F_DROUTE),
	// never rewritten; set before it is published, never cleared.
	flagRoute
	// flagNoOutput: IP_VS_CONN_F_NOOUTPUT, set on a direct-routing
	// connection that has seen no packet from its real server: its TCP
	// states follow the client's packets alone (the INPUT-ONLY table).
	// The first packet the other way clears it, as set_tcp_state does.
	// A tunnel connection has it too (__ip_vs_update_dest sets it for
	// every method but masquerading).
	flagNoOutput
	// flagTemplate: a persistence template (IP_VS_CONN_F_TEMPLATE); set
	// before it is published, never cleared.
	flagTemplate
	// flag6: an IPv6 connection, its addresses in x; set before it is
	// published, never cleared.
	flag6
	// flagProxy: a full-NAT connection whose real server is sent the
	// PROXY protocol header, its state in x.fnat.pp (proxyproto.go);
	// set before it is published, never cleared.
	flagProxy
	// flagSynProxy: a connection the SYN proxy made, its state in x.sp
	// (synproxy.go); set before it is published, never cleared.
	flagSynProxy
	// flagTunnel: a tunnel connection (IP_VS_CONN_F_TUNNEL), never
	// rewritten: the host encapsulates its client's packets to the
	// real server (see tunnel.go); set before it is published.
	flagTunnel
)

// Routed reports whether the connection is direct routing (-g): its
// packets from the client leave unchanged, to the real server's Ethernet
// address.
func (c *Conn) Routed() bool { return c.hasFlag(flagRoute) }

func (c *Conn) hasFlag(f uint32) bool { return c.flags.Load()&f != 0 }

func (c *Conn) setFlag(f uint32) { c.flags.Or(f) }

// Address indexes of Conn.addr4 and connExt.addr6.
const (
	aClient = iota
	aVirtual
	aDest
)

// addr is the connection's client, virtual or real server address (aClient
// etc.).
func (c *Conn) addr(i int) netip.Addr {
	if c.hasFlag(flag6) {
		return netip.AddrFrom16(c.x.addr6[i])
	}
	return netip.AddrFrom4(c.addr4[i])
}

// addr16 is addr in the 16-byte form keys hold.
func (c *Conn) addr16(i int) [16]byte {
	if c.hasFlag(flag6) {
		return c.x.addr6[i]
	}
	a := c.addr4[i]
	return [16]byte{10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]}
}

// setAddrs stores the addresses of a connection not yet published: an
// IPv6 connection gets its x (a fresh one if it has none yet).
func (c *Conn) setAddrs(client, virtual, dest netip.Addr) {
	if !client.Is4() {
		c.ext()
		c.x.addr6 = [3][16]byte{client.As16(), virtual.As16(), dest.As16()}
		c.setFlag(flag6)
		return
	}
	c.addr4 = [3][4]byte{client.As4(), virtual.As4(), dest.As4()}
}

// CAddr is the client's address (for a template, its network).
func (c *Conn) CAddr() netip.Addr { return c.addr(aClient) }

// VAddr is the virtual service's address.
func (c *Conn) VAddr() netip.Addr { return c.addr(aVirtual) }

// DAddr is the real server's address.
func (c *Conn) DAddr() netip.Addr { return c.addr(aDest) }

// inKey is the connection's client -> VIP key (for a template: client
// network, port 0, VIP, port); outKey its real server -> client key. Both
// are computed from the connection's fields, which never change, rather
// than stored: 76 bytes less per connection.
func (c *Conn) inKey() key {
	return key{src: c.addr16(aClient), dst: c.addr16(aVirtual), sport: c.CPort, dport: c.VPort, proto: c.Proto}
}

func (c *Conn) outKey() key {
	la, lp := c.local16()
	return key{src: c.addr16(aDest), dst: la, sport: c.DPort, dport: lp, proto: c.Proto}
}

// Service returns the connection's virtual service.
func (c *Conn) Service() *Service { return c.svc }

// Dest returns the connection's real server.
func (c *Conn) Dest() *Dest { return c.dest }

// State is the current state. A template's is StateNone or StateAssured,
// as the kernel names template states.
func (c *Conn) State() State {
	if c.Template() {
		if c.hasFlag(flagAssured) {
			return StateAssured
		}
		return StateNone
	}
	return c.state()
}

// Template reports whether c is a persistence template.
func (c *Conn) Template() bool { return c.hasFlag(flagTemplate) }

// Controller is the persistence template controlling c, nil if none.
func (c *Conn) Controller() *Conn { return c.control }

// Controlled is how many connections the template c controls (n_control).
func (c *Conn) Controlled() int {
	if !c.Template() {
		return 0
	}
	return int(c.x.nControl.Load())
}

// Expires is when the connection times out unless another packet comes.
func (c *Conn) Expires() time.Time { return time.Unix(0, c.expires.Load()) }

// ConnInfo is a snapshot of a connection, for listings.
type ConnInfo struct {
	Proto   uint8
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Dest    netip.AddrPort
	State   State
	Expires time.Time
	// Template is a persistence template (IP_VS_CONN_F_TEMPLATE), listed
	// by -Lnc with client port 0.
	Template bool
	// Local is a full-NAT connection's local address and port, what the
	// real server sees as its client; invalid for masquerading.
	Local netip.AddrPort
}

// Info snapshots the connection. A template lists as the kernel's: the
// client (network) address with port 0, the virtual port 0 for templates of
// port-zero and FTP services, and both ports 65535 once invalidated.
func (c *Conn) Info() ConnInfo {
	vport, dport := c.VPort, c.DPort
	tpl := c.Template()
	if tpl && c.hasFlag(flagInvalid) {
		vport, dport = invalidPort, invalidPort
	}
	return ConnInfo{
		Proto:    c.Proto,
		Client:   netip.AddrPortFrom(c.CAddr(), c.CPort),
		Virtual:  netip.AddrPortFrom(c.VAddr(), vport),
		Dest:     netip.AddrPortFrom(c.DAddr(), dport),
		State:    c.State(),
		Expires:  c.Expires(),
		Template: tpl,
		Local:    c.Local(),
	}
}
