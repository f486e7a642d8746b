package nat

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// DefaultScheduler is ipvsadm's default.
const DefaultScheduler = rules.DefaultScheduler

// The table's configuration changes only through Apply (or Update), under
// cfgMu, the table's writer lock: tunvsadm commands, rules files,
// reloads and the health checks all take it here, so no change
// interleaves with another.
//
// The lock order, cfgMu first, is written in doc.go. The packet path
// takes no configuration lock: it reads the service index through an
// atomic pointer, and takes Service.mu only to schedule a new connection.

// Tx is the table under its writer lock, for the duration of an Update.
type Tx struct {
	t    *Table
	done bool
}

// Update runs f with the table's writer lock held: what f reads through
// tx (Rules) stays true for every Apply f makes. f must not keep tx.
func (t *Table) Update(f func(tx *Tx) error) error {
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	tx := &Tx{t: t}
	defer func() { tx.done = true }()
	return f(tx)
}

// Apply applies d as a whole under the writer lock (see Tx.Apply).
func (t *Table) Apply(d rules.Diff) error {
	return t.Update(func(tx *Tx) error { return tx.Apply(d) })
}

// Rules is the table's configuration now.
func (t *Table) Rules() rules.Rules {
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	return t.rulesLocked()
}

// Rules is the table's configuration now.
func (tx *Tx) Rules() rules.Rules {
	tx.check()
	return tx.t.rulesLocked()
}

func (tx *Tx) check() {
	if tx.done {
		panic("nat: Tx used after its Update returned")
	}
}

// Apply applies d to the table. The whole of d is checked first, against
// the configuration as it is (rules.Rules.Next: the same checks as
// Validate), and every scheduler it needs is made; only then is anything
// changed, and nothing after that point can fail. So a refused diff
// leaves the table as it was, by construction, and the error is a
// *rules.ChangeError naming the change.
func (tx *Tx) Apply(d rules.Diff) error {
	tx.check()
	t := tx.t
	if _, err := t.rulesLocked().Next(d); err != nil {
		return err
	}
	scheds := make([]sched.Scheduler, len(d))
	for i, c := range d {
		if dr := t.cfg.DirectRoute; dr != nil && c.Server.Method == rules.Route &&
			(c.Kind == rules.AddServer || c.Kind == rules.EditServer) {
			if err := dr(c.Server.Addr.Addr()); err != nil {
				return &rules.ChangeError{Index: i, Kind: c.Kind, Line: c.Line, Err: err}
			}
		}
		if c.Kind == rules.AddService || c.Kind == rules.EditService {
			sc, err := sched.NewWithFlags(c.Service.SchedulerName(), c.Service.SchedFlags)
			if err != nil {
				// Next made the same scheduler; unreachable unless
				// sched changes under us.
				return &rules.ChangeError{Index: i, Kind: c.Kind, Line: c.Line, Err: err}
			}
			scheds[i] = sc
		}
	}
	w := t.writer()
	for i, c := range d {
		w.apply(c, scheds[i])
	}
	w.publish()
	return nil
}

// writer changes the table for Tx.Apply: it works on a copy of the service
// index, published once at the end, so a batch of N services costs one
// copy, not N, and the packet path sees the batch's services appear
// together.
type writer struct {
	t      *Table
	idx    *svcIndex
	copied bool
	expire bool // a server was removed: expire_nodest_conn may flush
}

func (t *Table) writer() *writer { return &writer{t: t, idx: t.svcs.Load()} }

func (w *writer) own() *svcIndex {
	if w.copied {
		return w.idx
	}
	old := w.idx
	idx := &svcIndex{
		byKey: make(map[svcKey]*Service, len(old.byKey)+1),
		order: append([]*Service(nil), old.order...),
	}
	for k, v := range old.byKey {
		idx.byKey[k] = v
	}
	w.idx, w.copied = idx, true
	return idx
}

func (w *writer) publish() {
	// A server added or removed changes the own addresses without
	// copying the index: they are rebuilt on every change.
	idx := w.own()
	idx.vips = make(map[[16]byte]struct{}, len(idx.order))
	for _, s := range idx.order {
		idx.vips[s.Addr.As16()] = struct{}{}
	}
	idx.own = w.t.ownAddrs(idx)
	w.t.svcs.Store(idx)
	if w.expire {
		w.t.expireNodestConns()
	}
}

