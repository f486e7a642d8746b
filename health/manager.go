package health

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/internal/clock"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// ConnExpirer drops every connection bound to a real server at once, so
// that the next packet of each flow is scheduled again: *nat.Table's
// ExpireDest, which New uses unless Options names another (tests do).
type ConnExpirer interface {
	ExpireDest(d *nat.Dest) int
}

// Options are what a Manager acts on.
type Options struct {
	Table *nat.Table
	// Stack is the director's gVisor stack (netstack.Host.Stack()): the
	// checks leave from it.
	Stack *stack.Stack
	// Expirer, for services with Expire; nil: the Table, if it can.
	Expirer ConnExpirer
	Log     zerolog.Logger
	// OnEvent, if set, is called (from the checking goroutine) with
	// every event after it is logged. It must not block.
	OnEvent func(Event)
	// Clock schedules the checks (warm-up, interval) and stamps events
	// and state changes; nil is the real clock. A check's own Timeout is
	// a real deadline whatever the clock: it bounds network I/O and a
	// process, which run on real time.
	Clock clock.Clock
}

// EventType is what happened.
type EventType string

// Events.
const (
	EventDown       EventType = "down"        // a server failed Fall checks in a row
	EventUp         EventType = "up"          // a server passed Rise checks in a row
	EventWeight     EventType = "weight"      // a dynamic misc check changed the weight
	EventQuorumLost EventType = "quorum_lost" // the service's live weight fell below quorum
	EventQuorumUp   EventType = "quorum_up"   // and came back
	EventError      EventType = "error"       // the NAT refused a change
)

// Event is a state change.
type Event struct {
	Time    time.Time
	Type    EventType
	Service string         // "TCP 172.16.1.100:80"
	Server  netip.AddrPort // zero for quorum events
	Check   Kind
	Weight  int    // the weight set (down: 0, or removed: -1)
	Reason  string // the last check's error, for down
}

// Counters count checks and transitions since New.
type Counters struct {
	Checks     atomic.Uint64
	Failures   atomic.Uint64
	Downs      atomic.Uint64
	Ups        atomic.Uint64
	QuorumLost atomic.Uint64
	QuorumUp   atomic.Uint64
	Expired    atomic.Uint64 // connections dropped by Expire
	NATErrors  atomic.Uint64
}

