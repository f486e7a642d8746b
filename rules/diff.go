package rules

import (
	"fmt"
	"net/netip"
	"slices"
)

// ChangeKind is what one Change does.
type ChangeKind uint8

// The changes, one per ipvsadm command that changes the configuration.
const (
	AddService  ChangeKind = iota + 1 // -A
	EditService                       // -E
	DelService                        // -D
	Clear                             // -C
	AddServer                         // -a
	EditServer                        // -e
	DelServer                         // -d
	SetSysctl                         // a /proc/sys/net/ipv4/vs knob
	SetTimeouts                       // --set, --state-timeout
	// Zero zeroes counters (-Z): not configuration, but a rules file or
	// a batch may hold it between changes, so it is applied in order.
	Zero
	// AddLocalAddr and DelLocalAddr add or remove a full-NAT local
	// address of a service (DPVS's --add-laddr, --del-laddr). EditService
	// leaves the local addresses alone, as -E does.
	AddLocalAddr
	DelLocalAddr
)

var kindNames = [...]string{AddService: "add service", EditService: "edit service", DelService: "delete service",
	Clear: "clear", AddServer: "add server", EditServer: "edit server", DelServer: "delete server",
	SetSysctl: "set sysctl", SetTimeouts: "set timeouts", Zero: "zero",
	AddLocalAddr: "add local address", DelLocalAddr: "delete local address"}

func (k ChangeKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("change %d", k)
}

// Change is one step of a Diff.
type Change struct {
	Kind ChangeKind
	// Service is the service's key for every kind but Clear, SetSysctl
	// and SetTimeouts (Zero: a zero key zeroes everything), and its whole
	// configuration for AddService and EditService (Servers unused).
	Service Service
	// Server is the real server of AddServer, EditServer, DelServer.
	Server Server
	// Sysctl and Value for SetSysctl.
	Sysctl string
	Value  int
	// Timeouts for SetTimeouts: only the states given change.
	Timeouts Timeouts
	// LocalAddr for AddLocalAddr and DelLocalAddr.
	LocalAddr netip.Addr
	// Line is the rules file line the change came from (0: none).
	Line int
}

// Diff is a list of changes, applied in order and as a whole.
type Diff []Change

// ChangeError is a refused Diff: the change at Index (in the Diff), and
// why.
type ChangeError struct {
	Index int
	Kind  ChangeKind
	Line  int
	Err   error
}

func (e *ChangeError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("change %d (%v): %v", e.Index+1, e.Kind, e.Err)
}

func (e *ChangeError) Unwrap() error { return e.Err }

// Next is r with d applied: the plain-data counterpart of
// nat.Table.Apply, and the one place a change's preconditions (the
// service exists, the server does not yet, ...) and contents are
// checked. r is not changed. A refused change is a *ChangeError. It
// costs O(len(r) + len(d)): a 100,000-line rules file is not quadratic.
func (r Rules) Next(d Diff) (Rules, error) {
	w := newWorking(r)
	for i, c := range d {
		if err := w.apply(c); err != nil {
			return r, &ChangeError{Index: i, Kind: c.Kind, Line: c.Line, Err: err}
		}
	}
	return w.rules(), nil
}

// ordered is a map that remembers the order keys were added in; a key
// deleted and added again goes to the end.
type ordered[K comparable, V any] struct {
	keys []K
	vals map[K]*V
	pos  map[K]int
}

func newOrdered[K comparable, V any](n int) ordered[K, V] {
	return ordered[K, V]{vals: make(map[K]*V, n), pos: make(map[K]int, n)}
}

func (o *ordered[K, V]) get(k K) *V { return o.vals[k] }

func (o *ordered[K, V]) add(k K, v V) {
	o.pos[k] = len(o.keys)
	o.keys = append(o.keys, k)
	o.vals[k] = &v
}

func (o *ordered[K, V]) del(k K) { delete(o.vals, k) }

func (o *ordered[K, V]) each(f func(*V)) {
	for i, k := range o.keys {
		if v, ok := o.vals[k]; ok && o.pos[k] == i {
			f(v)
		}
	}
}

type workingService struct {
	Service // Servers unused: see servers
	servers ordered[netip.AddrPort, Server]
}

// working is Rules being changed by Next, indexed.
type working struct {
	r    Rules // everything but Services
	svcs ordered[ServiceKey, workingService]
}

func newWorking(r Rules) *working {
	w := &working{r: r.Clone(), svcs: newOrdered[ServiceKey, workingService](len(r.Services))}
	for _, s := range r.Services {
		w.addService(s)
	}
	w.r.Services = nil
	return w
}

