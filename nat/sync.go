package nat

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
)

// Connection synchronisation (the kernel's ip_vs_sync.c as its callers see
// it). On a sync master the packet path decides, for every packet from a
// client, whether the connection (and its template) goes to the backups,
// by ip_vs_sync_conn and ip_vs_sync_conn_needed's rules, and hands it to a
// SyncSender; on a backup, ApplySync creates and updates connections from
// what the master sent (ip_vs_proc_conn). Package ipvssync has the daemons
// and the wire format.

// SyncSender receives the connections a sync master sends. Send runs on
// the packet path: it must not block or allocate. It may be called with
// the table's template lock held (a template kept alive is sent from the
// sweep), so it must take no lock of the table's; reading the connection
// (Conn.SyncInfo) is fine.
type SyncSender interface {
	Send(c *Conn)
}

type syncHolder struct{ s SyncSender }

// syncConfig is the sync part of the table: the sender while a master
// runs, and the sync sysctls.
type syncConfig struct {
	sender      atomic.Pointer[syncHolder]
	threshold   atomic.Int32
	period      atomic.Int32
	refresh     atomic.Int64 // sync_refresh_period, ns
	retries     atomic.Int32
	persistMode atomic.Bool
	version     atomic.Int32
	ports       atomic.Int32
}

// Defaults of the sync sysctls (include/net/ip_vs.h DEFAULT_SYNC_*).
const (
	DefaultSyncThreshold = 3
	DefaultSyncPeriod    = 50
	DefaultSyncVersion   = 1
)

func (s *syncConfig) init() {
	s.threshold.Store(DefaultSyncThreshold)
	s.period.Store(DefaultSyncPeriod)
	s.version.Store(DefaultSyncVersion)
	s.ports.Store(1)
}

// SetSyncSender starts (s non-nil) or stops sending connections to s.
func (t *Table) SetSyncSender(s SyncSender) {
	if s == nil {
		t.sync.sender.Store(nil)
		return
	}
	t.sync.sender.Store(&syncHolder{s})
}

// SyncThreshold is sync_threshold's first value: the packet count at which
// a connection is sent, and what a backup sets in_pkts to.
func (t *Table) SyncThreshold() int { return int(t.sync.threshold.Load()) }

// SyncVersion is sync_version.
func (t *Table) SyncVersion() int { return int(t.sync.version.Load()) }

// SyncPorts is sync_ports: how many ports (port+0...) the daemons use.
func (t *Table) SyncPorts() int { return int(t.sync.ports.Load()) }

// syncTick is the clock of sync_endtime: 2^22 ns, about 4 ms, a jiffy at
// HZ=250. 32 bits of it wrap after 208 days; only differences are used.
func syncTick(ns int64) uint32 { return uint32(ns >> 22) }

// syncIn is ip_vs_in_hook's end: count the client's packet and, on a
// master, sync the connection. Runs on the packet path.
func (t *Table) syncIn(c *Conn, now int64) {
	if c.hasFlag(flagFullNAT) {
		// The IPVS sync message has no field for the local tuple: a
		// backup cannot take a full-NAT connection over (DPVS syncs
		// them in its own format), so none is sent.
		return
	}
	h := t.sync.sender.Load()
	one := c.hasFlag(flagOnePacket)
	var pkts int
	if one {
		pkts = int(t.sync.threshold.Load())
	} else {
		pkts = int(c.inPkts.Add(1))
	}
	if h == nil {
		if one && c.control != nil {
			c.control.inPkts.Add(1)
		}
		return
	}
	t.syncConn(h, c, pkts, now)
}

// syncTemplate is ip_vs_conn_expire's expire_later: a template kept for its
// connections is sent again, with sync_threshold as its count.
func (t *Table) syncTemplate(ct *Conn, now int64) {
	if h := t.sync.sender.Load(); h != nil {
		t.syncConn(h, ct, int(t.sync.threshold.Load()), now)
	}
}

