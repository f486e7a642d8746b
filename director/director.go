// Package director assembles a running IPVS-style NAT director from its
// parts: devices, the host on them (netstack), the NAT table with its
// rules (nat, admin) and the control socket. `tunvs run` and the lab both
// build their director here, so the lab runs the daemon's code.
package director

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/internal/clock"
	"github.com/tunvs/tunvs/internal/guard"
	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
	"github.com/tunvs/tunvs/vrrp"
)

// Link is one interface of the director.
type Link struct {
	Name  string
	Dev   tun.Device
	Addrs []netip.Prefix // the DIP, VIPs (as /32 or /128 aliases, or with a prefix)
}

// Route is a static route. Dev may be empty when Via is set.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
	Dev string
}

// Config describes a director.
type Config struct {
	Links  []Link
	Routes []Route
	// Rules are ipvsadm commands applied, as a whole, at start.
	Rules []admin.Command
	// RuleLines, if set, are the rules' line numbers, for errors.
	RuleLines []int
	NAT       nat.Config
	// Bypass lets established flows skip the gVisor stack (TUN egress).
	Bypass bool
	// NoGSO cuts the super-packets of offload TUN devices up on read
	// instead of NATing them whole (netstack.Config.NoGSO).
	NoGSO bool
	// StandbyRate is netstack.Config.StandbyRate.
	StandbyRate int
	// Health is the health checking of the real servers (none when it
	// has no services); it starts once the rules are applied.
	Health health.Config
	// Socket, if set, is where the control socket listens.
	Socket string
	// Clock is the director's one clock: the time the NAT table and the
	// sync daemons read (netstack.Config.Now) and the health checks'
	// timers; nil is the real clock (tests inject one).
	Clock clock.Clock
	Log   zerolog.Logger

	// Trace, if set, receives every packet's walk through the director
	// (arrived, matched service, scheduled, DNAT/SNAT, routed or bypass),
	// at most TraceRate packets a second (0: 50), then a summary of how
	// many were not traced. The lab turns it on by setting it to
	// os.Stderr (or any writer).
	Trace     io.Writer
	TraceRate int
	// Pcap, if set, is the capture file (see netstack.PcapWriter).
	Pcap string
	// Metrics, if set, is the address the Prometheus listener serves
	// /metrics on.
	Metrics string
	// DropLogInterval is how often drops are logged, one line per reason
	// with the count since the last line (0: 10 s).
	DropLogInterval time.Duration
	// VRRP are the virtual routers (see VRRP); they start last, once
	// the rules are in.
	VRRP []VRRP
	// BGP, if set, announces the VIPs that have a real server to routers
	// (package bgp), over the director's own stack.
	BGP *bgp.Config
}

// Director is a running director.
type Director struct {
	Host *netstack.Host
	NAT  *nat.Table
	// Health runs the real servers' checks; nil without Config.Health.
	// Guarded by mu once running (a reload replaces it).
	Health *health.Manager
	// Sync are the connection sync daemons (--start-daemon), on the
	// director's own links.
	Sync *ipvssync.Daemons
	// healthCfg is what Health checks (under mu).
	healthCfg health.Config
	clock     clock.Clock
	// Est is the rate estimator (ipvsadm --rate), ticking every 2 s.
	Est *admin.Estimator
	// Routers are the VRRP virtual routers (Config.VRRP).
	Routers []*vrrp.Router
	vrrpRx  *vrrp.Receiver
	// vrrpDrivesSync: a router drives the sync daemons (a rules file's
	// --start-daemon lines then do not).
	vrrpDrivesSync bool
	ctl            *admin.Server
	log            zerolog.Logger
	// mu serialises changes to the table: control requests and reloads.
	mu        sync.Mutex
	pcap      *netstack.PcapWriter
	metricsLn *guard.Listener
	done      chan struct{}
	// allLost is closed when the last link's device is gone.
	allLost     chan struct{}
	allLostOnce sync.Once
	wg          sync.WaitGroup
	closeOnce   sync.Once
	bgp         *bgp.Speaker
}