// apply makes one change the diff's check allowed; it cannot fail.
func (w *writer) apply(c rules.Change, sc sched.Scheduler) {
	t := w.t
	k := makeSvcKey(c.Service.Proto, c.Service.Addr, c.Service.Port)
	s := w.idx.byKey[k]
	switch c.Kind {
	case rules.AddService:
		s = &Service{Proto: c.Service.Proto, Addr: c.Service.Addr, Port: c.Service.Port, sched: sc,
			cfg: serviceConfig(c.Service)}
		s.updateLocked()
		s.setLocalAddrs(s.cfg.LocalAddrs)
		s.proxy.Store(uint32(s.cfg.ProxyProtocol))
		s.synProxy.Store(s.cfg.SynProxy)
		idx := w.own()
		idx.byKey[k] = s
		idx.order = append(idx.order, s)
	case rules.EditService:
		// Connections keep their real servers; templates already made
		// keep theirs until they expire. A new scheduler is made when
		// the name or the -b flags change (the kernel's schedulers read
		// the flags at each decision, so a flag change takes effect at
		// once; a scheduler that ignores the flags starts afresh).
		s.mu.Lock()
		old := s.cfg
		laddrs := s.cfg.LocalAddrs
		s.cfg = serviceConfig(c.Service)
		s.cfg.LocalAddrs = laddrs // -E keeps them: see rules.AddLocalAddr
		s.proxy.Store(uint32(s.cfg.ProxyProtocol))
		s.synProxy.Store(s.cfg.SynProxy)
		if s.sched.Name() != sc.Name() || old.SchedFlags != s.cfg.SchedFlags {
			s.sched = sc
			s.updateLocked()
		}
		s.mu.Unlock()
	case rules.DelService:
		// Its real servers are removed with it, so their connections are
		// treated as DelDest says.
		idx := w.own()
		delete(idx.byKey, k)
		for i, o := range idx.order {
			if o == s {
				idx.order = append(idx.order[:i:i], idx.order[i+1:]...)
				break
			}
		}
		w.trashAll(s)
	case rules.Clear:
		idx := w.own()
		for _, s := range idx.order {
			w.trashAll(s)
		}
		clear(idx.byKey)
		idx.order = nil
	case rules.AddServer:
		w.addDest(s, c.Server)
	case rules.EditServer:
		// Weight 0 quiesces the server: no new connections, existing
		// ones continue. A change of -x/-y re-evaluates the overload
		// flag against the current connections, as __ip_vs_update_dest
		// does.
		s.mu.Lock()
		d := s.dests[s.findLocked(c.Server.Addr.Addr(), c.Server.Addr.Port())]
		d.weight.Store(int32(c.Server.Weight))
		d.setMethod(c.Server)
		d.proxy.Store(uint32(c.Server.ProxyProtocol))
		d.setThresholds(c.Server.UThreshold, c.Server.LThreshold)
		s.updateLocked()
		s.mu.Unlock()
	case rules.DelServer:
		// What happens to its connections is Linux 6.1's (ip_vs_in_hook):
		// with expire_nodest_conn=0, the default, they stay in the table
		// until they time out, the real server's replies still get
		// through, but every packet from the client side is dropped
		// (DropDestUnavailable). With expire_nodest_conn they are all
		// expired at once (ip_vs_expire_nodest_conn_flush), and a packet
		// that still finds one is scheduled again.
		s.mu.Lock()
		i := s.findLocked(c.Server.Addr.Addr(), c.Server.Addr.Port())
		t.trashDest(s.dests[i])
		s.dests = append(s.dests[:i:i], s.dests[i+1:]...)
		s.updateLocked()
		s.mu.Unlock()
		w.expire = true
	case rules.AddLocalAddr, rules.DelLocalAddr:
		// Connections keep their local address and port; a removed
		// address takes no new ones (DPVS's dp_vs_laddr_del).
		s.mu.Lock()
		if c.Kind == rules.AddLocalAddr {
			s.cfg.LocalAddrs = append(slices.Clip(s.cfg.LocalAddrs), c.LocalAddr)
		} else {
			s.cfg.LocalAddrs = slices.DeleteFunc(slices.Clone(s.cfg.LocalAddrs), func(a netip.Addr) bool { return a == c.LocalAddr })
		}
		s.setLocalAddrs(s.cfg.LocalAddrs)
		s.mu.Unlock()
	case rules.SetSysctl:
		sysctlOf(c.Sysctl).set(t, c.Value)
	case rules.SetTimeouts:
		to := t.Timeouts()
		for i, name := range rules.StateNames {
			if d, ok := c.Timeouts[name]; ok {
				to[i] = d
			}
		}
		t.timeouts.Store(&to)
	case rules.Zero:
		if s == nil {
			for _, s := range w.idx.order {
				s.zero()
			}
			return
		}
		s.zero()
	}
}

