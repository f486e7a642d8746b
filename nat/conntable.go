package nat

// The connection table: two sharded open-addressing hash maps from flow key
// to connection (client side and real-server side), and the Table's
// operations on them: insert, remove, lookup, listing and expiry sweeps.
// table.go holds the packet path that uses them.

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
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
//
// The number of slots is not a power of two: the home slot is the hash
// bits scaled to it (Lemire's multiply-shift), so a shard can grow by a
// quarter rather than double, and the index stays between 64% and 80% full
// at any size (a power of two left a million connections at 48%, 50 bytes
// a connection for the two maps instead of about 33).
type shard struct {
	mu sync.RWMutex
	hs []uint32 // per slot: the key's hash bits (see connMap.locate); 0: empty
	cs []*Conn  // per slot: the connection; len(cs) == len(hs)
	n  int      // entries
	_  [48]byte // keep neighbouring shards' locks off one cache line
}

// A shard grows by a quarter when an entry would fill more than 4/5 of its
// slots, and shrinks to twice its entries (not below minSlots) when fewer
// than 1/8 are used.
const minSlots = 8

// home is the slot where a probe for hash bits h starts in n slots.
func home(h uint32, n int) int { return int(uint64(h) * uint64(n) >> 32) }

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
// that no entry has 0, are kept in the slot and pick the slot to start
// probing at (home).
func (m *connMap) locate(k *key) (*shard, uint32) {
	h := k.hash(m.seed)
	return &m.shards[h&(shardCount-1)], uint32(h>>32) | 1
}

// has reports whether k is c's key in m: k == c.inKey() (or outKey),
// without building the key.
func (m *connMap) has(c *Conn, k *key) bool {
	if m.out {
		la, lp := c.local16()
		return k.sport == c.DPort && k.dport == lp && k.proto == c.Proto &&
			k.src == c.addr16(aDest) && k.dst == la
	}
	return k.sport == c.CPort && k.dport == c.VPort && k.proto == c.Proto &&
		k.src == c.addr16(aClient) && k.dst == c.addr16(aVirtual)
}