// syncConn is ip_vs_sync_conn and ip_vs_sync_conn_v0: send c if it is
// due, then its controlling template, whose count goes up by one each time.
func (t *Table) syncConn(h *syncHolder, c *Conn, pkts int, now int64) {
	v0 := t.sync.version.Load() == 0
	for {
		one := c.hasFlag(flagOnePacket)
		if v0 && (one || c.hasFlag(flag6)) {
			// Version 0 carries IPv4 only and returns before the
			// controller, as it does for a one-packet connection.
			return
		}
		if !one && t.syncNeeded(c, pkts, now) {
			h.s.Send(c)
		}
		c = c.control
		if c == nil {
			return
		}
		// A controller is always a template in tunvs.
		pkts = int(c.inPkts.Add(1))
	}
}

// syncNeeded is ip_vs_sync_conn_needed.
func (t *Table) syncNeeded(c *Conn, pkts int, now int64) bool {
	s := &t.sync
	orig := c.syncEnd.Load()
	to := c.timeout.Load()
	n := syncTick(now+to) &^ 3
	force := false
	rate := true
	switch {
	case c.Template():
	case s.persistMode.Load() && c.control != nil:
		// sync_persist_mode: connections under persistence are not
		// sent, their templates are (in_persistence).
		return false
	case c.Proto == ProtoTCP:
		st, old := c.state(), c.oldState()
		switch st {
		case StateEstablished, StateFinWait, StateClose, StateCloseWait, StateTimeWait:
		default:
			return false
		}
		force = st != old
		// A change into any of them but ESTABLISHED goes at once.
		rate = !(force && st != StateEstablished)
	}
	if rate {
		refresh := s.refresh.Load()
		if refresh > 0 {
			diff := int32(n - orig)
			minDiff := max(to>>1, int64(10*time.Second))
			lim := int64(min(refresh, minDiff) >> 22)
			if d := int64(diff); d < lim && -d < lim {
				retries := orig & 3
				if int32(retries) >= s.retries.Load() {
					return false
				}
				// time_before(now, orig - timeout + refresh/8)
				if int32(syncTick(now)-(orig-uint32(to>>22)+uint32((refresh>>3)>>22))) < 0 {
					return false
				}
				n |= retries + 1
			}
		}
		period := int(s.period.Load())
		thr := int(s.threshold.Load())
		if period > 0 {
			if !c.Template() && pkts%period != thr {
				return false
			}
		} else if refresh == 0 && pkts != thr {
			return false
		}
	}
	c.updateState(func(w uint32) uint32 { return w&^0xff00 | (w&0xff)<<8 })
	return c.syncEnd.CompareAndSwap(orig, n) || force
}

// SyncInfo is what a sync master sends of a connection besides its
// addresses and ports.
type SyncInfo struct {
	// State as listed: StateUDP for UDP, StateNone or StateAssured for
	// a template.
	State    State
	Inactive bool // IP_VS_CONN_F_INACTIVE
	Template bool // IP_VS_CONN_F_TEMPLATE
	Synced   bool // IP_VS_CONN_F_SYNC: made by a sync backup
	Timeout  time.Duration
	// Seq is the connection's sequence translation (synsync.go).
	Seq SyncSeq
}

// SyncInfo snapshots what the master sends of c.
func (c *Conn) SyncInfo() SyncInfo {
	si := SyncInfo{
		Template: c.Template(),
		Synced:   c.hasFlag(flagSynced),
		Timeout:  time.Duration(c.timeout.Load()),
	}
	if c.Template() {
		si.State = c.State()
		si.Inactive = true // templates are bound inactive and stay so
		return si
	}
	w := c.st.Load()
	si.State, si.Inactive = State(w), w&stInactive != 0
	c.syncSeq(&si.Seq)
	return si
}

// Synced reports whether the sync backup made c (IP_VS_CONN_F_SYNC).
func (c *Conn) Synced() bool { return c.hasFlag(flagSynced) }

