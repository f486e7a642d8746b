package nat

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// DefaultMaxConns bounds the connection table when Config.MaxConns is 0.
const DefaultMaxConns = 1 << 20

// Config configures a Table.
type Config struct {
	// MaxConns bounds the table: at it, a new connection takes the place
	// of one not yet established (earlyDrop); failing that it is refused
	// and counted (DropTableFull). Established ones keep working.
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
	// DirectRoute, if set, says whether a direct-routing (-g) real
	// server at dst can be reached: Apply refuses a -g server it
	// refuses, with its error (the host knows its links; the kernel's
	// ip_vs_dr_xmit finds out packet by packet, and so does the host
	// still when routes change later).
	DirectRoute func(dst netip.Addr) error

	// The IPVS sysctls (net.ipv4.vs.*) that change how connections of
	// removed or quiesced real servers and persistence templates are
	// treated. The zero values are the kernel's defaults. They can be
	// changed later with the Table's setters, as the sysctls can.

	// ExpireNodestConn is expire_nodest_conn (default 0). Off, a
	// connection whose real server was removed stays until it times out
	// and client-side packets of it are dropped (DropDestUnavailable);
	// replies still pass. On, removing a real server expires its
	// connections and templates at once, and a packet that still finds
	// one (or a SYN finding a connection to a server of weight 0) expires
	// it and is scheduled as new: a UDP datagram or a TCP SYN gets a new
	// real server, any other TCP segment is handed to the local stack
	// (Verdict Pass), as ip_vs_in_hook and tcp_conn_schedule do.
	ExpireNodestConn bool
	// ExpireQuiescentTemplate is expire_quiescent_template (default 0).
	// On, a persistence template whose real server has weight 0 is
	// invalidated when a new connection looks it up, and the client is
	// scheduled afresh; off, clients with a template keep going to the
	// quiesced server (ip_vs_check_template).
	ExpireQuiescentTemplate bool
	// ConnReuseMode is conn_reuse_mode, whose kernel default is 1: a SYN
	// that finds a connection in TIME_WAIT or CLOSE, not controlled by a
	// persistence template, expires it and is scheduled as a new
	// connection (is_new_conn_expected). 0 here means that default; set
	// ConnReuseOff to turn reuse off (the sysctl's 0). Bit 2 (FIN_WAIT
	// reuse) concerns only connections without output (DR, tunnel), never
	// NAT, so it changes nothing here.
	ConnReuseMode int

	// LocalPortMin and LocalPortMax are the ports full NAT allocates on
	// each local address (0: DefaultLocalPortMin, DefaultLocalPortMax).
	LocalPortMin, LocalPortMax uint16
}