// Manager runs the checks of a Config against a NAT table.
type Manager struct {
	opts  Options
	log   zerolog.Logger
	svcs  []*svcState
	Stats Counters

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type svcState struct {
	m    *Manager
	cfg  ServiceConfig
	name string

	mu          sync.Mutex // serialises state and NAT changes of the service
	servers     []*serverState
	quorumUp    bool
	sorryOn     bool
	aliveWeight int
	// parked are the live servers taken out of the pool while the sorry
	// server stands in for them (keepalived's perform_quorum_state), with
	// what they come back with.
	parked map[netip.AddrPort]rules.Server
}

type serverState struct {
	svc    *svcState
	addr   netip.AddrPort // the dest's address:port in the table
	target netip.AddrPort // what is checked
	check  Check
	prober prober

	// under svc.mu
	up         bool
	okRun      int
	failRun    int
	weight     int // to restore on recovery (the configured weight)
	dynWeight  int // from a dynamic misc check, -1: none
	uthresh    int
	lthresh    int
	lastErr    string
	lastCheck  time.Time
	lastChange time.Time
	checks     uint64
	failures   uint64
	downs      uint64
	ups        uint64
}

// New checks cfg against the table's rules (rules.Rules.ValidateChecks:
// every service and named real server must exist) and prepares the
// checks; Start runs them.
func New(cfg Config, o Options) (*Manager, error) {
	if o.Table == nil || o.Stack == nil {
		return nil, errors.New("health: Options needs Table and Stack")
	}
	r := o.Table.Rules()
	if err := r.ValidateChecks(cfg); err != nil {
		return nil, err
	}
	o.Clock = clock.Or(o.Clock)
	m := &Manager{opts: o, log: o.Log.With().Str("component", "health").Logger()}
	for _, sc := range cfg.Services {
		name := svcName(sc.Proto, sc.VIP)
		svc := r.Service(svcKey(sc))
		if sc.Quorum == 0 {
			sc.Quorum = 1
		}
		if sc.SorryWeight == 0 {
			sc.SorryWeight = 1
		}
		if sc.Expire && o.Expirer == nil {
			e, ok := any(o.Table).(ConnExpirer)
			if !ok {
				return nil, cfgErr("%s: expire needs nat.Table.ExpireDest, which this build does not have", name)
			}
			m.opts.Expirer = e
		}
		st := &svcState{m: m, cfg: sc, name: name, quorumUp: true}
		add := func(addr netip.AddrPort, c Check) {
			// Validated above: no error.
			c, target, _ := sc.ServerCheck(addr, c)
			if c.Kind == KindNone {
				return
			}
			d := svc.Server(addr)
			st.servers = append(st.servers, &serverState{
				svc: st, addr: addr, target: target, check: c, up: true,
				weight: d.Weight, dynWeight: -1, uthresh: d.UThreshold, lthresh: d.LThreshold,
				prober: newProber(o.Stack, name, target, c),
			})
		}
		named := map[netip.AddrPort]bool{}
		for _, s := range sc.Servers {
			named[s.Addr] = true
			var c Check
			if s.Check != nil {
				c = *s.Check
			}
			add(s.Addr, c)
		}
		if sc.Default != nil {
			for _, d := range svc.Servers {
				if !named[d.Addr] {
					add(d.Addr, Check{})
				}
			}
		}
		m.svcs = append(m.svcs, st)
	}
	return m, nil
}

func svcKey(sc ServiceConfig) nat.ServiceKey {
	return nat.ServiceKey{Proto: sc.Proto, Addr: sc.VIP.Addr(), Port: sc.VIP.Port()}
}

func findDest(s *nat.Service, a netip.AddrPort) *nat.Dest {
	for _, d := range s.Dests() {
		if d.AddrPort() == a {
			return d
		}
	}
	return nil
}

// Start runs the checks: one goroutine per checked server. Servers with
// StartDown are taken out of the pool first. A Manager runs once: after
// Stop, make a new one (a reload is Stop, Restore, New, Start). The real
// servers checked are those configured and, with a service Default, those
// the service had when New ran; one added later by tunvsadm -a is not
// checked until the next New.
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return
	}
	m.started = true
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, st := range m.svcs {
		st.mu.Lock()
		st.unpark()
		for _, ss := range st.servers {
			if ss.check.StartDown {
				ss.setDown("starts down (alpha)")
			}
		}
		st.updateQuorum()
		st.mu.Unlock()
		for _, ss := range st.servers {
			m.wg.Add(1)
			go ss.loop(ctx)
		}
	}
	m.log.Info().Int("services", len(m.svcs)).Int("servers", m.numServers()).Msg("health checks started")
}

func (m *Manager) numServers() int {
	n := 0
	for _, st := range m.svcs {
		n += len(st.servers)
	}
	return n
}

// Stop stops every check and waits for them. The NAT stays as the checks
// left it (see Restore). Stop may be called more than once.
func (m *Manager) Stop() {
	m.mu.Lock()
	cancel := m.cancel
	m.cancel = nil
	m.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	m.wg.Wait()
	m.log.Info().Msg("health checks stopped")
}

// Restore puts the table back as configured: failed servers get their
// weight back or are added again, the sorry server is removed. Call it
// after Stop when health checking is turned off.
func (m *Manager) Restore() {
	for _, st := range m.svcs {
		st.mu.Lock()
		for _, ss := range st.servers {
			if !ss.up {
				ss.restore()
				ss.up = true
			}
		}
		if st.sorryOn {
			st.delSorry()
		}
		st.quorumUp = true
		st.mu.Unlock()
	}
}

func (ss *serverState) loop(ctx context.Context) {
	defer ss.svc.m.wg.Done()
	clk := ss.svc.m.opts.Clock
	t := clk.NewTimer(ss.check.Warmup)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		start := clk.Now()
		cctx, cancel := context.WithTimeout(ctx, ss.check.Timeout)
		r := ss.prober.probe(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		ss.svc.record(ss, r, start)
		t.Reset(max(0, ss.check.Interval-clk.Now().Sub(start)))
	}
}

