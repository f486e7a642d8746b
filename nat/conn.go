package nat

import (
	"net/netip"
	"sync"
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
type Conn struct {
	// The fields are ordered to pack into 160 bytes, a size class of the
	// allocator (in declaration order by meaning they took 176).
	CAddr        netip.Addr // client
	VAddr        netip.Addr // virtual service
	DAddr        netip.Addr // real server
	CPort, VPort uint16
	DPort        uint16
	Proto        uint8

	state State // guarded by mu

	svc  *Service
	dest *Dest

	// control is the template that controls this connection (set before
	// the connection is published, never changed); see template below.
	control *Conn

	timeout atomic.Int64 // of the current state, ns
	expires atomic.Int64 // unix ns

	mu sync.Mutex // guards state, inactive, dead, oldState

	// mtu is the egress MTU in each direction, looked up once when the
	// connection is made (0: unknown, no check). An IP packet's length
	// is 16 bits, so is an MTU worth checking.
	mtu [2]uint16

	// Egress is free for the router to cache its forwarding decision per
	// direction (netstack stores a NIC id + 1); 0 means unknown.
	Egress [2]atomic.Uint32

	// template marks a persistence template (IP_VS_CONN_F_TEMPLATE);
	// nControl counts the connections a template controls (n_control).
	nControl atomic.Int32

	inactive bool // not counted in dest.active (IP_VS_CONN_F_INACTIVE)
	dead     bool
	template bool
	// oldState is the state the sync master last sent (the kernel's
	// old_state; see sync.go).
	oldState State

	// flags are bits that change without mu: see flagInvalid etc.
	flags atomic.Uint32

	// inPkts counts the packets from the client (the kernel's in_pkts),
	// for the sync master's sync_period; syncEnd is its sync_endtime
	// (sync.go). Both are 0 and unused without a sync daemon.
	inPkts  atomic.Uint32
	syncEnd atomic.Uint32
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
	// flagFullNAT: a full-NAT connection, allocated as a fnatConn (set
	// before the connection is published, never cleared).
	flagFullNAT
	// flagRoute: a direct-routing connection (IP_VS_CONN_F_DROUTE),
	// never rewritten; set before it is published, never cleared.
	flagRoute
	// flagNoOutput: IP_VS_CONN_F_NOOUTPUT, set on a direct-routing
	// connection that has seen no packet from its real server: its TCP
	// states follow the client's packets alone (the INPUT-ONLY table).
	// The first packet the other way clears it, as set_tcp_state does.
	flagNoOutput
)

// Routed reports whether the connection is direct routing (-g): its
// packets from the client leave unchanged, to the real server's Ethernet
// address.
func (c *Conn) Routed() bool { return c.hasFlag(flagRoute) }

func (c *Conn) hasFlag(f uint32) bool { return c.flags.Load()&f != 0 }

func (c *Conn) setFlag(f uint32) { c.flags.Or(f) }

// inKey is the connection's client -> VIP key (for a template: client
// network, port 0, VIP, port); outKey its real server -> client key. Both
// are computed from the connection's fields, which never change, rather
// than stored: 76 bytes less per connection.
func (c *Conn) inKey() key { return makeKey(c.Proto, c.CAddr, c.CPort, c.VAddr, c.VPort) }

func (c *Conn) outKey() key {
	la, lp := c.local()
	return makeKey(c.Proto, c.DAddr, c.DPort, la, lp)
}

// Service returns the connection's virtual service.
func (c *Conn) Service() *Service { return c.svc }

// Dest returns the connection's real server.
func (c *Conn) Dest() *Dest { return c.dest }

// State is the current state. A template's is StateNone or StateAssured,
// as the kernel names template states.
func (c *Conn) State() State {
	if c.template {
		if c.hasFlag(flagAssured) {
			return StateAssured
		}
		return StateNone
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Template reports whether c is a persistence template.
func (c *Conn) Template() bool { return c.template }

// Controller is the persistence template controlling c, nil if none.
func (c *Conn) Controller() *Conn { return c.control }

// Controlled is how many connections the template c controls (n_control).
func (c *Conn) Controlled() int { return int(c.nControl.Load()) }

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
	if c.template && c.hasFlag(flagInvalid) {
		vport, dport = invalidPort, invalidPort
	}
	return ConnInfo{
		Proto:    c.Proto,
		Client:   netip.AddrPortFrom(c.CAddr, c.CPort),
		Virtual:  netip.AddrPortFrom(c.VAddr, vport),
		Dest:     netip.AddrPortFrom(c.DAddr, dport),
		State:    c.State(),
		Expires:  c.Expires(),
		Template: c.template,
		Local:    c.Local(),
	}
}