// ConnReuseOff as Config.ConnReuseMode is conn_reuse_mode=0.
const ConnReuseOff = -1

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
	// Reply: the packet was rewritten in place into the director's
	// answer to its sender (the SYN proxy's cookie SYN-ACK): send it
	// back out of the link it arrived on, to the hop it came from.
	Reply
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
	// Proxy is set with Forward for a client's first data on a
	// connection with the PROXY protocol: the caller sends on, instead of
	// the packet, the copy InsertProxy makes with the header in
	// (proxyproto.go).
	Proxy bool
	// Rebuilt: the SYN proxy rebuilt the packet (Reply, or Forward of a
	// segment made from another): p.B is what to send, whose length may
	// differ from what was handed in (within its capacity), with whole
	// checksums; any offload state of the arrival no longer applies.
	Rebuilt bool
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
	// own are the addresses no packet to a service may come from: the
	// VIPs, the director's own (SetLocalAddrs) and the real servers'.
	own   map[[16]byte]struct{}
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
	// earlyDrops counts connections dropped to make room (earlyDrop).
	earlyDrops atomic.Uint64
	// proxyHeaders counts the PROXY protocol headers sent, a
	// retransmitted first segment's included (proxyproto.go).
	proxyHeaders atomic.Uint64
	// defense is the flood defences' state (defense.go).
	defense defense
	// The SYN proxy (synproxy.go): the cookie secret, the "synproxy"
	// and "synproxy_backlog" knobs and the counters.
	cookie    cookieSecret
	spMode    atomic.Int32
	spBacklog atomic.Int32
	sp        synProxyStats

	sweepNext atomic.Uint32

	// local are the director's own addresses (SetLocalAddrs).
	local atomic.Pointer[[]netip.Addr]

	// sysctls (see Config)
	expireNodest   atomic.Bool
	expireQuiesTpl atomic.Bool
	connReuseMode  atomic.Int32
	sloppyTCP      atomic.Bool // sloppy_tcp

	// Removed dests kept for their connections and for revival by a
	// later AddDest (the kernel's dest_trash), under trashMu.
	trashMu sync.Mutex
	trash   []*Dest

	// Persistence templates (tpl.go), under tplMu.
	tplMu   sync.Mutex
	tpls    [shardCount]map[key]*Conn
	stale   map[*Conn]struct{} // invalidated templates, unhashed until they expire
	tplSeed uint64

	// Connection sync (sync.go): the master's sender, the sync sysctls,
	// and the stand-in dest of synced connections without a local one.
	sync        syncConfig
	unboundDest atomic.Pointer[Dest]
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
	if cfg.LocalPortMin == 0 {
		cfg.LocalPortMin = DefaultLocalPortMin
	}
	if cfg.LocalPortMax == 0 {
		cfg.LocalPortMax = DefaultLocalPortMax
	}
	if cfg.LocalPortMax < cfg.LocalPortMin {
		cfg.LocalPortMin, cfg.LocalPortMax = cfg.LocalPortMax, cfg.LocalPortMin
	}
	t := &Table{cfg: cfg, cookie: newCookieSecret()}
	t.spMode.Store(SynProxyAuto)
	t.spBacklog.Store(DefaultSynProxyBacklog)
	to := cfg.Timeouts.withDefaults()
	t.timeouts.Store(&to)
	t.svcs.Store(&svcIndex{byKey: map[svcKey]*Service{}, vips: map[[16]byte]struct{}{}})
	t.in.init(cfg.Seed, false)
	t.out.init(cfg.Seed^0x9e3779b97f4a7c15, true)
	t.tplSeed = cfg.Seed ^ 0x6a09e667f3bcc909
	for i := range t.tpls {
		t.tpls[i] = make(map[key]*Conn)
	}
	t.stale = make(map[*Conn]struct{})
	t.sync.init()
	t.expireNodest.Store(cfg.ExpireNodestConn)
	t.expireQuiesTpl.Store(cfg.ExpireQuiescentTemplate)
	switch {
	case cfg.ConnReuseMode == 0:
		t.connReuseMode.Store(1)
		t.defense.amemthresh.Store(1024)
	case cfg.ConnReuseMode > 0:
		t.connReuseMode.Store(int32(cfg.ConnReuseMode))
	}
	return t
}

// ExpireNodestConn is the current expire_nodest_conn (see Config).
func (t *Table) ExpireNodestConn() bool { return t.expireNodest.Load() }

// SetExpireNodestConn sets expire_nodest_conn.
func (t *Table) SetExpireNodestConn(on bool) { t.setSysctl("expire_nodest_conn", b2i(on)) }

// ExpireQuiescentTemplate is the current expire_quiescent_template.
func (t *Table) ExpireQuiescentTemplate() bool { return t.expireQuiesTpl.Load() }

// SetExpireQuiescentTemplate sets expire_quiescent_template.
func (t *Table) SetExpireQuiescentTemplate(on bool) {
	t.setSysctl("expire_quiescent_template", b2i(on))
}

// ConnReuseMode is the current conn_reuse_mode, as the sysctl shows it
// (0: off, 1: the default).
func (t *Table) ConnReuseMode() int { return int(t.connReuseMode.Load()) }

// SetConnReuseMode sets conn_reuse_mode to the sysctl value m (0 turns
// reuse off; values outside the knob's 0..3 are clamped).
func (t *Table) SetConnReuseMode(m int) { t.setSysctl("conn_reuse_mode", min(max(m, 0), 3)) }

// Timeouts returns the current timeouts.
func (t *Table) Timeouts() Timeouts { return *t.timeouts.Load() }

