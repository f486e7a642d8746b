package nat

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunvs/tunvs/sched"
)

// DefaultMaxConns bounds the connection table when Config.MaxConns is 0.
const DefaultMaxConns = 1 << 20

// Config configures a Table.
type Config struct {
	// MaxConns bounds the table: past it, new connections are refused and
	// counted (DropTableFull) while existing ones keep working.
	MaxConns int
	// Timeouts per state; zero entries take the kernel's defaults.
	Timeouts Timeouts
	// Seed keys the flow hash; 0 picks a random one.
	Seed uint64
	// EgressMTU, if set, returns the MTU of the route to dst. The table
	// asks once per connection and direction and answers oversized
	// packets with Verdict TooBig, as IPVS checks the MTU before it
	// rewrites (ip_vs_nat_xmit).
	EgressMTU func(dst netip.Addr) int
}

// Verdict is what the caller does with a packet after Process.
type Verdict uint8

const (
	// Pass: not NAT traffic (or not a packet tunvs may schedule); hand it
	// to the stack unchanged, which delivers it locally or routes it.
	Pass Verdict = iota
	// Forward: rewritten in place; route it by its new destination.
	Forward
	// Drop: discard; Result.Reason says why (already counted).
	Drop
	// TooBig: the packet, unchanged, exceeds the egress MTU (Result.MTU)
	// and may not be fragmented: send the sender an ICMP "fragmentation
	// needed" / "packet too big" quoting it (BuildTooBig), then drop it.
	TooBig
	// TimeExceeded: the packet, unchanged, arrived with a TTL (hop limit)
	// of 1 or less and may not be forwarded: send the sender a time
	// exceeded quoting it (BuildTimeExceeded), then drop it.
	TimeExceeded
)

// Result is the outcome of Process.
type Result struct {
	Verdict Verdict
	Reason  DropReason // for Drop and TooBig
	Dir     Dir        // for Forward and TooBig
	Conn    *Conn      // for Forward and TooBig
	MTU     int        // for TooBig
	// Unreachable is set with DropNoDest: like IPVS (ip_vs_leave), the
	// caller should tell the client with an ICMP port unreachable.
	Unreachable bool
}

// svcKey identifies a virtual service.
type svcKey struct {
	addr  [16]byte
	port  uint16
	proto uint8
}

func makeSvcKey(proto uint8, a netip.Addr, port uint16) svcKey {
	return svcKey{addr: a.As16(), port: port, proto: proto}
}

// svcIndex is an immutable snapshot of the services, swapped whole on every
// change so the packet path reads it without a lock.
type svcIndex struct {
	byKey map[svcKey]*Service
	vips  map[[16]byte]struct{}
	order []*Service // ipvsadm lists services in the order they were added... see List
}

// Table is the director's NAT: virtual services, connections, counters.
type Table struct {
	cfg      Config
	timeouts atomic.Pointer[Timeouts]

	cfgMu sync.Mutex // serialises configuration changes
	svcs  atomic.Pointer[svcIndex]

	in, out connMap // by client->VIP key, and by RS->client key
	n       atomic.Int64

	drops [numDropReasons]atomic.Uint64

	sweepNext atomic.Uint32
}

// New returns an empty table.
func New(cfg Config) *Table {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	t := &Table{cfg: cfg}
	to := cfg.Timeouts.withDefaults()
	t.timeouts.Store(&to)
	t.svcs.Store(&svcIndex{byKey: map[svcKey]*Service{}, vips: map[[16]byte]struct{}{}})
	t.in.init(cfg.Seed)
	t.out.init(cfg.Seed ^ 0x9e3779b97f4a7c15)
	return t
}

// Timeouts returns the current timeouts.
func (t *Table) Timeouts() Timeouts { return *t.timeouts.Load() }

// SetTimeouts changes the timeouts, like `ipvsadm --set tcp tcpfin udp`
// (zero leaves a value as it is). Existing connections take the new value
// at their next packet, as in the kernel.
func (t *Table) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	to := t.Timeouts()
	if tcp > 0 {
		to[StateEstablished] = tcp
	}
	if tcpfin > 0 {
		to[StateFinWait] = tcpfin
	}
	if udp > 0 {
		to[StateUDP] = udp
	}
	t.timeouts.Store(&to)
}

// SetAllTimeouts replaces the whole timeout table (zero entries: defaults).
func (t *Table) SetAllTimeouts(to Timeouts) {
	to = to.withDefaults()
	t.timeouts.Store(&to)
}