// New builds and starts a director. On error everything it opened is
// closed again, the devices included.
func New(cfg Config) (_ *Director, err error) {
	var h *netstack.Host
	// The table asks the host for egress MTUs; the host exists only
	// after the table, so the callback reaches it through d.
	d := &Director{log: cfg.Log, Est: admin.NewEstimator(), done: make(chan struct{}), allLost: make(chan struct{}), clock: clock.Or(cfg.Clock)}
	now := func() int64 { return d.clock.Now().UnixNano() }
	natCfg := cfg.NAT
	natCfg.EgressMTU = func(dst netip.Addr) int { return h.EgressMTU(dst) }
	natCfg.DirectRoute = func(dst netip.Addr) error { return h.CheckDirect(dst) }
	d.NAT = nat.New(natCfg)
	hcfg := netstack.Config{NAT: d.NAT, Forwarding: true, Bypass: cfg.Bypass, NoGSO: cfg.NoGSO, StandbyRate: cfg.StandbyRate, Now: now, Log: cfg.Log,
		Trace: cfg.Trace, TraceRate: cfg.TraceRate, OnLinkLost: d.linkLost}
	if cfg.Pcap != "" {
		kinds := map[string]tun.Kind{}
		for _, l := range cfg.Links {
			kinds[l.Name] = l.Dev.Kind()
		}
		pw, err := netstack.NewPcapWriter(cfg.Pcap, kinds)
		if err != nil {
			for _, l := range cfg.Links {
				_ = l.Dev.Close()
			}
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		d.pcap = pw
		hcfg.Capture = pw
	}
	h = netstack.New(hcfg)
	d.Host = h
	defer func() {
		if err != nil {
			// Devices not yet attached to the host are closed here.
			for _, l := range cfg.Links {
				if _, e := h.NICByName(l.Name); e != nil {
					_ = l.Dev.Close()
				}
			}
			_ = d.Close()
		}
	}()
	for _, l := range cfg.Links {
		if _, err := h.AddNIC(l.Name, l.Dev); err != nil {
			return nil, fmt.Errorf("link %s: %w", l.Name, err)
		}
		for _, a := range l.Addrs {
			if err := h.AddAddress(l.Name, a); err != nil {
				return nil, fmt.Errorf("link %s: %w", l.Name, err)
			}
		}
		cfg.Log.Info().Str("link", l.Name).Str("kind", l.Dev.Kind().String()).Int("mtu", l.Dev.MTU()).
			Interface("addrs", l.Addrs).Msg("link up")
	}
	var local []netip.Addr
	for _, l := range cfg.Links {
		for _, a := range l.Addrs {
			local = append(local, a.Addr())
		}
	}
	// A virtual address is the director's own on either side of a
	// failover: no packet to a service may come from it.
	for _, v := range cfg.VRRP {
		for _, a := range v.Router.VIPs {
			local = append(local, a.Addr())
		}
	}
	d.NAT.SetLocalAddrs(local)
	for _, r := range cfg.Routes {
		if err := h.AddRoute(r.Dst, r.Via, r.Dev); err != nil {
			return nil, err
		}
	}
	d.Sync = ipvssync.NewDaemons(d.NAT, h, now, cfg.Log)
	if err := admin.ApplyWith(admin.Env{Table: d.NAT, Sync: d.Sync}, cfg.Rules, cfg.RuleLines, nil); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if err := d.startHealth(cfg.Health); err != nil {
		return nil, err
	}
	if err := d.startVRRP(cfg.VRRP); err != nil {
		return nil, err
	}
	for _, s := range d.NAT.Services() {
		cfg.Log.Info().Str(admin.FieldEvent, admin.EventServiceAdded).
			Str(admin.FieldService, nat.ProtoName(s.Proto)+" "+s.AddrPort().String()).
			Str(admin.FieldScheduler, s.SchedulerName()).Int("servers", len(s.Dests())).Msg("service added")
	}
	if cfg.BGP != nil {
		if err := d.startBGP(cfg.BGP, cfg.Links); err != nil {
			return nil, err
		}
	}
	if cfg.Socket != "" {
		if d.ctl, err = admin.ListenEnv(cfg.Socket, d.env(), cfg.Log); err != nil {
			return nil, err
		}
		cfg.Log.Info().Str("socket", cfg.Socket).Msg("control socket listening")
	}
	if cfg.Metrics != "" {
		src := metrics.Source{NAT: d.NAT, Host: h, Health: d.healthSnapshot, Sync: d.Sync}
		if d.bgp != nil {
			// Not a nil *bgp.Speaker in the interface.
			src.BGP = d.bgp
		}
		if d.vrrpRx != nil {
			src.VRRP = &metrics.VRRPSource{Routers: d.Routers, Drops: d.vrrpRx.Drops}
		}
		if d.ctl != nil {
			src.Listeners = append(src.Listeners, d.ctl.Listener())
		}
		if d.metricsLn, err = metrics.Serve(cfg.Metrics, src, cfg.Log); err != nil {
			return nil, err
		}
		cfg.Log.Info().Str("addr", d.metricsLn.Addr().String()).Msg("metrics listening")
	}
	d.wg.Add(4)
	go func() {
		defer d.wg.Done()
		d.Est.Run(d.NAT, d.done)
	}()
	go func() {
		defer d.wg.Done()
		d.defend(now)
	}()
	go func() {
		defer d.wg.Done()
		d.returnMemory()
	}()
	// The drop counts are taken now, not when the goroutine first runs,
	// so that no drop goes unlogged.
	lastDrops := d.dropCounts()
	go func() {
		defer d.wg.Done()
		d.logDrops(cfg.DropLogInterval, lastDrops)
	}()
	if d.pcap != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			tk := time.NewTicker(time.Second)
			defer tk.Stop()
			for {
				select {
				case <-d.done:
					return
				case <-tk.C:
					_ = d.pcap.Flush()
				}
			}
		}()
	}
	return d, nil
}