func (w *writer) trashAll(s *Service) {
	s.mu.Lock()
	for _, d := range s.dests {
		w.t.trashDest(d)
	}
	s.mu.Unlock()
	w.expire = true
}

// addDest adds a real server at the head of the service's list, as the
// kernel's list_add. A server removed from a service of the same
// protocol, address and port and still in the trash (see trash.go) is
// revived, with its connections and counts.
func (w *writer) addDest(s *Service, c rules.Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := w.t.reviveDest(s, c.Addr.Addr(), c.Addr.Port())
	if d != nil {
		if d.svc.Load() != s {
			// Revived into a new service of the same address:
			// __ip_vs_update_dest zeroes its counters.
			d.Stats.Zero()
			d.svc.Store(s)
		}
	} else {
		d = &Dest{Addr: c.Addr.Addr(), Port: c.Addr.Port(), vkey: makeSvcKey(s.Proto, s.Addr, s.Port)}
		d.svc.Store(s)
	}
	d.weight.Store(int32(c.Weight))
	d.setMethod(c)
	d.proxy.Store(uint32(c.ProxyProtocol))
	d.setThresholds(c.UThreshold, c.LThreshold)
	d.removed.Store(false)
	s.dests = append([]*Dest{d}, s.dests...)
	s.updateLocked()
}

func (s *Service) zero() {
	s.Stats.Zero()
	for _, d := range s.Dests() {
		d.Stats.Zero()
	}
}

// rulesLocked is the configuration now; cfgMu held.
func (t *Table) rulesLocked() rules.Rules {
	idx := t.svcs.Load()
	r := rules.Rules{Services: make([]rules.Service, 0, len(idx.order))}
	for _, s := range idx.order {
		rs := s.Config().rule()
		ds := s.Dests()
		rs.Servers = make([]rules.Server, len(ds))
		for i, d := range ds {
			// The table's list is newest first; the rules', oldest.
			rs.Servers[len(ds)-1-i] = d.rule()
		}
		r.Services = append(r.Services, rs)
	}
	r.Sysctls = make(map[string]int, len(rules.SysctlTable))
	for _, sc := range rules.SysctlTable {
		r.Sysctls[sc.Name] = sysctlOf(sc.Name).get(t)
	}
	to := t.Timeouts()
	r.Timeouts = make(rules.Timeouts, len(to))
	for i, d := range to {
		r.Timeouts[rules.StateNames[i]] = d
	}
	return r
}

func (d *Dest) rule() rules.Server {
	e, _ := d.Encap()
	return rules.Server{Addr: d.AddrPort(), Method: d.Method(), Tun: e, Weight: d.Weight(),
		UThreshold: d.UThreshold(), LThreshold: d.LThreshold(), ProxyProtocol: d.ProxyProtocol()}
}

// rule is c as the rules package has it.
func (c ServiceConfig) rule() rules.Service {
	return rules.Service{ServiceKey: ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port},
		Scheduler: c.Scheduler, SchedFlags: c.SchedFlags, Persistent: c.Persistent,
		PersistTimeout: c.PersistTimeout, PersistMaskBits: c.PersistMaskBits, OnePacket: c.OnePacket,
		SynProxy: c.SynProxy, LocalAddrs: slices.Clone(c.LocalAddrs), ProxyProtocol: c.ProxyProtocol}
}

func serviceConfig(r rules.Service) ServiceConfig {
	return ServiceConfig{Proto: r.Proto, Addr: r.Addr, Port: r.Port, Scheduler: r.Scheduler,
		SchedFlags: r.SchedFlags, Persistent: r.Persistent, PersistTimeout: r.PersistTimeout,
		PersistMaskBits: r.PersistMaskBits, OnePacket: r.OnePacket, LocalAddrs: slices.Clone(r.LocalAddrs),
		ProxyProtocol: r.ProxyProtocol, SynProxy: r.SynProxy}
}

