package vrrp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/internal/clock"
)

// State is a virtual router's state (RFC 5798 6.4).
type State uint32

const (
	Init State = iota
	Backup
	Master
)

func (s State) String() string {
	switch s {
	case Init:
		return "INIT"
	case Backup:
		return "BACKUP"
	case Master:
		return "MASTER"
	}
	return fmt.Sprintf("state %d", s)
}

// Config is one virtual router (keepalived's vrrp_instance).
type Config struct {
	// Name names it in logs (keepalived's instance name).
	Name string
	// Link is the TAP link it runs on.
	Link string
	VRID uint8
	// Priority is 1 to 255; 255 is the owner of the addresses, master
	// from the start.
	Priority uint8
	// Interval is Advertisement_Interval: 10 ms to 40.95 s, in whole
	// centiseconds (0: 1 s).
	Interval time.Duration
	// Preempt lets a router take over from a master of lower priority
	// (RFC 5798 Preempt_Mode; keepalived's default, which nopreempt
	// turns off).
	Preempt bool
	// PreemptDelay is keepalived's preempt_delay: for this long after
	// the router starts it does not preempt.
	PreemptDelay time.Duration
	// StartMaster is keepalived's "state MASTER": become master at once
	// instead of waiting Master_Down_Interval as a backup first (a
	// master of higher priority then takes back over at its next advert).
	StartMaster bool
	// VIPs are the virtual addresses, all of one family, with the prefix
	// they are added with to the link while master.
	VIPs []netip.Prefix
}

// DefaultInterval is keepalived's advert_int default.
const DefaultInterval = time.Second

// Validate checks c and fills in its defaults.
func (c *Config) Validate() error {
	if c.VRID == 0 {
		return fmt.Errorf("vrrp %s: virtual router id 0: want 1 to 255", c.Name)
	}
	if c.Priority == 0 {
		return fmt.Errorf("vrrp %s: priority 0: want 1 to 255 (0 is a master's resignation)", c.Name)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Interval < 10*time.Millisecond || c.Interval > maxInterval*10*time.Millisecond || c.Interval%(10*time.Millisecond) != 0 {
		return fmt.Errorf("vrrp %s: advert interval %v: want 0.01s to 40.95s in whole centiseconds", c.Name, c.Interval)
	}
	if c.Link == "" {
		return fmt.Errorf("vrrp %s: no interface", c.Name)
	}
	if len(c.VIPs) == 0 {
		return fmt.Errorf("vrrp %s: no virtual address", c.Name)
	}
	if len(c.VIPs) > 255 {
		return fmt.Errorf("vrrp %s: %d virtual addresses: at most 255 fit an advert", c.Name, len(c.VIPs))
	}
	for _, p := range c.VIPs {
		if p.Addr().Is6() != c.VIPs[0].Addr().Is6() {
			return fmt.Errorf("vrrp %s: virtual addresses %v and %v: one family per virtual router (RFC 5798: IPv4 and IPv6 routers are separate)", c.Name, c.VIPs[0], p)
		}
	}
	return nil
}

// V6 reports whether the router is an IPv6 one.
func (c *Config) V6() bool { return c.VIPs[0].Addr().Is6() }

// Link is what a router needs of its NIC.
type Link interface {
	// WriteFrame sends one Ethernet frame out of the link.
	WriteFrame(frame []byte) error
	// Primary is the link's address adverts go from: its primary IPv4
	// address, or its IPv6 link-local one (RFC 5798 5.1.1.1, 5.1.2.1).
	Primary(v6 bool) (netip.Addr, error)
	// SetMaster puts the virtual MAC and the addresses on the link
	// (master) or takes them off (not).
	SetMaster(vmac MAC, vips []netip.Prefix, master bool) error
}

// Stats count a router's work.
type Stats struct {
	AdvertsSent     atomic.Uint64
	AdvertsReceived atomic.Uint64
	BecameMaster    atomic.Uint64
	BecameBackup    atomic.Uint64
	// PriorityZeroSent and PriorityZeroReceived are resignations.
	PriorityZeroSent     atomic.Uint64
	PriorityZeroReceived atomic.Uint64
	SendErrors           atomic.Uint64
}

// received is an advert handed from the link's reader to the router.
type received struct {
	a   Advert
	src netip.Addr
}

// Router is a virtual router: the state machine of RFC 5798 6.4 on a
// clock. Its goroutine owns the state; Receive hands it adverts.
type Router struct {
	cfg     Config
	link    Link
	clk     clock.Clock
	log     zerolog.Logger
	onState func(State)
	vmac    MAC
	primary netip.Addr
	addrs   []netip.Addr // the VIPs as advertised

	in      chan received
	setPrio chan uint8
	stop    chan struct{}
	done    chan struct{}
	state   atomic.Uint32
	prio    atomic.Uint32

	Stats Stats

	// Loop state: only the goroutine touches these.
	masterAdvInt time.Duration
	preemptAt    time.Time
	adv, down    clock.Timer
	buf          []byte
	stopOnce     sync.Once
}

// Options of New.
type Options struct {
	// Clock is the time the timers run on (nil: the real clock).
	Clock clock.Clock
	Log   zerolog.Logger
	// OnState, if set, is told each transition, from the router's
	// goroutine (the director starts the sync daemons from it).
	OnState func(State)
}

// ErrNoAddress is a link without the address adverts must come from.
var ErrNoAddress = errors.New("link has no address to advertise from")

// New makes a router on link; Start runs it.
func New(cfg Config, link Link, o Options) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := link.Primary(cfg.V6())
	if err != nil {
		return nil, fmt.Errorf("vrrp %s on %s: %w", cfg.Name, cfg.Link, err)
	}
	r := &Router{cfg: cfg, link: link, clk: clock.Or(o.Clock), log: o.Log, onState: o.OnState,
		vmac: VirtualMAC(cfg.VRID, cfg.V6()), primary: p,
		in: make(chan received, 16), setPrio: make(chan uint8), stop: make(chan struct{}), done: make(chan struct{})}
	for _, v := range cfg.VIPs {
		r.addrs = append(r.addrs, v.Addr())
	}
	r.prio.Store(uint32(cfg.Priority))
	return r, nil
}