func (w *working) addService(s Service) {
	ws := workingService{Service: s, servers: newOrdered[netip.AddrPort, Server](len(s.Servers))}
	for _, d := range s.Servers {
		ws.servers.add(d.Addr, d)
	}
	ws.Servers = nil
	w.svcs.add(s.ServiceKey, ws)
}

func (w *working) rules() Rules {
	r := w.r
	r.Services = make([]Service, 0, len(w.svcs.vals))
	w.svcs.each(func(ws *workingService) {
		s := ws.Service
		s.Servers = make([]Server, 0, len(ws.servers.vals))
		ws.servers.each(func(d *Server) { s.Servers = append(s.Servers, *d) })
		r.Services = append(r.Services, s)
	})
	return r
}

func (w *working) apply(c Change) error {
	k := c.Service.ServiceKey
	svc := w.svcs.get(k)
	switch c.Kind {
	case AddService, EditService:
		if c.Kind == AddService && svc != nil {
			return fmt.Errorf("%w: %s", ErrServiceExists, serviceName(k))
		}
		if c.Kind == EditService && svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		if err := ValidService(&c.Service); err != nil {
			return err
		}
		s := c.Service
		s.Servers = nil
		if svc == nil {
			w.addService(s)
			return nil
		}
		s.LocalAddrs = svc.LocalAddrs
		svc.Service = s
	case AddLocalAddr, DelLocalAddr:
		if svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		i := slices.Index(svc.LocalAddrs, c.LocalAddr)
		switch {
		case c.Kind == AddLocalAddr && i >= 0:
			return fmt.Errorf("%w: %v", ErrLocalAddrExists, c.LocalAddr)
		case c.Kind == AddLocalAddr:
			if err := ValidLocalAddr(&svc.Service, c.LocalAddr); err != nil {
				return err
			}
			svc.LocalAddrs = append(slices.Clip(svc.LocalAddrs), c.LocalAddr)
		case i < 0:
			return fmt.Errorf("%w: %v", ErrNoLocalAddr, c.LocalAddr)
		default:
			svc.LocalAddrs = slices.Delete(slices.Clone(svc.LocalAddrs), i, i+1)
		}
	case DelService:
		if svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		w.svcs.del(k)
	case Clear:
		w.svcs = newOrdered[ServiceKey, workingService](0)
	case AddServer, EditServer, DelServer:
		if svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		if c.Kind != DelServer {
			if err := ValidServer(k, &c.Server); err != nil {
				return err
			}
		}
		old := svc.servers.get(c.Server.Addr)
		switch {
		case c.Kind == AddServer && old != nil:
			return fmt.Errorf("%w: %v", ErrDestExists, c.Server.Addr)
		case c.Kind != AddServer && old == nil:
			return fmt.Errorf("%w: %v", ErrNoDest, c.Server.Addr)
		case c.Kind == AddServer:
			svc.servers.add(c.Server.Addr, c.Server)
		case c.Kind == EditServer:
			*old = c.Server
		default:
			svc.servers.del(c.Server.Addr)
		}
	case SetSysctl:
		if err := validSysctl(c.Sysctl, c.Value); err != nil {
			return err
		}
		if w.r.Sysctls == nil {
			w.r.Sysctls = map[string]int{}
		}
		w.r.Sysctls[c.Sysctl] = c.Value
	case SetTimeouts:
		for st, d := range c.Timeouts {
			if err := validTimeout(st, d); err != nil {
				return err
			}
		}
		if w.r.Timeouts == nil {
			w.r.Timeouts = Timeouts{}
		}
		for st, d := range c.Timeouts {
			w.r.Timeouts[st] = d
		}
	case Zero:
		if k != (ServiceKey{}) && svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
	default:
		return fmt.Errorf("%w: %v", ErrInvalid, c.Kind)
	}
	return nil
}