// find is the slot of s holding k (hashed to h by locate), -1 if none.
// s.mu is held.
func (m *connMap) find(s *shard, k *key, h uint32) int {
	n := len(s.hs)
	if n == 0 {
		return -1
	}
	for i := home(h, n); ; {
		switch s.hs[i] {
		case 0:
			return -1
		case h:
			if m.has(s.cs[i], k) {
				return i
			}
		}
		if i++; i == n {
			i = 0
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
	n := len(s.hs)
	if n == 0 {
		return -1
	}
	for i := home(h, n); s.hs[i] != 0; {
		if s.hs[i] == h && s.cs[i] == c {
			return i
		}
		if i++; i == n {
			i = 0
		}
	}
	return -1
}

// add puts c, whose key hashed to h and is not in s, into s. s.mu is held
// for writing.
func (s *shard) add(c *Conn, h uint32) {
	if (s.n+1)*5 > len(s.hs)*4 {
		s.resize(max(len(s.hs)+len(s.hs)/4, minSlots))
	}
	s.place(c, h)
	s.n++
}

// deleteAt empties slot i and moves back each later entry of the probe
// run that the hole would otherwise cut off from its home slot. s.mu is
// held for writing.
func (s *shard) deleteAt(i int) {
	n := len(s.hs)
	// dist is how far b lies cyclically after a.
	dist := func(a, b int) int {
		if d := b - a; d >= 0 {
			return d
		}
		return b - a + n
	}
	for j := next(i, n); s.hs[j] != 0; j = next(j, n) {
		// The entry at j may fill the hole unless its home slot lies
		// cyclically after the hole, in (i, j].
		if dist(home(s.hs[j], n), j) >= dist(i, j) {
			s.hs[i], s.cs[i] = s.hs[j], s.cs[j]
			i = j
		}
	}
	s.hs[i], s.cs[i] = 0, nil
	s.n--
	if s.n*8 < n && n > minSlots {
		s.resize(max(2*s.n, minSlots))
	}
}

// next is the slot after i of n, cyclically.
func next(i, n int) int {
	if i++; i == n {
		return 0
	}
	return i
}

// place puts c, whose key hashed to h, in the first empty slot of its
// probe run. s.mu is held for writing and there is an empty slot.
func (s *shard) place(c *Conn, h uint32) {
	n := len(s.hs)
	i := home(h, n)
	for s.hs[i] != 0 {
		i = next(i, n)
	}
	s.hs[i], s.cs[i] = h, c
}

// resize rehashes s into n slots from the hash bits it keeps. s.mu is
// held for writing.
func (s *shard) resize(n int) {
	hs, cs := s.hs, s.cs
	s.hs, s.cs = make([]uint32, n), make([]*Conn, n)
	for i, h := range hs {
		if h != 0 {
			s.place(cs[i], h)
		}
	}
}

// insert adds c under both keys; false if either is taken or the table is
// full. Lock order: the in shard, then the out shard.
func (t *Table) insert(c *Conn) bool { return t.insertKeys(c) == inserted }

// insertResult says what insertKeys did.
type insertResult uint8

const (
	inserted insertResult = iota
	inTaken               // the client-side key is another connection's
	outTaken              // a full-NAT connection's reply key is taken
	tableFull
)

// insertKeys is insert saying why it refused. The reply key of a full-NAT
// connection must be free: it is the local port being allocated, and two
// connections sharing it would mix their replies.
func (t *Table) insertKeys(c *Conn) insertResult {
	ik, ok := c.inKey(), c.outKey()
	si, hi := t.in.locate(&ik)
	so, ho := t.out.locate(&ok)
	si.mu.Lock()
	defer si.mu.Unlock()
	if t.in.find(si, &ik, hi) >= 0 {
		return inTaken
	}
	so.mu.Lock()
	defer so.mu.Unlock()
	j := t.out.find(so, &ok, ho)
	if j >= 0 && c.hasFlag(flagFullNAT) {
		return outTaken
	}
	if t.n.Add(1) > int64(t.cfg.MaxConns) {
		t.n.Add(-1)
		return tableFull
	}
	si.add(c, hi)
	// The reply key may be held by an older connection: the same client
	// port reaching the same real server through another virtual service
	// while the first sits in TIME_WAIT. The kernel adds the new entry at
	// the head of its hash chain, so replies find the newest connection;
	// the older one keeps its own client-side key. (When the newer one
	// goes first, the older one's replies are no longer matched; the
	// kernel would find it further down the chain. It is in TIME_WAIT.)
	if j >= 0 {
		so.cs[j] = c
	} else {
		so.add(c, ho)
	}
	return inserted
}

// remove takes c out of the table and releases it from its dest's counts
// and its template, and reports whether it did: of two callers racing for
// c, one gets true.
func (t *Table) remove(c *Conn) bool {
	ik, ok := c.inKey(), c.outKey()
	si, hi := t.in.locate(&ik)
	so, ho := t.out.locate(&ok)
	si.mu.Lock()
	so.mu.Lock()
	removed := false
	if i := si.indexOf(c, hi); i >= 0 {
		si.deleteAt(i)
		removed = true
	}
	if j := so.indexOf(c, ho); j >= 0 {
		so.deleteAt(j)
	}
	so.mu.Unlock()
	si.mu.Unlock()
	if !removed {
		return false
	}
	t.n.Add(-1)
	t.unbind(c)
	return true
}

// Sweep expires the connections of one shard whose time is up, and returns
// how many it removed. Call it shardCount times per timeout granularity (the
// daemon sweeps all shards once a second, a slice at a time, so no pass
// stops the world).
func (t *Table) Sweep(now int64) int {
	i := t.sweepNext.Add(1) % shardCount
	s := &t.in.shards[i]
	var dead []*Conn
	s.mu.RLock()
	for _, c := range s.cs {
		if c != nil && c.expires.Load() <= now {
			dead = append(dead, c)
		}
	}
	s.mu.RUnlock()
	n := 0
	for _, c := range dead {
		// A packet may have refreshed it since, or another caller
		// removed it: only what this call removed counts.
		if c.expires.Load() <= now && t.remove(c) {
			n++
		}
	}
	n += t.sweepTemplates(i, now)
	if i == 0 {
		t.sweepTrash(now)
	}
	return n
}

// SweepAll runs Sweep over every shard.
func (t *Table) SweepAll(now int64) int {
	n := 0
	for range shardCount {
		n += t.Sweep(now)
	}
	return n
}

// Conns calls f for a snapshot of every connection, persistence templates
// (Conn.Template) included, as -Lnc lists them.
func (t *Table) Conns(f func(*Conn)) {
	for i := range t.in.shards {
		s := &t.in.shards[i]
		s.mu.RLock()
		cs := make([]*Conn, 0, s.n)
		for _, c := range s.cs {
			if c != nil {
				cs = append(cs, c)
			}
		}
		s.mu.RUnlock()
		for _, c := range cs {
			f(c)
		}
	}
	for _, c := range t.templates() {
		f(c)
	}
}

// Lookup finds the connection a packet from src:sport to dst:dport belongs
// to, in either direction; for tests and tools.
func (t *Table) Lookup(proto uint8, src netip.AddrPort, dst netip.AddrPort) (*Conn, Dir) {
	k := makeKey(proto, src.Addr(), src.Port(), dst.Addr(), dst.Port())
	if c := t.in.get(&k); c != nil {
		return c, DirIn
	}
	if c := t.out.get(&k); c != nil {
		return c, DirOut
	}
	return nil, DirIn
}

// expiryTick is how often RunExpiry sweeps a slice of the table: a
// quarter of the shards every quarter second, so each connection is
// looked at once a second (the kernel's timers are per connection; a
// second's granularity is what the timeouts' whole seconds need) and no
// pass locks the whole table.
const expiryTick = 250 * time.Millisecond

// RunExpiry expires connections, persistence templates and removed
// servers until ctx is done. now is the clock in Unix nanoseconds, the
// one the packets are processed with.
func (t *Table) RunExpiry(ctx context.Context, now func() int64) {
	tk := time.NewTicker(expiryTick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		n := now()
		for range shardCount / int(time.Second/expiryTick) {
			t.Sweep(n)
		}
	}
}
