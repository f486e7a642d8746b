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

	mu sync.Mutex // guards state, inactive, dead

	// mtu is the egress MTU in each direction, looked up once when the
	// connection is made (0: unknown, no check).
	mtu [2]int32

	// Egress is free for the router to cache its forwarding decision per
	// direction (netstack stores a NIC id + 1); 0 means unknown.
	Egress [2]atomic.Uint32

	// template marks a persistence template (IP_VS_CONN_F_TEMPLATE);
	// nControl counts the connections a template controls (n_control).
	nControl atomic.Int32

	inactive bool // not counted in dest.active (IP_VS_CONN_F_INACTIVE)
	dead     bool
	template bool
	// invalid: the template was invalidated (ip_vs_check_template) and
	// lists with ports 0xffff. assured: IP_VS_CTPL_S_ASSURED, set when a
	// controlled TCP connection became ESTABLISHED or a controlled UDP
	// connection saw a reply.
	invalid atomic.Bool
	assured atomic.Bool
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

// shard is one open-addressing hash table with linear probing, under its
// lock. It stores no keys: a slot holds a connection and 32 bits of its
// key's hash, and a probe whose bits match compares the key with the
// connection's own fields, which never change. That is 12 bytes a slot
// where a Go map of key to *Conn took about 50, and growing never reads a
// connection. Deletion shifts the entries after the hole back (Knuth's
// algorithm R) rather than leaving tombstones, so a probe ends at the first
// empty slot however many connections came and went.
type shard struct {
	mu sync.RWMutex
	hs []uint32 // per slot: the key's hash bits (see connMap.locate); 0: empty
	cs []*Conn  // per slot: the connection; len(cs) == len(hs), a power of two or 0
	n  int      // entries
	_  [48]byte // keep neighbouring shards' locks off one cache line
}

// A shard grows to twice its slots when an entry would fill more than 3/4
// of them, and halves (down to minSlots) when fewer than 1/8 are used.
const minSlots = 8

// connMap is one sharded hash map from key to connection: the "in" map by
// each connection's inKey, the "out" map by its outKey.
type connMap struct {
	seed   uint64
	out    bool // keyed by outKey
	shards [shardCount]shard
}

func (m *connMap) init(seed uint64, out bool) {
	m.seed = seed
	m.out = out
}

// locate hashes k: the low bits pick the shard; the high 32, made odd so
// that no entry has 0, are kept in the slot, and bits 33 and up pick the
// slot to start probing at.
func (m *connMap) locate(k *key) (*shard, uint32) {
	h := k.hash(m.seed)
	return &m.shards[h&(shardCount-1)], uint32(h>>32) | 1
}

// has reports whether k is c's key in m: k == c.inKey() (or outKey),
// without building the key.
func (m *connMap) has(c *Conn, k *key) bool {
	if m.out {
		return k.sport == c.DPort && k.dport == c.CPort && k.proto == c.Proto &&
			k.src == c.DAddr.As16() && k.dst == c.CAddr.As16()
	}
	return k.sport == c.CPort && k.dport == c.VPort && k.proto == c.Proto &&
		k.src == c.CAddr.As16() && k.dst == c.VAddr.As16()
}

// find is the slot of s holding k (hashed to h by locate), -1 if none.
// s.mu is held.
func (m *connMap) find(s *shard, k *key, h uint32) int {
	if len(s.hs) == 0 {
		return -1
	}
	mask := len(s.hs) - 1
	for i := int(h>>1) & mask; ; i = (i + 1) & mask {
		switch s.hs[i] {
		case 0:
			return -1
		case h:
			if m.has(s.cs[i], k) {
				return i
			}
		}
	}
}

func (m *connMap) get(k *key) *Conn {
	s, h := m.locate(k)
	var c *Conn
	s.mu.RLock()
	if i := m.find(s, k, h); i >= 0 {
		c = s.cs[i]
	}
	s.mu.RUnlock()
	return c
}

// indexOf is the slot holding c, whose key hashed to h, -1 if none. A
// connection is in a map under its one key or not at all, so the pointer
// identifies it without comparing keys. s.mu is held.
func (s *shard) indexOf(c *Conn, h uint32) int {
	if len(s.hs) == 0 {
		return -1
	}
	mask := len(s.hs) - 1
	for i := int(h>>1) & mask; s.hs[i] != 0; i = (i + 1) & mask {
		if s.hs[i] == h && s.cs[i] == c {
			return i
		}
	}
	return -1
}

// add puts c, whose key hashed to h and is not in s, into s. s.mu is held
// for writing.
func (s *shard) add(c *Conn, h uint32) {
	if (s.n+1)*4 > len(s.hs)*3 {
		s.resize(max(2*len(s.hs), minSlots))
	}
	mask := len(s.hs) - 1
	i := int(h>>1) & mask
	for s.hs[i] != 0 {
		i = (i + 1) & mask
	}
	s.hs[i], s.cs[i] = h, c
	s.n++
}

// deleteAt empties slot i and moves back each later entry of the probe
// run that the hole would otherwise cut off from its home slot. s.mu is
// held for writing.
func (s *shard) deleteAt(i int) {
	mask := len(s.hs) - 1
	for j := (i + 1) & mask; s.hs[j] != 0; j = (j + 1) & mask {
		// The entry at j may fill the hole unless its home slot lies
		// cyclically after the hole, in (i, j].
		if home := int(s.hs[j]>>1) & mask; (j-home)&mask >= (j-i)&mask {
			s.hs[i], s.cs[i] = s.hs[j], s.cs[j]
			i = j
		}
	}
	s.hs[i], s.cs[i] = 0, nil
	s.n--
	if s.n*8 < len(s.hs) && len(s.hs) > minSlots {
		s.resize(len(s.hs) / 2)
	}
}

// resize rehashes s into n slots (a power of two) from the hash bits it
// keeps. s.mu is held for writing.
func (s *shard) resize(n int) {
	hs, cs := s.hs, s.cs
	s.hs, s.cs = make([]uint32, n), make([]*Conn, n)
	mask := n - 1
	for i, h := range hs {
		if h == 0 {
			continue
		}
		j := int(h>>1) & mask
		for s.hs[j] != 0 {
			j = (j + 1) & mask
		}
		s.hs[j], s.cs[j] = h, cs[i]
	}
}