// Config is the router's configuration.
func (r *Router) Config() Config { return r.cfg }

// State is the router's state now.
func (r *Router) State() State { return State(r.state.Load()) }

// Priority is the router's priority now.
func (r *Router) Priority() uint8 { return uint8(r.prio.Load()) }

// Primary is the address the router advertises from.
func (r *Router) Primary() netip.Addr { return r.primary }

// Start runs the router from Init (RFC 5798 6.4.1).
func (r *Router) Start() {
	r.preemptAt = r.clk.Now().Add(r.cfg.PreemptDelay)
	r.adv = r.clk.NewTimer(time.Hour)
	r.adv.Stop()
	r.down = r.clk.NewTimer(time.Hour)
	r.down.Stop()
	go r.run()
}

// SetPriority changes the priority the router advertises (a master that
// lowers it below a backup's is preempted by it; one that raises it
// above the master's preempts). 0 and 255 are refused.
func (r *Router) SetPriority(p uint8) error {
	if p == 0 || p == OwnerPriority {
		return fmt.Errorf("vrrp %s: priority %d: want 1 to 254", r.cfg.Name, p)
	}
	select {
	case r.setPrio <- p:
	case <-r.done:
		return errors.New("vrrp " + r.cfg.Name + ": stopped")
	}
	return nil
}

// Stop ends the router: a master resigns with an advert of priority 0
// and gives up the addresses (6.4.3 Shutdown). It waits for the
// goroutine.
func (r *Router) Stop() {
	r.stopOnce.Do(func() { close(r.stop) })
	<-r.done
}

// deliver queues an advert for the router; a full queue drops it.
func (r *Router) deliver(a *Advert, src netip.Addr) bool {
	m := received{a: Advert{VRID: a.VRID, Priority: a.Priority, Interval: a.Interval, Addrs: slices.Clone(a.Addrs)}, src: src}
	select {
	case r.in <- m:
		return true
	default:
		return false
	}
}

func (r *Router) run() {
	defer close(r.done)
	defer r.adv.Stop()
	defer r.down.Stop()
	if r.Priority() == OwnerPriority || r.cfg.StartMaster {
		r.becomeMaster("start")
	} else {
		r.becomeBackup(r.cfg.Interval, "start")
	}
	for {
		select {
		case <-r.stop:
			if r.State() == Master {
				r.send(0)
				r.Stats.PriorityZeroSent.Add(1)
				r.release()
			}
			r.setState(Init, "shutdown")
			return
		case <-r.adv.C():
			if r.State() == Master {
				r.send(r.Priority())
				r.adv.Reset(r.cfg.Interval)
			}
		case <-r.down.C():
			if r.State() == Backup {
				r.becomeMaster("master down interval passed")
			}
		case p := <-r.setPrio:
			r.prio.Store(uint32(p))
			r.log.Info().Str("vrrp", r.cfg.Name).Uint8("priority", p).Msg("vrrp priority changed")
			if r.State() == Master {
				r.send(p)
				r.adv.Reset(r.cfg.Interval)
			}
		case m := <-r.in:
			r.advert(&m)
			// Counted once handled: tests wait on it.
			r.Stats.AdvertsReceived.Add(1)
		}
	}
}