// record applies one check's result.
func (st *svcState) record(ss *serverState, r result, at time.Time) {
	m := st.m
	m.Stats.Checks.Add(1)
	st.mu.Lock()
	defer st.mu.Unlock()
	ss.checks++
	ss.lastCheck = at
	if r.err != nil {
		m.Stats.Failures.Add(1)
		ss.failures++
		ss.lastErr = r.err.Error()
		ss.okRun = 0
		ss.failRun++
		if ss.up && ss.failRun >= ss.check.Fall {
			ss.setDown(ss.lastErr)
			st.updateQuorum()
		} else if ss.up {
			m.log.Debug().Str("service", st.name).Stringer("server", ss.addr).Str("check", string(ss.check.Kind)).
				Int("failures", ss.failRun).Int("fall", ss.check.Fall).Err(r.err).Msg("check failed")
		}
		return
	}
	ss.lastErr = ""
	ss.failRun = 0
	ss.okRun++
	if !ss.up {
		if r.weight >= 0 {
			ss.dynWeight = min(r.weight, nat.MaxWeight)
		}
		if ss.okRun >= ss.check.Rise {
			ss.setUp()
			st.updateQuorum()
		}
		return
	}
	if r.weight >= 0 && min(r.weight, nat.MaxWeight) != ss.dynWeight {
		ss.dynWeight = min(r.weight, nat.MaxWeight)
		if ss.edit(ss.dynWeight) {
			st.event(Event{Type: EventWeight, Server: ss.addr, Check: ss.check.Kind, Weight: ss.dynWeight})
		}
		st.updateQuorum()
	}
}

func (st *svcState) natService() *nat.Service {
	return st.m.opts.Table.Service(svcKey(st.cfg))
}

// change makes one change to the service's servers through the table's
// writer lock. f sees the service's real server addr as the table has it
// now (nil: none) and returns the change to make, or none; what it reads
// and what it changes are one step, so a tunvsadm command or a reload
// cannot come between them.
func (st *svcState) change(addr netip.AddrPort, f func(cur *rules.Server) (rules.Change, bool)) error {
	return st.m.opts.Table.Update(func(tx *nat.Tx) error {
		r := tx.Rules()
		svc := r.Service(svcKey(st.cfg))
		if svc == nil {
			return nat.ErrNoService
		}
		c, ok := f(svc.Server(addr))
		if !ok {
			return nil
		}
		c.Service = rules.Service{ServiceKey: svc.ServiceKey}
		if err := tx.Apply(rules.Diff{c}); err != nil {
			return errors.Unwrap(err) // the *rules.ChangeError's reason
		}
		return nil
	})
}