// SetAllTimeouts replaces the whole timeout table (zero entries: defaults).
func (t *Table) SetAllTimeouts(to Timeouts) {
	to = to.withDefaults()
	t.timeouts.Store(&to)
}

// Len is the number of connections in the table, persistence templates
// included (the kernel's conn_count).
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
	return t.ProcessOffload(b, p, now, Offload{})
}

// ProcessOffload is Process for a packet a device's offloads left
// unfinished: a GSO super-packet is NATed as one packet, in place, and a
// partial checksum stays partial and right (see Offload). Connection
// state and counters see it as one packet of its whole length, as IPVS
// sees one GSO skb.
func (t *Table) ProcessOffload(b []byte, p *Packet, now int64, o Offload) Result {
	if r := Parse(b, p); r != DropNone {
		return t.drop(r)
	}
	if (o.PartialCsum || o.SegLen > 0) && !p.Frag && (p.Proto == ProtoTCP || p.Proto == ProtoUDP) {
		p.partial = o.PartialCsum
		p.segLen = o.SegLen
	}
	p.inMTU = o.MTU
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
		// ip_vs_in_hook: a packet that may start a connection (a TCP
		// SYN, is_new_conn) replaces a connection in TIME_WAIT or CLOSE
		// (conn_reuse_mode) or, with expire_nodest_conn, one to a
		// server of weight 0; the old one expires and the packet is
		// scheduled again.
		if p.Proto == ProtoTCP && p.TCPFlags&tcpSYN != 0 && t.resched(c) {
			t.remove(c)
			return t.newConn(p, src, dst, now)
		}
		if c.dest.removed.Load() {
			// "the destination server is not available"
			if !t.expireNodest.Load() {
				return t.drop(DropDestUnavailable)
			}
			t.remove(c)
			return t.newConn(p, src, dst, now)
		}
		if c.hasFlag(flagSynProxy) && c.syn().phase.Load() == spSynSent {
			return t.spClientPending(c, p, now)
		}
		return t.forward(c, DirIn, p, now)
	}
	if c := t.out.get(&k); c != nil {
		if c.hasFlag(flagSynProxy) {
			if r, done := t.spServer(c, p, now); done {
				return r
			}
		}
		return t.forward(c, DirOut, p, now)
	}
	return t.newConn(p, src, dst, now)
}

// resched is the reschedule decision of ip_vs_in_hook for a new-connection
// packet that found c. Without conntrack there is no "old conntrack" to
// wait for, so the decision is the kernel's with ip_vs_conn_uses_old_conntrack
// false.
func (t *Table) resched(c *Conn) bool {
	if t.expireNodest.Load() && c.dest.weight.Load() == 0 {
		return true
	}
	return t.connReuseMode.Load() != 0 && c.newConnExpected()
}