// linkLost is told by the host that a link's device is gone and the link
// closed. The director goes on while any link remains (the services
// reachable through the others still work); with none left it can do
// nothing, and AllLinksLost tells its owner to stop.
func (d *Director) linkLost(name string, err error, remaining int) {
	e := d.log.Error().Err(err).Str("link", name).Int("links_remaining", remaining)
	if remaining > 0 {
		e.Msg("link lost: its device is gone; the link is closed and the director goes on with the links that remain")
		return
	}
	// Two links lost at once may both count none remaining.
	d.allLostOnce.Do(func() {
		e.Msg("link lost: its device is gone; no link remains, the director stops")
		close(d.allLost)
	})
}

// AllLinksLost is closed when every link's device is gone.
func (d *Director) AllLinksLost() <-chan struct{} { return d.allLost }

// env is what control requests run in.
func (d *Director) env() admin.Env {
	return admin.Env{Table: d.NAT, Est: d.Est, Mu: &d.mu, Sync: d.Sync,
		OnChange: func(c admin.Command) { admin.LogEvent(d.log, c) }}
}

// MetricsAddr is the metrics listener's address, or nil.
func (d *Director) MetricsAddr() net.Addr {
	if d.metricsLn == nil {
		return nil
	}
	return d.metricsLn.Addr()
}

// Reload makes the table what the rules file at path says, changing only
// what differs (rules.Rules.Diff). The file, its checks included, is
// validated whole before anything is touched: a bad file changes nothing,
// and its error names the line and the reason. The changes are logged as
// events and returned.
//
// The old checks are stopped and what they did undone (inhibited weights,
// removed servers, the sorry server) so that the difference is against
// the file alone; then the diff is computed and applied in one
// nat.Table.Update, so nothing comes between. Once the file is valid that
// cannot fail; if it did, the old checks are started again and the error
// says that nothing changed.
func (d *Director) Reload(path string) ([]admin.Command, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	want, err := admin.ReadRules(string(data))
	if err != nil {
		return nil, err
	}
	cmds, err := d.ReloadRules(want)
	if err != nil {
		return cmds, err
	}
	if err := d.syncFromFile(want.Sync); err != nil {
		return cmds, fmt.Errorf("rules applied, but: %w", err)
	}
	return cmds, nil
}