// Len is the number of connections in the table.
func (t *Table) Len() int { return int(t.n.Load()) }

// MaxConns is the table's bound.
func (t *Table) MaxConns() int { return t.cfg.MaxConns }

// Drops returns the drop counter of a reason.
func (t *Table) Drops(r DropReason) uint64 {
	if r >= numDropReasons {
		return 0
	}
	return t.drops[r].Load()
}

func (t *Table) drop(r DropReason) Result {
	t.drops[r].Add(1)
	return Result{Verdict: Drop, Reason: r}
}

// Process runs one IP packet (no link header) through the NAT at ingress,
// rewriting it in place when it belongs to a connection or opens one. p is
// scratch space for the parse (its contents on return describe the packet
// as rewritten). now is the time in Unix nanoseconds; callers read the
// clock once per batch. The per-packet path of an existing connection does
// not allocate.
func (t *Table) Process(b []byte, p *Packet, now int64) Result {
	if r := Parse(b, p); r != DropNone {
		return t.drop(r)
	}
	switch p.Proto {
	case ProtoTCP, ProtoUDP:
		return t.processL4(p, now)
	case 1, 58:
		if p.ICMPError {
			return t.processICMP(p, now)
		}
	}
	return Result{Verdict: Pass}
}

func (t *Table) processL4(p *Packet, now int64) Result {
	src, dst := p.Src(), p.Dst()
	if p.Frag {
		// Without reassembly the ports of later fragments are unknown;
		// the kernel reassembles first (nf_defrag). Fragments of other
		// traffic are routed as they are.
		if t.isVIP(dst) || t.isVIP(src) {
			return t.drop(DropFragment)
		}
		return Result{Verdict: Pass}
	}
	k := makeKey(p.Proto, src, p.SrcPort, dst, p.DstPort)
	if c := t.in.get(&k); c != nil {
		if p.Proto == ProtoTCP && p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN && c.reusable() {
			// conn_reuse_mode: a new SYN on the ports of a connection
			// in TIME_WAIT is a new connection; expire the old one and
			// schedule again (ip_vs_in, is_new_conn_expected).
			t.remove(c)
		} else {
			return t.forward(c, DirIn, p, now)
		}
	}
	if c := t.out.get(&k); c != nil {
		return t.forward(c, DirOut, p, now)
	}
	return t.newConn(p, src, dst, now)
}

// reusable reports whether a SYN may replace the connection.
func (c *Conn) reusable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == StateTimeWait || c.state == StateClose
}

func (t *Table) isVIP(a netip.Addr) bool {
	_, ok := t.svcs.Load().vips[a.As16()]
	return ok
}

func (t *Table) lookupService(proto uint8, a netip.Addr, port uint16) *Service {
	idx := t.svcs.Load()
	if s := idx.byKey[makeSvcKey(proto, a, port)]; s != nil {
		return s
	}
	// The catch-all port-0 service, as ip_vs_service_find.
	return idx.byKey[makeSvcKey(proto, a, 0)]
}

func (t *Table) newConn(p *Packet, src, dst netip.Addr, now int64) Result {
	svc := t.lookupService(p.Proto, dst, p.DstPort)
	if svc == nil {
		return Result{Verdict: Pass}
	}
	if p.Proto == ProtoTCP && p.TCPFlags&tcpSYN == 0 {
		// Only a SYN opens a TCP connection (tcp_conn_schedule without
		// sloppy_tcp); the stack answers the rest with a reset, as the
		// kernel's does for a local address without a socket.
		return Result{Verdict: Pass}
	}
	if !p.VerifyL4Checksum() {
		return t.drop(DropBadChecksum)
	}
	if t.n.Load() >= int64(t.cfg.MaxConns) {
		return t.drop(DropTableFull)
	}
	d := svc.pick(sched.Flow{Proto: p.Proto, Src: src, SrcPort: p.SrcPort, Dst: dst, DstPort: p.DstPort})
	if d == nil {
		r := t.drop(DropNoDest)
		r.Unreachable = true
		return r
	}
	dport := d.Port
	if dport == 0 {
		dport = p.DstPort
	}
	c := &Conn{
		Proto: p.Proto,
		CAddr: src, CPort: p.SrcPort,
		VAddr: dst, VPort: p.DstPort,
		DAddr: d.Addr, DPort: dport,
		svc: svc, dest: d,
		inactive: true, // every connection starts inactive (ip_vs_ctl.c conn_flags)
		state:    StateNone,
	}
	if p.Proto == ProtoUDP {
		c.state = StateUDP
	}
	c.inKey = makeKey(p.Proto, src, p.SrcPort, dst, p.DstPort)
	c.outKey = makeKey(p.Proto, d.Addr, dport, src, p.SrcPort)
	if mtu := t.cfg.EgressMTU; mtu != nil {
		c.mtu[DirIn] = int32(mtu(d.Addr))
		c.mtu[DirOut] = int32(mtu(src))
	}
	if !t.insert(c) {
		// Another goroutine made the same connection first, or the reply
		// key is taken by a live connection (a client reusing a port the
		// real server still talks from): use what is there, if anything.
		if old := t.in.get(&c.inKey); old != nil {
			return t.forward(old, DirIn, p, now)
		}
		return t.drop(DropTableFull)
	}
	d.total.Add(1)
	d.Stats.Conns.Add(1)
	svc.Stats.Conns.Add(1)
	return t.forward(c, DirIn, p, now)
}

