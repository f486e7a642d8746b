package nat

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// key is a packed flow key: comparable, no pointers. Tailscale measured
// netip.AddrPort pairs as keys at about twice the cost of packed arrays.
// IPv4 addresses are stored in their 4-in-6 form.
type key struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
}

func makeKey(proto uint8, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) key {
	return key{src: src.As16(), dst: dst.As16(), sport: sport, dport: dport, proto: proto}
}

// hash mixes the key with the table's seed (a seed per table keeps
// adversarial flows from piling into one shard).
func (k *key) hash(seed uint64) uint64 {
	h := seed ^ uint64(k.sport)<<24 ^ uint64(k.dport)<<8 ^ uint64(k.proto)
	h = mix(h ^ binary.LittleEndian.Uint64(k.src[8:]))
	h = mix(h ^ binary.LittleEndian.Uint64(k.dst[8:]))
	h = mix(h ^ binary.LittleEndian.Uint64(k.src[:8]) ^ binary.LittleEndian.Uint64(k.dst[:8])<<1)
	return h
}

// mix is the splitmix64 finalizer.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

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
	Proto        uint8
	CAddr        netip.Addr // client
	VAddr        netip.Addr // virtual service
	DAddr        netip.Addr // real server
	CPort, VPort uint16
	DPort        uint16

	svc  *Service
	dest *Dest

	mu       sync.Mutex // guards state, inactive, dead
	state    State
	inactive bool // not counted in dest.active (IP_VS_CONN_F_INACTIVE)
	dead     bool

	// template marks a persistence template (IP_VS_CONN_F_TEMPLATE);
	// control is the template that controls this connection (set before
	// the connection is published, never changed); nControl counts the
	// connections a template controls (n_control).
	template bool
	control  *Conn
	nControl atomic.Int32
	// invalid: the template was invalidated (ip_vs_check_template) and
	// lists with ports 0xffff. assured: IP_VS_CTPL_S_ASSURED, set when a
	// controlled TCP connection became ESTABLISHED or a controlled UDP
	// connection saw a reply.
	invalid atomic.Bool
	assured atomic.Bool

	timeout atomic.Int64 // of the current state, ns
	expires atomic.Int64 // unix ns

	// mtu is the egress MTU in each direction, looked up once when the
	// connection is made (0: unknown, no check).
	mtu [2]int32

	// Egress is free for the router to cache its forwarding decision per
	// direction (netstack stores a NIC id + 1); 0 means unknown.
	Egress [2]atomic.Uint32
}

// inKey is the connection's client -> VIP key (for a template: client
// network, port 0, VIP, port); outKey its real server -> client key. Both
// are computed from the connection's fields, which never change, rather
// than stored: 76 bytes less per connection.
func (c *Conn) inKey() key { return makeKey(c.Proto, c.CAddr, c.CPort, c.VAddr, c.VPort) }

func (c *Conn) outKey() key { return makeKey(c.Proto, c.DAddr, c.DPort, c.CAddr, c.CPort) }

// Service returns the connection's virtual service.
func (c *Conn) Service() *Service { return c.svc }

// Dest returns the connection's real server.
func (c *Conn) Dest() *Dest { return c.dest }

// State is the current state. A template's is StateNone or StateAssured,
// as the kernel names template states.
func (c *Conn) State() State {
	if c.template {
		if c.assured.Load() {
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
}

// Info snapshots the connection. A template lists as the kernel's: the
// client (network) address with port 0, the virtual port 0 for templates of
// port-zero and FTP services, and both ports 65535 once invalidated.
func (c *Conn) Info() ConnInfo {
	vport, dport := c.VPort, c.DPort
	if c.template && c.invalid.Load() {
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
	}
}

// shardCount is a power of two; 64 shards keep lock contention low on
// machines far larger than the 2-core ones tunvs is measured on.
const shardCount = 64

type shard struct {
	mu sync.RWMutex
	m  map[key]*Conn
	_  [32]byte // keep neighbouring shards' locks off one cache line
}

// connMap is one sharded hash map from key to connection.
type connMap struct {
	seed   uint64
	shards [shardCount]shard
}

func (m *connMap) init(seed uint64) {
	m.seed = seed
	for i := range m.shards {
		m.shards[i].m = make(map[key]*Conn)
	}
}

func (m *connMap) shardOf(k *key) *shard {
	return &m.shards[k.hash(m.seed)&(shardCount-1)]
}

func (m *connMap) get(k *key) *Conn {
	s := m.shardOf(k)
	s.mu.RLock()
	c := s.m[*k]
	s.mu.RUnlock()
	return c
}