// ReloadRules is Reload with the configuration already read and
// validated (a keepalived.conf's, package keepalived).
func (d *Director) ReloadRules(want rules.Rules) ([]admin.Command, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.Health
	if old != nil {
		old.Stop()
		old.Restore()
		d.Health = nil
	}
	var cmds []admin.Command
	err := d.NAT.Update(func(tx *nat.Tx) error {
		diff := tx.Rules().Diff(want)
		if testHookReload != nil {
			diff = testHookReload(diff)
		}
		if err := tx.Apply(diff); err != nil {
			return err
		}
		cmds = admin.Commands(diff)
		return nil
	})
	if err != nil {
		if old != nil {
			if rerr := d.startHealth(d.healthCfg); rerr != nil {
				return nil, fmt.Errorf("rules unchanged: %w; and health checking is off: %v", err, rerr)
			}
		}
		return nil, fmt.Errorf("rules unchanged: %w", err)
	}
	for _, c := range cmds {
		admin.LogEvent(d.log, c)
	}
	if err := d.startHealth(want.Checks); err != nil {
		return cmds, fmt.Errorf("rules applied, but health checking is off: %w", err)
	}
	return cmds, nil
}

// testHookReload, if set, sees and may change the diff a reload applies.
var testHookReload func(rules.Diff) rules.Diff

// startHealth starts checks cfg (none: health checking off); d.mu held.
func (d *Director) startHealth(cfg health.Config) error {
	d.healthCfg = cfg
	if len(cfg.Services) == 0 {
		return nil
	}
	m, err := health.New(cfg, health.Options{Table: d.NAT, Stack: d.Host.Stack(), Log: d.log, Clock: d.clock})
	if err != nil {
		return err
	}
	d.Health = m
	m.Start()
	return nil
}

// logDrops logs the NAT's drops, at most one line per reason per
// interval, with the count since the last line: never a line per packet.
// A full table gets its own message.
func (d *Director) logDrops(every time.Duration, last []uint64) {
	if every <= 0 {
		every = 10 * time.Second
	}
	reasons := nat.DropReasons()
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-tk.C:
		}
		for i, r := range reasons {
			n := d.NAT.Drops(r)
			if n == last[i] {
				continue
			}
			delta := n - last[i]
			last[i] = n
			msg := "packets dropped"
			if r.String() == "table_full" {
				msg = "connection table full: new connections refused"
			}
			d.log.Warn().Str(admin.FieldEvent, "drops").Str(admin.FieldReason, r.String()).
				Uint64(admin.FieldCount, delta).Dur("interval", every).Int("conns", d.NAT.Len()).Msg(msg)
		}
	}
}

func (d *Director) dropCounts() []uint64 {
	reasons := nat.DropReasons()
	c := make([]uint64, len(reasons))
	for i, r := range reasons {
		c[i] = d.NAT.Drops(r)
	}
	return c
}

// Close stops the control socket and the host and closes the devices.
func (d *Director) Close() error {
	var errs []error
	// The routers are told first, so that they stop sending here while
	// the director still forwards what is on its way.
	errs = append(errs, d.stopBGP())
	// The checks stop before the stack they dial from.
	d.mu.Lock()
	if d.Health != nil {
		d.Health.Stop()
	}
	d.mu.Unlock()
	d.closeOnce.Do(func() { close(d.done) })
	d.wg.Wait()
	// A master resigns while its link is still up.
	d.stopVRRP()
	if d.Sync != nil {
		// The daemons' sockets are on the stack closed below.
		d.Sync.Close()
	}
	if d.ctl != nil {
		errs = append(errs, d.ctl.Close())
	}
	if d.metricsLn != nil {
		errs = append(errs, d.metricsLn.Close())
	}
	if d.Host != nil {
		errs = append(errs, d.Host.Close())
	}
	if d.pcap != nil {
		errs = append(errs, d.pcap.Close())
	}
	return errors.Join(errs...)
}

// healthSnapshot is the health checks' state for the metrics (nil when
// nothing is checked).
func (d *Director) healthSnapshot() []health.ServiceStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Health == nil {
		return nil
	}
	return d.Health.Snapshot()
}