// newConnExpected is is_new_conn_expected: never for a connection
// controlled by a persistence template (its SYN goes on along the old
// connection, to the same server); for TCP, in TIME_WAIT or CLOSE. (The
// FIN_WAIT case of conn_reuse_mode bit 2 needs IP_VS_CONN_F_NOOUTPUT,
// which NAT connections never have.)
func (c *Conn) newConnExpected() bool {
	if c.control != nil || c.Proto != ProtoTCP {
		return false
	}
	s := c.state()
	return s == StateTimeWait || s == StateClose
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
	if r := t.martian(p, src); r != DropNone {
		return t.drop(r)
	}
	var sp *spInit
	var spi spInit
	if p.Proto == ProtoTCP && spEligible(p) {
		switch p.TCPFlags & (tcpSYN | tcpACK | tcpRST | tcpFIN) {
		case tcpSYN:
			if t.synProxyOn(svc) {
				if !p.VerifyL4Checksum() {
					return t.drop(DropBadChecksum)
				}
				return t.cookieReply(p, now)
			}
		case tcpACK:
			if t.synProxyMayACK(svc) {
				if !p.VerifyL4Checksum() {
					return t.drop(DropBadChecksum)
				}
				if t.checkCookieACK(p, now, &spi) {
					sp = &spi
				} else {
					t.sp.badCookieACKs.Add(1)
				}
			}
		}
	}
	if sp == nil && p.Proto == ProtoTCP && ((p.TCPFlags&tcpSYN == 0 && !t.sloppyTCP.Load()) || p.TCPFlags&tcpRST != 0) {
		// Only a SYN opens a TCP connection, never with RST
		// (tcp_conn_schedule: "(th->syn || sysctl_sloppy_tcp(ipvs)) &&
		// !th->rst"); the stack answers the rest with a reset, as the
		// kernel's does for a local address without a socket. With
		// sloppy_tcp any other packet is scheduled too, and the state
		// table takes it from NONE (an ACK to ESTABLISHED, as the
		// kernel's tcp_states does).
		return Result{Verdict: Pass}
	}
	if p.SrcPort == ftpDataPort && sp == nil {
		// ip_vs_schedule: "Not scheduling FTPDATA".
		return Result{Verdict: Pass}
	}
	if !p.VerifyL4Checksum() {
		return t.drop(DropBadChecksum)
	}
	if t.n.Load() >= int64(t.cfg.MaxConns) && !t.earlyDrop() {
		return t.drop(DropTableFull)
	}
	sr := t.schedule(svc, p, src, dst, now)
	if sr.full {
		return t.drop(DropTableFull)
	}
	d := sr.d
	if d == nil {
		r := t.drop(DropNoDest)
		r.Unreachable = true
		return r
	}
	// A full-NAT connection keeps its local tuple in x (connext.go); a
	// one-packet connection is never in the table, so no local port
	// could be held for its reply: it is masqueraded.
	c := &Conn{
		Proto: p.Proto,
		CPort: p.SrcPort, VPort: p.DstPort, DPort: sr.dport,
		svc: svc, dest: d,
		control: sr.ct,
	}
	c.setAddrs(src, dst, d.Addr)
	mf := d.methodFlags()
	if sp != nil && mf != 0 {
		// A direct-routing or tunnelling server answers the client
		// itself: there is no SYN-ACK to see, no numbers to translate.
		if sr.ct != nil {
			sr.ct.x.nControl.Add(-1)
		}
		return t.drop(DropSynProxy)
	}
	fnat := d.fullNAT.Load() && !sr.ops && mf == 0
	if fnat {
		c.ext().fnat = new(fnatExt)
		c.setFlag(flagFullNAT)
		// Only a SYN, or the SYN proxy's cookie ACK, tells where the
		// client's data starts.
		if pps := proxySetting(svc, d); pps.Version() != 0 && p.Proto == ProtoTCP {
			switch {
			case p.TCPFlags&tcpSYN != 0:
				c.initProxy(p.Seq(), pps)
			case sp != nil:
				c.initProxy(sp.clientISN, pps)
			}
		}
	}
	c.setFlag(mf)
	st := StateNone
	if p.Proto == ProtoUDP {
		st = StateUDP
	}
	// Every connection starts inactive (ip_vs_ctl.c conn_flags).
	c.initState(st, true)
	to := t.timeouts.Load()
	c.timeout.Store(int64(to[st]))
	c.expires.Store(now + c.timeout.Load())
	if mtu := t.cfg.EgressMTU; mtu != nil {
		c.initMTU(mtu(d.Addr), mtu(src))
	}
	if sr.ops {
		// IP_VS_CONN_F_ONE_PACKET: the connection is bound to its server
		// and counted, carries this one datagram and is gone
		// (ip_vs_conn_hash skips it, ip_vs_conn_put expires it at once).
		// Nothing is left for a reply to find: as in the kernel, the
		// server's answer is not translated (see Service config
		// OnePacket).
		d.bindConn()
		d.Stats.Conns.Add(1)
		svc.Stats.Conns.Add(1)
		c.flags.Or(flagOnePacket)
		r := t.forward(c, DirIn, p, now)
		t.unbind(c)
		return r
	}
	if sp != nil {
		t.sp.cookieACKs.Add(1)
		if !t.spStart(c, sp, p, now) {
			t.spRelease(c.syn())
			if sr.ct != nil {
				sr.ct.x.nControl.Add(-1)
			}
			return t.drop(DropSynProxy)
		}
	}
	ins := inserted
	if fnat {
		ins = t.insertFullNAT(c, svc)
	} else {
		ins = t.insertKeys(c)
	}
	if ins != inserted {
		if sp != nil {
			t.spRelease(c.syn())
		}
		if sr.ct != nil {
			sr.ct.x.nControl.Add(-1)
		}
		if ins == outTaken {
			// Every local tuple tried is taken: refused and counted,
			// as DPVS's dp_vs_laddr_bind fails with EDPVS_RESOURCE.
			return t.drop(DropNoLocalPort)
		}
		// Another goroutine made the same connection first (or the table
		// filled meanwhile): use what is there, if anything.
		ik := c.inKey()
		if old := t.in.get(&ik); old != nil {
			return t.forward(old, DirIn, p, now)
		}
		return t.drop(DropTableFull)
	}
	d.bindConn()
	d.Stats.Conns.Add(1)
	svc.Stats.Conns.Add(1)
	if sp != nil {
		t.spWatch(c)
		return t.rebuilt(t.forward(c, DirIn, p, now))
	}
	return t.forward(c, DirIn, p, now)
}