// setDown takes the server out of the pool; st.mu held.
func (ss *serverState) setDown(reason string) {
	st := ss.svc
	ss.up = false
	ss.lastChange = st.m.opts.Clock.Now()
	ss.downs++
	st.m.Stats.Downs.Add(1)
	w := -1
	if p, ok := st.parked[ss.addr]; ok {
		// Out of the pool already, behind the sorry server: it stays
		// out when the quorum comes back.
		delete(st.parked, ss.addr)
		if ss.dynWeight < 0 {
			ss.weight = p.Weight
		}
		ss.uthresh, ss.lthresh = p.UThreshold, p.LThreshold
		st.event(Event{Type: EventDown, Server: ss.addr, Check: ss.check.Kind, Weight: w, Reason: reason})
		return
	}
	// The dest, for Expire, is found first: once removed it is no
	// longer in the service's list.
	var d *nat.Dest
	if svc := st.natService(); svc != nil {
		d = findDest(svc, ss.addr)
	}
	what := "remove"
	err := st.change(ss.addr, func(cur *rules.Server) (rules.Change, bool) {
		if cur == nil {
			what = "find"
			return rules.Change{}, false
		}
		if ss.dynWeight < 0 {
			// The weight to come back with is the one it has now
			// (tunvsadm -e may have changed it since the start).
			ss.weight = cur.Weight
		}
		ss.uthresh, ss.lthresh = cur.UThreshold, cur.LThreshold
		if st.cfg.OnFail == Inhibit {
			what = "set weight"
			s := *cur
			s.Weight = 0
			return rules.Change{Kind: rules.EditServer, Server: s}, true
		}
		return rules.Change{Kind: rules.DelServer, Server: *cur}, true
	})
	switch {
	case errors.Is(err, nat.ErrNoService) || err == nil && what == "find":
		what = "find"
		st.natError(ss.addr, what, nat.ErrNoDest)
	case err != nil:
		st.natError(ss.addr, what, err)
	case st.cfg.OnFail == Inhibit:
		w = 0
	}
	if what != "find" && d != nil && st.cfg.Expire && st.m.opts.Expirer != nil {
		n := st.m.opts.Expirer.ExpireDest(d)
		st.m.Stats.Expired.Add(uint64(n))
		st.m.log.Info().Str("service", st.name).Stringer("server", ss.addr).Int("conns", n).Msg("connections expired")
	}
	st.event(Event{Type: EventDown, Server: ss.addr, Check: ss.check.Kind, Weight: w, Reason: reason})
}

// setUp puts it back; st.mu held.
func (ss *serverState) setUp() {
	st := ss.svc
	ss.up = true
	ss.lastChange = st.m.opts.Clock.Now()
	ss.ups++
	st.m.Stats.Ups.Add(1)
	var w int
	if st.sorryOn {
		// The sorry server stands in for the pool: the server waits
		// beside it until the quorum is back (keepalived leaves the
		// pool alone while quorum is lost, perform_svr_state).
		w = ss.weight
		if ss.dynWeight >= 0 {
			w = ss.dynWeight
		}
		if st.parked == nil {
			st.parked = map[netip.AddrPort]rules.Server{}
		}
		// An inhibited server stays in the table at weight 0 until
		// then, as keepalived leaves it.
		st.parked[ss.addr] = rules.Server{Addr: ss.addr, Weight: w, UThreshold: ss.uthresh, LThreshold: ss.lthresh}
	} else {
		w = ss.restore()
	}
	st.event(Event{Type: EventUp, Server: ss.addr, Check: ss.check.Kind, Weight: w})
}

// restore gives the dest its weight back or adds it again.
func (ss *serverState) restore() int {
	st := ss.svc
	w := ss.weight
	if ss.dynWeight >= 0 {
		w = ss.dynWeight
	}
	what := "add"
	err := st.change(ss.addr, func(cur *rules.Server) (rules.Change, bool) {
		s := rules.Server{Addr: ss.addr, Weight: w, UThreshold: ss.uthresh, LThreshold: ss.lthresh}
		if cur != nil {
			what = "set weight"
			return rules.Change{Kind: rules.EditServer, Server: s}, true
		}
		return rules.Change{Kind: rules.AddServer, Server: s}, true
	})
	if err != nil {
		if errors.Is(err, nat.ErrNoService) {
			what = "restore"
		}
		st.natError(ss.addr, what, err)
		if what != "set weight" {
			return -1
		}
	}
	return w
}

// edit sets the server's weight, keeping its thresholds.
func (ss *serverState) edit(w int) bool {
	err := ss.svc.change(ss.addr, func(cur *rules.Server) (rules.Change, bool) {
		return rules.Change{Kind: rules.EditServer, Server: rules.Server{Addr: ss.addr, Weight: w,
			UThreshold: ss.uthresh, LThreshold: ss.lthresh}}, true
	})
	if err != nil {
		ss.svc.natError(ss.addr, "set weight", err)
		return false
	}
	return true
}

func (st *svcState) natError(a netip.AddrPort, what string, err error) {
	st.m.Stats.NATErrors.Add(1)
	st.event(Event{Type: EventError, Server: a, Reason: what + ": " + err.Error()})
}