// advert is RFC 5798 6.4.2 and 6.4.3 on receiving an advert.
func (r *Router) advert(m *received) {
	prio := r.Priority()
	iv := time.Duration(m.a.Interval) * 10 * time.Millisecond
	if m.a.Priority == 0 {
		r.Stats.PriorityZeroReceived.Add(1)
	}
	switch r.State() {
	case Backup:
		switch {
		case m.a.Priority == 0:
			// The master resigned: take over after Skew_Time only.
			r.down.Reset(r.skew(r.masterAdvInt))
		case !r.cfg.Preempt || m.a.Priority >= prio || r.clk.Now().Before(r.preemptAt):
			r.masterAdvInt = iv
			r.down.Reset(r.masterDown())
		default:
			// A master of lower priority: let Master_Down_Timer run
			// out and preempt it.
		}
	case Master:
		switch {
		case m.a.Priority == 0:
			r.send(prio)
			r.adv.Reset(r.cfg.Interval)
		case m.a.Priority > prio || (m.a.Priority == prio && addrGreater(m.src, r.primary)):
			r.release()
			r.becomeBackup(iv, fmt.Sprintf("advert of priority %d from %v", m.a.Priority, m.src))
		}
	}
}

// addrGreater compares primary addresses as RFC 5798 6.4.3 does: as
// unsigned integers in network byte order.
func addrGreater(a, b netip.Addr) bool { return a.Compare(b) > 0 }

// skew is Skew_Time, ((256 - Priority) * Master_Adver_Interval) / 256.
func (r *Router) skew(mai time.Duration) time.Duration {
	return mai * time.Duration(256-int(r.Priority())) / 256
}

// masterDown is Master_Down_Interval, 3 * Master_Adver_Interval +
// Skew_Time.
func (r *Router) masterDown() time.Duration {
	return 3*r.masterAdvInt + r.skew(r.masterAdvInt)
}

func (r *Router) becomeMaster(why string) {
	if err := r.link.SetMaster(r.vmac, r.cfg.VIPs, true); err != nil {
		r.log.Error().Err(err).Str("vrrp", r.cfg.Name).Msg("vrrp: taking the virtual addresses failed")
	}
	r.send(r.Priority())
	r.announce()
	r.down.Stop()
	r.adv.Reset(r.cfg.Interval)
	r.Stats.BecameMaster.Add(1)
	r.setState(Master, why)
}

func (r *Router) becomeBackup(mai time.Duration, why string) {
	r.masterAdvInt = mai
	r.adv.Stop()
	r.down.Reset(r.masterDown())
	r.Stats.BecameBackup.Add(1)
	r.setState(Backup, why)
}

// release takes the virtual MAC and addresses off the link.
func (r *Router) release() {
	if err := r.link.SetMaster(r.vmac, r.cfg.VIPs, false); err != nil {
		r.log.Error().Err(err).Str("vrrp", r.cfg.Name).Msg("vrrp: releasing the virtual addresses failed")
	}
}

func (r *Router) setState(s State, why string) {
	old := State(r.state.Swap(uint32(s)))
	r.log.Info().Str("vrrp", r.cfg.Name).Str("link", r.cfg.Link).Uint8("vrid", r.cfg.VRID).
		Uint8("priority", r.Priority()).Str("from", old.String()).Str("to", s.String()).Str("reason", why).
		Msg("vrrp state change")
	if r.onState != nil {
		r.onState(s)
	}
}

// send sends one advert with priority prio.
func (r *Router) send(prio uint8) {
	a := Advert{VRID: r.cfg.VRID, Priority: prio, Interval: uint16(r.cfg.Interval / (10 * time.Millisecond)), Addrs: r.addrs}
	r.buf = AppendAdvertFrame(r.buf[:0], &a, r.vmac, r.primary)
	if err := r.link.WriteFrame(r.buf); err != nil {
		r.Stats.SendErrors.Add(1)
		return
	}
	r.Stats.AdvertsSent.Add(1)
}

// announce sends a gratuitous ARP or an unsolicited Neighbor
// Advertisement for each virtual address, from the virtual MAC.
func (r *Router) announce() {
	for _, a := range r.addrs {
		if a.Is4() {
			r.buf = AppendGratuitousARP(r.buf[:0], r.vmac, a)
		} else {
			r.buf = AppendUnsolicitedNA(r.buf[:0], r.vmac, r.primary, a)
		}
		if err := r.link.WriteFrame(r.buf); err != nil {
			r.Stats.SendErrors.Add(1)
		}
	}
}
