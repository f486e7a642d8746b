package nat

import (
	"fmt"
	"math"
	"net/netip"

	"github.com/tunvs/tunvs/sched"
)

// DefaultScheduler is ipvsadm's default.
const DefaultScheduler = "wlc"

func (c *ServiceConfig) validate() error {
	if c.Proto != ProtoTCP && c.Proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %d (tcp or udp)", ErrInvalid, c.Proto)
	}
	if !c.Addr.IsValid() || c.Addr.Zone() != "" {
		return fmt.Errorf("%w: service address %v", ErrInvalid, c.Addr)
	}
	if c.PersistTimeout < 0 {
		return fmt.Errorf("%w: persistence timeout %v", ErrInvalid, c.PersistTimeout)
	}
	if c.PersistMaskBits < 0 || c.PersistMaskBits > c.Addr.BitLen() {
		return fmt.Errorf("%w: persistence netmask /%d", ErrInvalid, c.PersistMaskBits)
	}
	return nil
}

func (c *DestConfig) validate(svc netip.Addr) error {
	if !c.Addr.IsValid() || c.Addr.Zone() != "" {
		return fmt.Errorf("%w: real server address %v", ErrInvalid, c.Addr)
	}
	if c.Addr.Is4() != svc.Is4() {
		// IPVS allows mixed families only for tunnel mode.
		return fmt.Errorf("%w: real server %v is not of the service's address family", ErrInvalid, c.Addr)
	}
	if err := validWeight(c.Weight); err != nil {
		return err
	}
	// ip_vs_add_dest / ip_vs_edit_dest: ERANGE and EINVAL.
	if c.UThreshold < 0 || c.LThreshold < 0 || c.UThreshold > math.MaxInt32 {
		return fmt.Errorf("%w: connection thresholds %d/%d", ErrInvalid, c.UThreshold, c.LThreshold)
	}
	if c.LThreshold > c.UThreshold {
		return fmt.Errorf("%w: lower threshold is higher than upper threshold", ErrInvalid)
	}
	return nil
}

// mutate copies the service index, lets f change the copy and publishes it.
// f runs under cfgMu; an error leaves everything as it was.
func (t *Table) mutate(f func(idx *svcIndex) error) error {
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	old := t.svcs.Load()
	idx := &svcIndex{
		byKey: make(map[svcKey]*Service, len(old.byKey)+1),
		vips:  make(map[[16]byte]struct{}, len(old.vips)+1),
		order: append([]*Service(nil), old.order...),
	}
	for k, v := range old.byKey {
		idx.byKey[k] = v
	}
	if err := f(idx); err != nil {
		return err
	}
	for _, s := range idx.order {
		idx.vips[s.Addr.As16()] = struct{}{}
	}
	t.svcs.Store(idx)
	return nil
}