// unbind is ip_vs_unbind_dest and ip_vs_control_del for a connection that
// is no longer reachable. The template stays on its own timer.
func (t *Table) unbind(c *Conn) {
	old, _ := c.updateState(func(w uint32) uint32 { return w | stDead })
	if old&(stInactive|stDead) == 0 {
		c.dest.active.Add(-1)
	}
	c.unbindLocal()
	if c.hasFlag(flagSynProxy) {
		sp := c.syn()
		sp.mu.Lock()
		t.spRelease(sp)
		sp.mu.Unlock()
	}
	c.dest.unbindConn()
	if c.control != nil {
		c.control.x.nControl.Add(-1)
	}
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
	grow, first, extra := 0, false, 0
	if dir == DirIn && c.hasFlag(flagProxy) {
		if grow, first = c.proxyGrowth(p); first {
			if len(p.B)+grow > maxIPLen(p.V6) {
				return t.drop(DropProxyNoRoom)
			}
			if p.segLen == 0 {
				// A super-packet's segments are cut at segLen
				// still; a packet grows.
				extra = max(grow, 0)
			}
		}
	}
	mtu := c.egressMTU(dir)
	if dir == DirIn && c.hasFlag(flagTunnel) {
		// __ip_vs_get_out_rt in tunnel mode: the route's MTU (a learnt
		// path MTU, if lower: tunicmp.go) less the outer headers, no
		// less than 68.
		if mtu = c.tunnelMTU(mtu, now); mtu > 0 {
			if mtu -= c.EncapLen(); mtu < 68 {
				return t.drop(DropTunnelMTU)
			}
		}
	}
	if mtu > 0 && p.netLen()+extra > mtu && p.DF() {
		t.drops[DropTooBig].Add(1)
		// With the header to come, the client's segment must be
		// smaller by its length (proxyproto.go).
		return Result{Verdict: TooBig, Reason: DropTooBig, Dir: dir, Conn: c, MTU: mtu - extra}
	}
	to := t.timeouts.Load()
	if c.Proto == ProtoTCP {
		td := tcpInput
		if dir == DirOut {
			td = tcpOutput
			if c.hasFlag(flagNoOutput) {
				c.flags.And(^uint32(flagNoOutput))
			}
		} else if c.hasFlag(flagNoOutput) {
			td = tcpInputOnly
		}
		c.setTCPState(td, p.TCPFlags, to, t.defense.dos.Load())
	} else {
		c.timeout.Store(int64(to[StateUDP]))
		if dir == DirOut && c.control != nil && !c.control.hasFlag(flagAssured) {
			c.control.setFlag(flagAssured)
		}
	}
	c.expires.Store(now + c.timeout.Load())
	if c.hasFlag(flagSynProxy) {
		if sp := c.syn(); sp.phase.Load() == spEstablished && !sp.translate(dir, p) {
			return t.drop(DropSynProxy)
		}
	}
	n := uint64(p.Len())
	if c.hasFlag(flagRoute | flagTunnel) {
		// ip_vs_dr_xmit: the packet leaves as it came; the host sends it
		// to the real server's Ethernet address. ip_vs_tunnel_xmit:
		// the host puts it in a packet to the real server.
		if dir == DirIn {
			c.dest.countIn(n)
			t.syncIn(c, now)
		} else {
			c.dest.countOut(n)
		}
		return Result{Verdict: Forward, Dir: dir, Conn: c}
	}
	if dir == DirIn {
		c.dest.countIn(n)
		if c.hasFlag(flagFullNAT) {
			p.SetSrc(c.local())
		}
		p.SetDst(c.DAddr(), c.DPort)
		t.syncIn(c, now)
		if c.hasFlag(flagProxy) {
			c.proxyIn(p, first, grow)
			if first {
				t.proxyHeaders.Add(1)
			}
		}
	} else {
		c.dest.countOut(n)
		p.SetSrc(c.VAddr(), c.VPort)
		if c.hasFlag(flagFullNAT) {
			p.SetDst(c.CAddr(), c.CPort)
		}
		if c.hasFlag(flagProxy) {
			c.proxyOut(p)
		}
	}
	return Result{Verdict: Forward, Dir: dir, Conn: c, Proxy: first}
}