// SyncedConn is a connection as a sync backup applies it: flags masked
// (IP_VS_CONN_F_BACKUP_MASK), state in nat's terms.
type SyncedConn struct {
	Proto               uint8
	CAddr, VAddr, DAddr netip.Addr
	CPort, VPort, DPort uint16
	Template            bool
	Inactive            bool
	// State: a TCP state, StateUDP, or for a template StateNone or
	// StateAssured.
	State State
	// Timeout from the message; 0 (version 0) takes the state's.
	Timeout time.Duration
	// Seq is the sequence translation the record carries (synsync.go).
	Seq SyncSeq
}

// ErrSyncRefused is wrapped by ApplySync's errors.
var ErrSyncRefused = fmt.Errorf("synced connection refused")

// ApplySync is ip_vs_proc_conn: create or update the connection s
// describes. A new one is bound to the local real server of the same
// virtual service and address, or, when there is none, to no server (it
// is still forwarded to its address, and counted nowhere). now is the
// table's clock.
func (t *Table) ApplySync(s *SyncedConn, now int64) error {
	if s.Proto != ProtoTCP && s.Proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %d", ErrSyncRefused, s.Proto)
	}
	if !s.CAddr.IsValid() || s.CAddr.Is4() != s.VAddr.Is4() || s.CAddr.Is4() != s.DAddr.Is4() {
		return fmt.Errorf("%w: addresses of mixed families", ErrSyncRefused)
	}
	switch {
	case s.Template:
		if s.State != StateNone && s.State != StateAssured {
			return fmt.Errorf("%w: template state %v", ErrSyncRefused, s.State)
		}
	case s.Proto == ProtoUDP:
		if s.State != StateUDP {
			return fmt.Errorf("%w: udp state %v", ErrSyncRefused, s.State)
		}
	case s.State >= numTCPStates:
		return fmt.Errorf("%w: tcp state %v", ErrSyncRefused, s.State)
	}
	if s.Template {
		return t.applySyncTemplate(s, now)
	}
	k := makeKey(s.Proto, s.CAddr, s.CPort, s.VAddr, s.VPort)
	c := t.in.get(&k)
	if c != nil && (c.DPort != s.DPort || c.DAddr() != s.DAddr) {
		if s.Inactive {
			// "the expiration message for the connection that was
			// already replaced": ignored.
			return nil
		}
		t.remove(c)
		c = nil
	}
	if c != nil && !c.syncSeqMatches(&s.Seq) {
		// A translation the connection was made without (or with
		// other numbers): it is made again with the record's, as
		// the translation is fixed once a connection is published.
		t.remove(c)
		c = nil
	}
	if c == nil {
		if t.n.Load() >= int64(t.cfg.MaxConns) {
			return t.syncFull()
		}
		c = t.newSynced(s)
		if mtu := t.cfg.EgressMTU; mtu != nil {
			c.initMTU(mtu(s.DAddr), mtu(s.CAddr))
		}
		t.syncTimeout(c, s, now)
		w0 := c.st.Load()
		if !t.insert(c) {
			// Made meanwhile by a packet or another message: update
			// that one instead.
			if c = t.in.get(&k); c == nil {
				return t.syncFull()
			}
		} else {
			// ip_vs_bind_dest of a synced connection keeps the
			// activity the master sent.
			c.dest.bindConn()
			if !s.Inactive {
				c.dest.active.Add(1)
			}
			c.halfOpenInserted(w0)
			return nil
		}
	}
	// An update: the activity flag, the state, the timer.
	old, _ := c.updateState(func(w uint32) uint32 {
		if w&stDead == 0 {
			w &^= stInactive
			if s.Inactive {
				w |= stInactive
			}
		}
		return w&^0xffff | uint32(s.State) | uint32(s.State)<<8
	})
	if old&stDead == 0 && (old&stInactive != 0) != s.Inactive {
		if s.Inactive {
			c.dest.active.Add(-1)
		} else {
			c.dest.active.Add(1)
		}
	}
	t.syncTimeout(c, s, now)
	return nil
}

