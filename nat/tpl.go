package nat

import (
	"net/netip"
	"time"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// Scheduling of new connections with the kernel's persistence templates
// (ip_vs_core.c ip_vs_schedule and ip_vs_sched_persist, ip_vs_conn.c
// ip_vs_check_template and ip_vs_conn_expire).

// DefaultPersistTimeout is -p's timeout when none is given.
const DefaultPersistTimeout = rules.DefaultPersistTimeout

// templateRecheck is how much longer a template that still controls
// connections lives each time its timer runs out (ip_vs_conn_expire's
// expire_later: cp->timeout = 60*HZ). The kernel keeps that timeout for
// the template from then on, so later uses refresh it to 60 s, not to the
// persistence timeout; tunvs does the same.
const templateRecheck = 60 * time.Second

// ftpPort is FTPPORT: a persistent service on port 21 makes templates with
// virtual and real port 0, so that FTP data connections follow.
const ftpPort = 21

// ftpDataPort is FTPDATA: ip_vs_schedule never schedules a packet whose
// client port is 20.
const ftpDataPort = 20

// invalidPort is the port an invalidated template is rehashed and listed
// with (ip_vs_check_template).
const invalidPort = 0xffff

// schedResult is what scheduling a new connection decided.
type schedResult struct {
	d     *Dest
	dport uint16
	ct    *Conn // the controlling template, its nControl already counted
	ops   bool  // IP_VS_CONN_F_ONE_PACKET
	full  bool  // no room for the template
}

// schedule picks the real server for a new connection, under the service
// lock as the kernel's schedulers run.
func (t *Table) schedule(svc *Service, p *Packet, src, dst netip.Addr, now int64) schedResult {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	cfg := &svc.cfg
	sr := schedResult{ops: cfg.OnePacket && p.Proto == ProtoUDP}
	svc.flow = sched.Flow{Proto: p.Proto, Src: src, SrcPort: p.SrcPort, Dst: dst, DstPort: p.DstPort, Now: now}
	if cfg.Persistent {
		t.schedPersistLocked(svc, p, src, dst, now, &sr)
		return sr
	}
	if p.DstPort != svc.Port {
		// A port-zero service schedules only when persistent
		// ("Schedule: port zero only supported in persistent
		// services"); the packet is answered as without a server.
		return sr
	}
	d := svc.pickLocked()
	if d == nil {
		return sr
	}
	sr.d = d
	sr.dport = d.Port
	if sr.dport == 0 {
		sr.dport = p.DstPort
	}
	return sr
}

// schedPersistLocked is ip_vs_sched_persist; svc.mu is held.
func (t *Table) schedPersistLocked(svc *Service, p *Packet, src, dst netip.Addr, now int64, sr *schedResult) {
	cfg := &svc.cfg
	snet := src
	if bits := cfg.PersistMaskBits; bits > 0 && bits < src.BitLen() {
		pf, _ := src.Prefix(bits)
		snet = pf.Addr()
	}
	// The template's key: <proto, client network, 0, VIP, vport>. vport
	// is the service's port, except for FTP (port 21) and for a
	// port-zero service, whose templates cover every port: 0.
	var vport uint16
	if p.DstPort == svc.Port && svc.Port != ftpPort {
		vport = p.DstPort
	}
	tk := makeKey(p.Proto, snet, 0, dst, vport)
	sh := tk.hash(t.tplSeed) & (shardCount - 1)

	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	ct := t.tpls[sh][tk]
	if ct != nil && !t.checkTemplateLocked(ct) {
		ct = nil
	}
	var d *Dest
	if ct == nil {
		d = svc.pickLocked()
		if d == nil {
			return
		}
		if t.n.Load() >= int64(t.cfg.MaxConns) {
			sr.full = true
			return
		}
		var tdport uint16
		if p.DstPort == svc.Port && svc.Port != ftpPort {
			tdport = d.Port
		}
		to := cfg.PersistTimeout
		if to <= 0 {
			to = DefaultPersistTimeout
		}
		ct = &Conn{
			Proto: p.Proto,
			VPort: vport, DPort: tdport,
			svc: svc, dest: d,
			x: new(connExt),
		}
		ct.setAddrs(snet, dst, d.Addr)
		ct.setFlag(flagTemplate)
		ct.initState(StateNone, true)
		ct.timeout.Store(int64(to))
		t.tpls[sh][tk] = ct
		t.n.Add(1)
		d.persist.Add(1)
	} else {
		d = ct.dest
	}
	// ip_vs_control_add, then ip_vs_conn_put(ct) restarts the template's
	// timer with its timeout.
	ct.x.nControl.Add(1)
	ct.expires.Store(now + ct.timeout.Load())
	sr.ct = ct
	sr.d = d
	sr.dport = p.DstPort
	if sr.dport == svc.Port && d.Port != 0 {
		sr.dport = d.Port
	}
}

// checkTemplateLocked is ip_vs_check_template without a dest to compare:
// a template whose real server was removed, or has weight 0 while
// expire_quiescent_template is on, is invalidated: unhashed (rehashed with
// ports 0xffff, so no lookup finds it) and left to expire on its timer,
// which is not restarted. t.tplMu is held.
func (t *Table) checkTemplateLocked(ct *Conn) bool {
	d := ct.dest
	if !d.removed.Load() && !(t.expireQuiesTpl.Load() && d.weight.Load() == 0) {
		return true
	}
	tk := ct.inKey()
	sh := tk.hash(t.tplSeed) & (shardCount - 1)
	if t.tpls[sh][tk] == ct {
		delete(t.tpls[sh], tk)
		ct.setFlag(flagInvalid)
		t.stale[ct] = struct{}{}
	}
	return false
}

// expireTemplateLocked runs a template's timer (ip_vs_conn_expire): while
// it controls connections it lives on, 60 s at a time; then it goes.
// t.tplMu is held. It reports whether the template was removed.
func (t *Table) expireTemplateLocked(ct *Conn, now int64) bool {
	if ct.x.nControl.Load() > 0 {
		ct.timeout.Store(int64(templateRecheck))
		ct.expires.Store(now + int64(templateRecheck))
		// expire_later tells the backups the template lives on.
		t.syncTemplate(ct, now)
		return false
	}
	t.dropTemplateLocked(ct)
	return true
}

// dropTemplateLocked takes a template out of the table; t.tplMu is held.
func (t *Table) dropTemplateLocked(ct *Conn) {
	if ct.hasFlag(flagInvalid) {
		if _, ok := t.stale[ct]; !ok {
			return
		}
		delete(t.stale, ct)
	} else {
		tk := ct.inKey()
		sh := tk.hash(t.tplSeed) & (shardCount - 1)
		if t.tpls[sh][tk] != ct {
			return
		}
		delete(t.tpls[sh], tk)
	}
	ct.updateState(func(w uint32) uint32 { return w | stDead })
	t.n.Add(-1)
	ct.dest.persist.Add(-1)
}

// sweepTemplates expires the templates of one shard (and, with shard 0,
// the invalidated ones).
func (t *Table) sweepTemplates(i uint32, now int64) int {
	n := 0
	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	for _, ct := range t.tpls[i] {
		if ct.expires.Load() <= now && t.expireTemplateLocked(ct, now) {
			n++
		}
	}
	if i == 0 {
		for ct := range t.stale {
			if ct.expires.Load() <= now && t.expireTemplateLocked(ct, now) {
				n++
			}
		}
	}
	return n
}

// templates returns a snapshot of every template, live or invalidated.
func (t *Table) templates() []*Conn {
	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	var cs []*Conn
	for i := range t.tpls {
		for _, ct := range t.tpls[i] {
			cs = append(cs, ct)
		}
	}
	for ct := range t.stale {
		cs = append(cs, ct)
	}
	return cs
}

// expireNodestConns is ip_vs_expire_nodest_conn_flush, which the kernel
// queues when a real server is removed while expire_nodest_conn is on:
// every connection of a removed server goes, then every template of one
// that controls nothing any more.
func (t *Table) expireNodestConns() {
	if !t.expireNodest.Load() {
		return
	}
	for i := range t.in.shards {
		s := &t.in.shards[i]
		var dead []*Conn
		s.mu.RLock()
		for _, c := range s.cs {
			if c != nil && c.dest.removed.Load() {
				dead = append(dead, c)
			}
		}
		s.mu.RUnlock()
		for _, c := range dead {
			t.remove(c)
		}
	}
	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	var dead []*Conn
	for i := range t.tpls {
		for _, ct := range t.tpls[i] {
			if ct.dest.removed.Load() && ct.x.nControl.Load() == 0 {
				dead = append(dead, ct)
			}
		}
	}
	for ct := range t.stale {
		if ct.dest.removed.Load() && ct.x.nControl.Load() == 0 {
			dead = append(dead, ct)
		}
	}
	for _, ct := range dead {
		t.dropTemplateLocked(ct)
	}
}

// ExpireDest removes at once every connection bound to d, and then the
// persistence templates of d that control nothing any more, and returns
// how many connections went. Health checking calls it for a failed server
// when told to (like expire_nodest_conn, for a server that is down rather
// than removed), so that UDP flows move instead of blackholing.
func (t *Table) ExpireDest(d *Dest) int {
	n := 0
	for i := range t.in.shards {
		s := &t.in.shards[i]
		var dead []*Conn
		s.mu.RLock()
		for _, c := range s.cs {
			if c != nil && c.dest == d {
				dead = append(dead, c)
			}
		}
		s.mu.RUnlock()
		for _, c := range dead {
			if t.remove(c) {
				n++
			}
		}
	}
	t.tplMu.Lock()
	defer t.tplMu.Unlock()
	var dead []*Conn
	for i := range t.tpls {
		for _, ct := range t.tpls[i] {
			if ct.dest == d && ct.x.nControl.Load() == 0 {
				dead = append(dead, ct)
			}
		}
	}
	for ct := range t.stale {
		if ct.dest == d && ct.x.nControl.Load() == 0 {
			dead = append(dead, ct)
		}
	}
	for _, ct := range dead {
		t.dropTemplateLocked(ct)
	}
	return n
}