// insert adds c under both keys; false if either is taken or the table is
// full. Lock order: the in shard, then the out shard.
func (t *Table) insert(c *Conn) bool {
	si := t.in.shardOf(&c.inKey)
	so := t.out.shardOf(&c.outKey)
	si.mu.Lock()
	defer si.mu.Unlock()
	if _, ok := si.m[c.inKey]; ok {
		return false
	}
	so.mu.Lock()
	defer so.mu.Unlock()
	if _, ok := so.m[c.outKey]; ok {
		return false
	}
	if t.n.Add(1) > int64(t.cfg.MaxConns) {
		t.n.Add(-1)
		return false
	}
	si.m[c.inKey] = c
	so.m[c.outKey] = c
	return true
}

// remove takes c out of the table and releases it from its dest's counts.
// Safe to call more than once.
func (t *Table) remove(c *Conn) {
	si := t.in.shardOf(&c.inKey)
	so := t.out.shardOf(&c.outKey)
	si.mu.Lock()
	so.mu.Lock()
	removed := false
	if si.m[c.inKey] == c {
		delete(si.m, c.inKey)
		removed = true
	}
	if so.m[c.outKey] == c {
		delete(so.m, c.outKey)
	}
	so.mu.Unlock()
	si.mu.Unlock()
	if !removed {
		return
	}
	t.n.Add(-1)
	c.mu.Lock()
	c.dead = true
	if !c.inactive {
		c.dest.active.Add(-1)
	}
	c.mu.Unlock()
	c.dest.total.Add(-1)
}

// forward updates state, counters and expiry, checks the TTL and the MTU
// and rewrites. Both checks come before the rewrite, so the ICMP error
// quotes what the sender sent, as IPVS does (decrement_ttl and the MTU
// check in __ip_vs_get_out_rt, before ip_vs_nat_xmit rewrites).
func (t *Table) forward(c *Conn, dir Dir, p *Packet, now int64) Result {
	if p.TTL() <= 1 {
		t.drops[DropTTL].Add(1)
		return Result{Verdict: TimeExceeded, Reason: DropTTL, Dir: dir, Conn: c}
	}
	if mtu := int(c.mtu[dir]); mtu > 0 && p.Len() > mtu && p.DF() {
		t.drops[DropTooBig].Add(1)
		return Result{Verdict: TooBig, Reason: DropTooBig, Dir: dir, Conn: c, MTU: mtu}
	}
	to := t.timeouts.Load()
	if c.Proto == ProtoTCP {
		td := tcpInput
		if dir == DirOut {
			td = tcpOutput
		}
		c.setTCPState(td, p.TCPFlags, to)
	} else {
		c.timeout.Store(int64(to[StateUDP]))
	}
	c.expires.Store(now + c.timeout.Load())
	n := uint64(p.Len())
	if dir == DirIn {
		c.svc.Stats.InPkts.Add(1)
		c.svc.Stats.InBytes.Add(n)
		c.dest.Stats.InPkts.Add(1)
		c.dest.Stats.InBytes.Add(n)
		p.SetDst(c.DAddr, c.DPort)
	} else {
		c.svc.Stats.OutPkts.Add(1)
		c.svc.Stats.OutBytes.Add(n)
		c.dest.Stats.OutPkts.Add(1)
		c.dest.Stats.OutBytes.Add(n)
		p.SetSrc(c.VAddr, c.VPort)
	}
	return Result{Verdict: Forward, Dir: dir, Conn: c}
}