// newSynced is ip_vs_conn_new for a synced connection or template, bound
// to the dest syncDest finds; not yet in the table.
func (t *Table) newSynced(s *SyncedConn) *Conn {
	d, svc := t.syncDest(s)
	c := &Conn{
		Proto: s.Proto,
		CPort: s.CPort, VPort: s.VPort, DPort: s.DPort,
		svc: svc, dest: d,
	}
	c.flags.Store(flagSynced)
	c.setAddrs(s.CAddr, s.VAddr, s.DAddr)
	st := s.State
	if s.Template {
		c.ext()
		c.setFlag(flagTemplate)
		st = StateNone // a template's state is its assured bit
	}
	// Templates are bound inactive and stay so.
	c.initState(st, s.Inactive || s.Template)
	if !s.Template {
		c.applySyncSeq(&s.Seq)
	}
	if d != nil {
		// ip_vs_bind_dest: a synced connection inherits the
		// forwarding method of the backup's own server.
		c.flags.Or(d.methodFlags())
	}
	return c
}

func (t *Table) syncFull() error {
	t.drops[DropTableFull].Add(1)
	return fmt.Errorf("%w: connection table full", ErrSyncRefused)
}

// syncTimeout sets in_pkts, the timeout and the expiry of a synced
// connection: the message's timeout, else the state's (a template's: 3
// minutes), as ip_vs_proc_conn.
func (t *Table) syncTimeout(c *Conn, s *SyncedConn, now int64) {
	c.inPkts.Store(uint32(t.sync.threshold.Load()))
	to := s.Timeout
	if to <= 0 {
		if s.Template {
			to = 3 * time.Minute
		} else {
			to = t.timeouts.Load()[s.State]
		}
	}
	c.timeout.Store(int64(to))
	c.expires.Store(now + int64(to))
}

// syncDest is ip_vs_find_dest: the real server daddr:dport of the service
// proto vaddr:vport (or the port-zero service), or, when there is none,
// the table's stand-in for "no server".
func (t *Table) syncDest(s *SyncedConn) (*Dest, *Service) {
	if svc := t.lookupService(s.Proto, s.VAddr, s.VPort); svc != nil {
		svc.mu.Lock()
		i := svc.findLocked(s.DAddr, s.DPort)
		var d *Dest
		if i >= 0 {
			d = svc.dests[i]
		}
		svc.mu.Unlock()
		if d != nil {
			return d, svc
		}
	}
	return t.unbound(), nil
}

// unbound is the dest of synced connections whose real server is not
// configured here (the kernel's cp->dest == NULL): they are forwarded to
// their address, their packets and connections counted in no listing.
func (t *Table) unbound() *Dest {
	if d := t.unboundDest.Load(); d != nil {
		return d
	}
	t.unboundDest.CompareAndSwap(nil, &Dest{})
	return t.unboundDest.Load()
}

func (t *Table) applySyncTemplate(s *SyncedConn, now int64) error {
	tk := makeKey(s.Proto, s.CAddr, s.CPort, s.VAddr, s.VPort)
	sh := tk.hash(t.tplSeed) & (shardCount - 1)
	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	ct := t.tpls[sh][tk]
	if ct == nil {
		if t.n.Load() >= int64(t.cfg.MaxConns) {
			return t.syncFull()
		}
		ct = t.newSynced(s)
		t.tpls[sh][tk] = ct
		t.n.Add(1)
		ct.dest.persist.Add(1)
	}
	if s.State == StateAssured {
		ct.setFlag(flagAssured)
	} else {
		ct.flags.And(^uint32(flagAssured))
	}
	t.syncTimeout(ct, s, now)
	return nil
}

func mtu16(m int) uint16 { return uint16(min(max(m, 0), 0xffff)) }