// updateQuorum compares the live weight with the quorum; st.mu held.
func (st *svcState) updateQuorum() {
	svc := st.natService()
	if svc == nil {
		return
	}
	sum := 0
	for _, d := range svc.Dests() {
		if st.sorryOn && d.AddrPort() == st.cfg.Sorry {
			continue
		}
		sum += d.Weight()
	}
	for _, s := range st.parked {
		sum += s.Weight
	}
	st.aliveWeight = sum
	switch {
	case st.quorumUp && sum < st.cfg.Quorum-st.cfg.Hysteresis:
		st.quorumUp = false
		st.m.Stats.QuorumLost.Add(1)
		st.event(Event{Type: EventQuorumLost, Weight: sum})
		if st.cfg.Sorry.IsValid() && !st.sorryOn {
			err := st.change(st.cfg.Sorry, func(*rules.Server) (rules.Change, bool) {
				return rules.Change{Kind: rules.AddServer, Server: rules.Server{Addr: st.cfg.Sorry, Method: st.cfg.SorryMethod, Tun: st.cfg.SorryTun, Weight: st.cfg.SorryWeight}}, true
			})
			if err != nil {
				st.natError(st.cfg.Sorry, "add sorry server", err)
			} else {
				st.sorryOn = true
				st.m.log.Warn().Str("service", st.name).Stringer("sorry", st.cfg.Sorry).Msg("sorry server in")
				st.park()
			}
		}
	case !st.quorumUp && sum >= st.cfg.Quorum+st.cfg.Hysteresis:
		st.quorumUp = true
		st.m.Stats.QuorumUp.Add(1)
		st.event(Event{Type: EventQuorumUp, Weight: sum})
		if st.sorryOn {
			st.unpark()
			st.delSorry()
		}
	}
}

// park takes the live servers out of the pool once the sorry server is
// in: it stands in for the whole pool, as keepalived's does
// (check/ipwrapper.c, update_quorum_state: "Removing alive servers from
// the pool", perform_quorum_state). A server that failed and was inhibited
// (weight 0) stays, as keepalived leaves a server that is not alive.
// st.mu held.
func (st *svcState) park() {
	svc := st.natService()
	if svc == nil {
		return
	}
	alive := map[netip.AddrPort]bool{}
	for _, d := range svc.Dests() {
		a := d.AddrPort()
		if a == st.cfg.Sorry {
			continue
		}
		alive[a] = true
		for _, ss := range st.servers {
			if ss.addr == a && !ss.up {
				alive[a] = false
			}
		}
	}
	for a, ok := range alive {
		if !ok {
			continue
		}
		var parked rules.Server
		err := st.change(a, func(cur *rules.Server) (rules.Change, bool) {
			if cur == nil {
				return rules.Change{}, false
			}
			parked = *cur
			return rules.Change{Kind: rules.DelServer, Server: *cur}, true
		})
		if err != nil {
			st.natError(a, "park", err)
			continue
		}
		if parked.Addr.IsValid() {
			if st.parked == nil {
				st.parked = map[netip.AddrPort]rules.Server{}
			}
			st.parked[a] = parked
		}
	}
	if len(st.parked) > 0 {
		st.m.log.Warn().Str("service", st.name).Int("servers", len(st.parked)).Msg("live servers out while the sorry server is in")
	}
}

// unpark puts the parked servers back (keepalived: "Adding alive servers
// to the pool"), before the sorry server leaves. st.mu held.
func (st *svcState) unpark() {
	for a, s := range st.parked {
		err := st.change(a, func(cur *rules.Server) (rules.Change, bool) {
			if cur != nil {
				// Inhibited (weight 0) while it waited, or added
				// back by hand: its weight back.
				return rules.Change{Kind: rules.EditServer, Server: s}, true
			}
			return rules.Change{Kind: rules.AddServer, Server: s}, true
		})
		if err != nil {
			st.natError(a, "unpark", err)
		}
	}
	st.parked = nil
}