// setTCPState is the kernel's set_tcp_state: move along the state table and
// keep the dest's active count in step.
//
// The state word changes by compare-and-swap where the kernel holds the
// connection's lock; the dest's count follows the transition that won, so
// it ends where the kernel's would (a racing unbind sees the same word).
func (c *Conn) setTCPState(dir tcpDir, flags uint8, to *Timeouts, dos bool) {
	var ns State
	old, nw := c.updateState(func(w uint32) uint32 {
		s := State(w)
		ns = nextTCPState(s, dir, flags, dos)
		w = w&^0xff | uint32(ns)
		if ns != s && w&stDead == 0 {
			if w&stInactive == 0 && !ns.active() {
				w |= stInactive
			} else if w&stInactive != 0 && ns.active() {
				w &^= stInactive
			}
		}
		return w
	})
	if State(old) != ns && old&stDead == 0 {
		switch {
		case old&stInactive == 0 && nw&stInactive != 0:
			c.dest.active.Add(-1)
		case old&stInactive != 0 && nw&stInactive == 0:
			c.dest.active.Add(1)
		}
		if ns == StateEstablished && c.control != nil {
			c.control.setFlag(flagAssured)
		}
	}
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
		if c.hasFlag(flagRoute | flagTunnel) {
			// ip_vs_icmp_xmit: not masqueraded, the error goes on
			// unchanged by the connection's own transmitter, to the
			// real server that sent the quoted reply.
			return Result{Verdict: Forward, Dir: DirIn, Conn: c}
		}
		p.SetInnerSrc(c.DAddr(), c.DPort)
		c.spICMPIn(p)
		if c.hasFlag(flagFullNAT) {
			// The real server sent its segment to LADDR:lport, and
			// has no route to whoever reported the error: both come
			// from LADDR, as DPVS's fnat ICMP handling does.
			la, lp := c.local()
			p.SetInnerDst(la, lp)
			p.SetSrc(la, 0)
		}
		p.SetDst(c.DAddr(), 0)
		return Result{Verdict: Forward, Dir: DirIn, Conn: c}
	}
	if c := t.out.get(&k); c != nil {
		// Error from the real server's side (or made by a router there,
		// or by this director) about client -> real server: the client
		// must see it come from, and quote, the VIP.
		t.countICMP(c, DirOut, p)
		p.SetInnerDst(c.VAddr(), c.VPort)
		if c.hasFlag(flagFullNAT) {
			// The quote is LADDR:lport -> RS; the client sent
			// client -> VIP, and the error goes to it.
			p.SetInnerSrc(c.CAddr(), c.CPort)
			p.SetDst(c.CAddr(), 0)
		}
		if c.hasFlag(flagProxy) {
			// The quote carries the shifted sequence number.
			c.proxyQuote(p)
		}
		p.SetSrc(c.VAddr(), 0)
		return Result{Verdict: Forward, Dir: DirOut, Conn: c}
	}
	return Result{Verdict: Pass}
}

func (t *Table) countICMP(c *Conn, dir Dir, p *Packet) {
	n := uint64(p.Len())
	if dir == DirIn {
		c.dest.countIn(n)
		return
	}
	c.dest.countOut(n)
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