func (c DestConfig) rule() rules.Server {
	return rules.Server{Addr: netip.AddrPortFrom(c.Addr, c.Port), Method: c.Method, Tun: c.Tun, Weight: c.Weight,
		UThreshold: c.UThreshold, LThreshold: c.LThreshold, ProxyProtocol: c.ProxyProtocol}
}

// The calls below are ipvsadm's commands one at a time: each is a diff of
// one change. Errors are the rules package's sentinels, unwrapped from the
// *rules.ChangeError.

func (t *Table) apply1(c rules.Change) error {
	err := t.Apply(rules.Diff{c})
	if ce, ok := err.(*rules.ChangeError); ok {
		return ce.Err
	}
	return err
}

// AddService adds a virtual service (ipvsadm -A).
func (t *Table) AddService(c ServiceConfig) (*Service, error) {
	if err := t.apply1(rules.Change{Kind: rules.AddService, Service: c.rule()}); err != nil {
		return nil, err
	}
	return t.Service(ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}), nil
}

// EditService changes a service's scheduler, its flags, persistence and
// one-packet scheduling (ipvsadm -E).
func (t *Table) EditService(c ServiceConfig) error {
	return t.apply1(rules.Change{Kind: rules.EditService, Service: c.rule()})
}

// DelService removes a service (ipvsadm -D). Its real servers are removed
// with it (see DelDest).
func (t *Table) DelService(k ServiceKey) error {
	return t.apply1(rules.Change{Kind: rules.DelService, Service: rules.Service{ServiceKey: k}})
}

// Clear removes every service (ipvsadm -C).
func (t *Table) Clear() { _ = t.apply1(rules.Change{Kind: rules.Clear}) }

// Service finds a service by its key.
func (t *Table) Service(k ServiceKey) *Service {
	return t.svcs.Load().byKey[makeSvcKey(k.Proto, k.Addr, k.Port)]
}

// Services returns the services in the order they were added.
func (t *Table) Services() []*Service {
	return append([]*Service(nil), t.svcs.Load().order...)
}

// AddDest adds a real server to a service (ipvsadm -a), at the head of its
// list; one still in the trash is revived.
func (t *Table) AddDest(k ServiceKey, c DestConfig) (*Dest, error) {
	if err := t.apply1(rules.Change{Kind: rules.AddServer, Service: rules.Service{ServiceKey: k}, Server: c.rule()}); err != nil {
		return nil, err
	}
	s := t.Service(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.findLocked(c.Addr, c.Port); i >= 0 {
		return s.dests[i], nil
	}
	// Changed again between the Apply and now.
	return nil, fmt.Errorf("%w: %v", ErrNoDest, netip.AddrPortFrom(c.Addr, c.Port))
}

// EditDest changes a real server's weight and thresholds (ipvsadm -e).
func (t *Table) EditDest(k ServiceKey, c DestConfig) error {
	return t.apply1(rules.Change{Kind: rules.EditServer, Service: rules.Service{ServiceKey: k}, Server: c.rule()})
}

// DelDest removes real server d from a service (ipvsadm -d).
func (t *Table) DelDest(k ServiceKey, d netip.AddrPort) error {
	return t.apply1(rules.Change{Kind: rules.DelServer, Service: rules.Service{ServiceKey: k},
		Server: rules.Server{Addr: d}})
}

// Zero zeroes the counters of every service and real server (ipvsadm -Z).
func (t *Table) Zero() { _ = t.apply1(rules.Change{Kind: rules.Zero}) }

// SetTimeouts changes the timeouts, like `ipvsadm --set tcp tcpfin udp`
// (zero leaves a value as it is). Existing connections take the new value
// at their next packet, as in the kernel.
func (t *Table) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	to := rules.Timeouts{}
	for name, d := range map[string]time.Duration{rules.TimeoutTCP: tcp, rules.TimeoutTCPFin: tcpfin, rules.TimeoutUDP: udp} {
		if d > 0 {
			to[name] = d
		}
	}
	if len(to) > 0 {
		_ = t.apply1(rules.Change{Kind: rules.SetTimeouts, Timeouts: to})
	}
}
