package rules

import (
	"fmt"
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
)

var kindNames = [...]string{AddService: "add service", EditService: "edit service", DelService: "delete service",
	Clear: "clear", AddServer: "add server", EditServer: "edit server", DelServer: "delete server",
	SetSysctl: "set sysctl", SetTimeouts: "set timeouts", Zero: "zero"}

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
// checked. r is not changed. A refused change is a *ChangeError.
func (r Rules) Next(d Diff) (Rules, error) {
	n := r.Clone()
	for i, c := range d {
		if err := n.apply(c); err != nil {
			return r, &ChangeError{Index: i, Kind: c.Kind, Line: c.Line, Err: err}
		}
	}
	return n, nil
}

func (r *Rules) apply(c Change) error {
	k := c.Service.ServiceKey
	svc := r.Service(k)
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
		if svc == nil {
			s := c.Service
			s.Servers = nil
			r.Services = append(r.Services, s)
			return nil
		}
		servers := svc.Servers
		*svc = c.Service
		svc.Servers = servers
	case DelService:
		if svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		r.Services = slices.DeleteFunc(r.Services, func(s Service) bool { return s.ServiceKey == k })
	case Clear:
		r.Services = nil
	case AddServer, EditServer, DelServer:
		if svc == nil {
			return fmt.Errorf("%w: %s", ErrNoService, serviceName(k))
		}
		if c.Kind != DelServer {
			if err := ValidServer(k, &c.Server); err != nil {
				return err
			}
		}
		old := svc.Server(c.Server.Addr)
		switch {
		case c.Kind == AddServer && old != nil:
			return fmt.Errorf("%w: %v", ErrDestExists, c.Server.Addr)
		case c.Kind != AddServer && old == nil:
			return fmt.Errorf("%w: %v", ErrNoDest, c.Server.Addr)
		case c.Kind == AddServer:
			svc.Servers = append(svc.Servers, c.Server)
		case c.Kind == EditServer:
			*old = c.Server
		default:
			svc.Servers = slices.DeleteFunc(svc.Servers, func(s Server) bool { return s.Addr == c.Server.Addr })
		}
	case SetSysctl:
		if err := validSysctl(c.Sysctl, c.Value); err != nil {
			return err
		}
		if r.Sysctls == nil {
			r.Sysctls = map[string]int{}
		}
		r.Sysctls[c.Sysctl] = c.Value
	case SetTimeouts:
		for st, d := range c.Timeouts {
			if err := validTimeout(st, d); err != nil {
				return err
			}
		}
		if r.Timeouts == nil {
			r.Timeouts = Timeouts{}
		}
		for st, d := range c.Timeouts {
			r.Timeouts[st] = d
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
	for _, s := range old.Services {
		if new.Service(s.ServiceKey) == nil {
			out = append(out, Change{Kind: DelService, Service: bare(s)})
		}
	}
	for _, ws := range new.Services {
		hs := old.Service(ws.ServiceKey)
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
		for _, d := range hs.Servers {
			if ws.Server(d.Addr) == nil {
				out = append(out, Change{Kind: DelServer, Service: key(ws), Server: d})
			}
		}
		for _, d := range ws.Servers {
			o := hs.Server(d.Addr)
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

// sameService compares what -E changes. Persistence settings count only
// with -p, as ipvsadm sends them only then.
func sameService(a, b *Service) bool {
	if a.SchedulerName() != b.SchedulerName() || a.SchedFlags != b.SchedFlags ||
		a.Persistent != b.Persistent || a.OnePacket != b.OnePacket || !slices.Equal(a.LocalAddrs, b.LocalAddrs) {
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
	return a.Method == b.Method && a.Weight == b.Weight && a.UThreshold == b.UThreshold && a.LThreshold == b.LThreshold
}