func (st *svcState) delSorry() {
	err := st.change(st.cfg.Sorry, func(cur *rules.Server) (rules.Change, bool) {
		// Already gone (tunvsadm -d): nothing to do.
		return rules.Change{Kind: rules.DelServer, Server: rules.Server{Addr: st.cfg.Sorry}}, cur != nil
	})
	if err != nil {
		st.natError(st.cfg.Sorry, "remove sorry server", err)
		return
	}
	st.sorryOn = false
	st.m.log.Info().Str("service", st.name).Stringer("sorry", st.cfg.Sorry).Msg("sorry server out")
}

// event logs an event and hands it to OnEvent.
func (st *svcState) event(e Event) {
	e.Time = st.m.opts.Clock.Now()
	e.Service = st.name
	l := st.m.log
	var ev *zerolog.Event
	switch e.Type {
	case EventDown, EventError:
		ev = l.Warn()
	case EventQuorumLost:
		ev = l.Error()
	default:
		ev = l.Info()
	}
	ev = ev.Str("event", string(e.Type)).Str("service", e.Service)
	if e.Server.IsValid() {
		ev = ev.Stringer("server", e.Server).Str("check", string(e.Check))
	}
	switch e.Type {
	case EventDown:
		ev = ev.Str("reason", e.Reason).Str("on_fail", st.cfg.OnFail.String())
		if e.Weight >= 0 {
			ev = ev.Int("weight", e.Weight)
		}
	case EventUp, EventWeight:
		ev = ev.Int("weight", e.Weight)
	case EventQuorumLost, EventQuorumUp:
		ev = ev.Int("live_weight", e.Weight).Int("quorum", st.cfg.Quorum)
	case EventError:
		ev = ev.Str("reason", e.Reason)
	}
	ev.Msg("health " + string(e.Type))
	if f := st.m.opts.OnEvent; f != nil {
		f(e)
	}
}

// ServerStatus is one checked real server's state.
type ServerStatus struct {
	Service    string
	Server     netip.AddrPort
	Target     netip.AddrPort // what the check connects to
	Check      Kind
	Up         bool
	Weight     int // restored on recovery (the configured weight, or the dynamic one)
	FailRun    int // failures in a row
	OKRun      int // successes in a row
	Checks     uint64
	Failures   uint64
	Downs      uint64
	Ups        uint64
	LastError  string
	LastCheck  time.Time
	LastChange time.Time
}

// ServiceStatus is one service's state.
type ServiceStatus struct {
	Service     string
	OnFail      OnFail
	QuorumUp    bool
	LiveWeight  int
	Quorum      int
	SorryActive bool
	Servers     []ServerStatus
}

// Snapshot returns the state of every service and checked server.
func (m *Manager) Snapshot() []ServiceStatus {
	var out []ServiceStatus
	for _, st := range m.svcs {
		st.mu.Lock()
		s := ServiceStatus{Service: st.name, OnFail: st.cfg.OnFail, QuorumUp: st.quorumUp,
			LiveWeight: st.aliveWeight, Quorum: st.cfg.Quorum, SorryActive: st.sorryOn}
		for _, ss := range st.servers {
			w := ss.weight
			if ss.dynWeight >= 0 {
				w = ss.dynWeight
			}
			s.Servers = append(s.Servers, ServerStatus{
				Service: st.name, Server: ss.addr, Target: ss.target, Check: ss.check.Kind, Up: ss.up,
				Weight: w, FailRun: ss.failRun, OKRun: ss.okRun, Checks: ss.checks, Failures: ss.failures,
				Downs: ss.downs, Ups: ss.ups, LastError: ss.lastErr, LastCheck: ss.lastCheck, LastChange: ss.lastChange,
			})
		}
		st.mu.Unlock()
		sort.Slice(s.Servers, func(i, j int) bool {
			return s.Servers[i].Server.Compare(s.Servers[j].Server) < 0
		})
		out = append(out, s)
	}
	return out
}

// Server returns one server's state.
func (m *Manager) Server(proto uint8, vip, server netip.AddrPort) (ServerStatus, bool) {
	name := svcName(proto, vip)
	for _, s := range m.Snapshot() {
		if s.Service != name {
			continue
		}
		for _, ss := range s.Servers {
			if ss.Server == server {
				return ss, true
			}
		}
	}
	return ServerStatus{}, false
}