// setTCPState is the kernel's set_tcp_state: move along the state table and
// keep the dest's active count in step.
func (c *Conn) setTCPState(dir tcpDir, flags uint8, to *Timeouts) {
	c.mu.Lock()
	ns := nextTCPState(c.state, dir, flags)
	if ns != c.state && !c.dead {
		if !c.inactive && !ns.active() {
			c.dest.active.Add(-1)
			c.inactive = true
		} else if c.inactive && ns.active() {
			c.dest.active.Add(1)
			c.inactive = false
		}
	}
	c.state = ns
	c.mu.Unlock()
	c.timeout.Store(int64(to[ns]))
}

// processICMP translates an ICMP error about a connection (ip_vs_in_icmp
// and ip_vs_out_icmp in NAT mode).
func (t *Table) processICMP(p *Packet, now int64) Result {
	in := &p.Inner
	if in.Proto != ProtoTCP && in.Proto != ProtoUDP {
		return Result{Verdict: Pass}
	}
	isrc, idst := p.InnerSrc(), p.InnerDst()
	// The quoted packet travelled the other way: reverse it to get the
	// key of the packet that caused the error.
	k := makeKey(in.Proto, idst, in.DstPort, isrc, in.SrcPort)
	if c := t.in.get(&k); c != nil {
		// Error from the client side about a reply we sent as
		// VIP:vport -> client: hand it to the real server.
		t.countICMP(c, DirIn, p)
		p.SetInnerSrc(c.DAddr, c.DPort)
		p.SetDst(c.DAddr, 0)
		return Result{Verdict: Forward, Dir: DirIn, Conn: c}
	}
	if c := t.out.get(&k); c != nil {
		// Error from the real server's side (or made by a router there,
		// or by this director) about client -> real server: the client
		// must see it come from, and quote, the VIP.
		t.countICMP(c, DirOut, p)
		p.SetInnerDst(c.VAddr, c.VPort)
		p.SetSrc(c.VAddr, 0)
		return Result{Verdict: Forward, Dir: DirOut, Conn: c}
	}
	return Result{Verdict: Pass}
}

func (t *Table) countICMP(c *Conn, dir Dir, p *Packet) {
	n := uint64(p.Len())
	if dir == DirIn {
		c.svc.Stats.InPkts.Add(1)
		c.svc.Stats.InBytes.Add(n)
		c.dest.Stats.InPkts.Add(1)
		c.dest.Stats.InBytes.Add(n)
		return
	}
	c.svc.Stats.OutPkts.Add(1)
	c.svc.Stats.OutBytes.Add(n)
	c.dest.Stats.OutPkts.Add(1)
	c.dest.Stats.OutBytes.Add(n)
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
	for _, c := range s.m {
		if c.expires.Load() <= now {
			dead = append(dead, c)
		}
	}
	s.mu.RUnlock()
	for _, c := range dead {
		// A packet may have refreshed it since.
		if c.expires.Load() <= now {
			t.remove(c)
		}
	}
	return len(dead)
}

// SweepAll runs Sweep over every shard.
func (t *Table) SweepAll(now int64) int {
	n := 0
	for range shardCount {
		n += t.Sweep(now)
	}
	return n
}

// Conns calls f for a snapshot of every connection.
func (t *Table) Conns(f func(*Conn)) {
	for i := range t.in.shards {
		s := &t.in.shards[i]
		s.mu.RLock()
		cs := make([]*Conn, 0, len(s.m))
		for _, c := range s.m {
			cs = append(cs, c)
		}
		s.mu.RUnlock()
		for _, c := range cs {
			f(c)
		}
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

func (t *Table) String() string {
	return fmt.Sprintf("nat.Table{conns: %d/%d}", t.Len(), t.cfg.MaxConns)
}

// ProcessLocalICMP translates an ICMP error that the director's own stack
// made about a packet it was forwarding after DNAT (a TTL expired on the
// way to a real server, a real server's network unreachable): the quoted
// packet is client -> real server and the client must see it quote the
// VIP. Everything else is left alone.
func (t *Table) ProcessLocalICMP(b []byte, p *Packet, now int64) Result {
	if Parse(b, p) != DropNone || !p.ICMPError {
		return Result{Verdict: Pass}
	}
	return t.processICMP(p, now)
}