// AddService adds a virtual service (ipvsadm -A).
func (t *Table) AddService(c ServiceConfig) (*Service, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	name := c.Scheduler
	if name == "" {
		name = DefaultScheduler
	}
	sc, err := sched.NewWithFlags(name, c.SchedFlags)
	if err != nil {
		return nil, err
	}
	svc := &Service{Proto: c.Proto, Addr: c.Addr, Port: c.Port, sched: sc, cfg: c}
	svc.updateLocked()
	err = t.mutate(func(idx *svcIndex) error {
		k := makeSvcKey(c.Proto, c.Addr, c.Port)
		if idx.byKey[k] != nil {
			return fmt.Errorf("%w: %s %v", ErrServiceExists, ProtoName(c.Proto), svc.AddrPort())
		}
		idx.byKey[k] = svc
		idx.order = append(idx.order, svc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return svc, nil
}

// Service finds a service by its protocol, address and port.
func (t *Table) Service(proto uint8, a netip.Addr, port uint16) *Service {
	return t.svcs.Load().byKey[makeSvcKey(proto, a, port)]
}

func (t *Table) mustService(proto uint8, a netip.Addr, port uint16) (*Service, error) {
	s := t.Service(proto, a, port)
	if s == nil {
		return nil, fmt.Errorf("%w: %s %v", ErrNoService, ProtoName(proto), netip.AddrPortFrom(a, port))
	}
	return s, nil
}

// EditService changes a service's scheduler, its flags, persistence and
// one-packet scheduling (ipvsadm -E). Connections keep their real servers;
// templates already made keep theirs until they expire. A new scheduler is
// made when the name or the -b flags change (the kernel's schedulers read
// the flags at each decision, so a flag change takes effect at once; a
// scheduler that ignores the flags starts afresh).
func (t *Table) EditService(c ServiceConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	s, err := t.mustService(c.Proto, c.Addr, c.Port)
	if err != nil {
		return err
	}
	name := c.Scheduler
	if name == "" {
		name = DefaultScheduler
	}
	sc, err := sched.NewWithFlags(name, c.SchedFlags)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cfg
	s.cfg = c
	if s.sched.Name() != name || old.SchedFlags != c.SchedFlags {
		s.sched = sc
		s.updateLocked()
	}
	return nil
}

// DelService removes a service (ipvsadm -D). Its real servers are removed
// with it, so their connections are treated as DelDest says: they stay
// until they expire (client packets dropped, replies passed), unless
// expire_nodest_conn is on.
func (t *Table) DelService(proto uint8, a netip.Addr, port uint16) error {
	defer t.expireNodestConns()
	return t.mutate(func(idx *svcIndex) error {
		k := makeSvcKey(proto, a, port)
		s := idx.byKey[k]
		if s == nil {
			return fmt.Errorf("%w: %s %v", ErrNoService, ProtoName(proto), netip.AddrPortFrom(a, port))
		}
		delete(idx.byKey, k)
		for i, o := range idx.order {
			if o == s {
				idx.order = append(idx.order[:i], idx.order[i+1:]...)
				break
			}
		}
		s.mu.Lock()
		for _, d := range s.dests {
			t.trashDest(d)
		}
		s.mu.Unlock()
		return nil
	})
}

// Clear removes every service (ipvsadm -C).
func (t *Table) Clear() {
	defer t.expireNodestConns()
	_ = t.mutate(func(idx *svcIndex) error {
		for _, s := range idx.order {
			s.mu.Lock()
			for _, d := range s.dests {
				t.trashDest(d)
			}
			s.mu.Unlock()
		}
		clear(idx.byKey)
		idx.order = nil
		return nil
	})
}

// Services returns the services in the order they were added.
func (t *Table) Services() []*Service {
	return append([]*Service(nil), t.svcs.Load().order...)
}

// AddDest adds a real server to a service (ipvsadm -a). It goes to the head
// of the service's list, as the kernel's list_add. A server removed from a
// service of the same protocol, address and port and still in the trash
// (see trash.go) is revived, with its connections and counts.
func (t *Table) AddDest(proto uint8, a netip.Addr, port uint16, c DestConfig) (*Dest, error) {
	s, err := t.mustService(proto, a, port)
	if err != nil {
		return nil, err
	}
	if err := c.validate(s.Addr); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.findLocked(c.Addr, c.Port) >= 0 {
		return nil, fmt.Errorf("%w: %v", ErrDestExists, netip.AddrPortFrom(c.Addr, c.Port))
	}
	d := t.reviveDest(s, c.Addr, c.Port)
	if d != nil {
		if d.svc.Load() != s {
			// Revived into a new service of the same address:
			// __ip_vs_update_dest zeroes its counters.
			d.Stats.zero()
			d.svc.Store(s)
		}
	} else {
		d = &Dest{Addr: c.Addr, Port: c.Port, vkey: makeSvcKey(s.Proto, s.Addr, s.Port)}
		d.svc.Store(s)
	}
	d.weight.Store(int32(c.Weight))
	d.setThresholds(c.UThreshold, c.LThreshold)
	d.removed.Store(false)
	s.dests = append([]*Dest{d}, s.dests...)
	s.updateLocked()
	return d, nil
}

// EditDest changes a real server's weight and thresholds (ipvsadm -e).
// Weight 0 quiesces it: no new connections, existing ones continue. A
// change of -x/-y re-evaluates the overload flag against the current
// connections, as __ip_vs_update_dest does.
func (t *Table) EditDest(proto uint8, a netip.Addr, port uint16, c DestConfig) error {
	s, err := t.mustService(proto, a, port)
	if err != nil {
		return err
	}
	if err := c.validate(s.Addr); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.findLocked(c.Addr, c.Port)
	if i < 0 {
		return fmt.Errorf("%w: %v", ErrNoDest, netip.AddrPortFrom(c.Addr, c.Port))
	}
	s.dests[i].weight.Store(int32(c.Weight))
	s.dests[i].setThresholds(c.UThreshold, c.LThreshold)
	s.updateLocked()
	return nil
}

// DelDest removes a real server from a service (ipvsadm -d). What happens
// to its connections is Linux 6.1's (ip_vs_in_hook): with
// expire_nodest_conn=0, the default, they stay in the table until they time
// out, the real server's replies still get through, but every packet from
// the client side is dropped (DropDestUnavailable). With
// Config.ExpireNodestConn they are all expired at once
// (ip_vs_expire_nodest_conn_flush), and a packet that still finds one is
// scheduled again.
func (t *Table) DelDest(proto uint8, a netip.Addr, port uint16, da netip.Addr, dport uint16) error {
	defer t.expireNodestConns()
	s, err := t.mustService(proto, a, port)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.findLocked(da, dport)
	if i < 0 {
		return fmt.Errorf("%w: %v", ErrNoDest, netip.AddrPortFrom(da, dport))
	}
	t.trashDest(s.dests[i])
	s.dests = append(s.dests[:i:i], s.dests[i+1:]...)
	s.updateLocked()
	return nil
}

// Zero zeroes the counters of every service and real server (ipvsadm -Z).
func (t *Table) Zero() {
	for _, s := range t.Services() {
		s.Stats.zero()
		for _, d := range s.Dests() {
			d.Stats.zero()
		}
	}
}