// Diff returns the changes that take old (r) to new: services and real
// servers removed, added, or edited where they differ. Servers new to a
// service are added in new's order (oldest first), so the table's list
// order, and with it the schedulers' choices, is the one new gives.
// Sysctls and timeouts that new sets and old has otherwise are set; those
// new does not name are left as they are (a rules file without `--set`
// keeps the running timeouts, as ipvsadm -R does). The checks are not
// part of the table: the caller restarts them.
func (old Rules) Diff(new Rules) Diff {
	var out Diff
	oldSvcs, newSvcs := old.index(), new.index()
	for _, s := range old.Services {
		if newSvcs[s.ServiceKey] == nil {
			out = append(out, Change{Kind: DelService, Service: bare(s)})
		}
	}
	for _, ws := range new.Services {
		hs := oldSvcs[ws.ServiceKey]
		if hs == nil {
			out = append(out, Change{Kind: AddService, Service: bare(ws), Line: ws.Line})
			for _, d := range ws.Servers {
				out = append(out, Change{Kind: AddServer, Service: key(ws), Server: d, Line: d.Line})
			}
			continue
		}
		if !sameService(hs, &ws) {
			out = append(out, Change{Kind: EditService, Service: bare(ws), Line: ws.Line})
		}
		for _, a := range hs.LocalAddrs {
			if !slices.Contains(ws.LocalAddrs, a) {
				out = append(out, Change{Kind: DelLocalAddr, Service: key(ws), LocalAddr: a, Line: ws.Line})
			}
		}
		for _, a := range ws.LocalAddrs {
			if !slices.Contains(hs.LocalAddrs, a) {
				out = append(out, Change{Kind: AddLocalAddr, Service: key(ws), LocalAddr: a, Line: ws.Line})
			}
		}
		hd, wd := hs.index(), ws.index()
		for _, d := range hs.Servers {
			if wd[d.Addr] == nil {
				out = append(out, Change{Kind: DelServer, Service: key(ws), Server: d})
			}
		}
		for _, d := range ws.Servers {
			o := hd[d.Addr]
			switch {
			case o == nil:
				out = append(out, Change{Kind: AddServer, Service: key(ws), Server: d, Line: d.Line})
			case !sameServer(o, &d):
				out = append(out, Change{Kind: EditServer, Service: key(ws), Server: d, Line: d.Line})
			}
		}
	}
	for _, sc := range SysctlTable {
		v, ok := new.Sysctls[sc.Name]
		if ok && v != old.sysctl(sc) {
			out = append(out, Change{Kind: SetSysctl, Sysctl: sc.Name, Value: v})
		}
	}
	var to Timeouts
	for _, st := range StateNames {
		if d, ok := new.Timeouts[st]; ok && d != old.Timeouts[st] {
			if to == nil {
				to = Timeouts{}
			}
			to[st] = d
		}
	}
	if to != nil {
		out = append(out, Change{Kind: SetTimeouts, Timeouts: to})
	}
	return out
}

func (r *Rules) index() map[ServiceKey]*Service {
	m := make(map[ServiceKey]*Service, len(r.Services))
	for i := range r.Services {
		m[r.Services[i].ServiceKey] = &r.Services[i]
	}
	return m
}

func (s *Service) index() map[netip.AddrPort]*Server {
	m := make(map[netip.AddrPort]*Server, len(s.Servers))
	for i := range s.Servers {
		m[s.Servers[i].Addr] = &s.Servers[i]
	}
	return m
}

func (r *Rules) sysctl(s Sysctl) int {
	if v, ok := r.Sysctls[s.Name]; ok {
		return v
	}
	return s.Default
}

func bare(s Service) Service {
	s.Servers = nil
	return s
}

func key(s Service) Service { return Service{ServiceKey: s.ServiceKey} }

// sameService compares what -E changes (not the local addresses: see
// AddLocalAddr). Persistence settings count only with -p, as ipvsadm
// sends them only then.
func sameService(a, b *Service) bool {
	if a.SchedulerName() != b.SchedulerName() || a.SchedFlags != b.SchedFlags ||
		a.Persistent != b.Persistent || a.OnePacket != b.OnePacket || a.ProxyProtocol != b.ProxyProtocol ||
		a.SynProxy != b.SynProxy {
		return false
	}
	if !a.Persistent {
		return true
	}
	return persistTimeout(a) == persistTimeout(b) && maskBits(a) == maskBits(b)
}

func persistTimeout(s *Service) int64 {
	if s.PersistTimeout == 0 {
		return int64(DefaultPersistTimeout)
	}
	return int64(s.PersistTimeout)
}

func maskBits(s *Service) int {
	if s.PersistMaskBits == 0 {
		return s.Addr.BitLen()
	}
	return s.PersistMaskBits
}

func sameServer(a, b *Server) bool {
	return a.Method == b.Method && a.Tun == b.Tun && a.Weight == b.Weight && a.UThreshold == b.UThreshold && a.LThreshold == b.LThreshold &&
		a.ProxyProtocol == b.ProxyProtocol
}
