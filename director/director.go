// Package director assembles a running IPVS-style NAT director from its
// parts: devices, the host on them (netstack), the NAT table with its
// rules (nat, admin) and the control socket. `tunvs run` and the lab both
// build their director here, so the lab runs the daemon's code.
package director

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
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
	// Socket, if set, is where the control socket listens.
	Socket string
	// Now is the clock in Unix nanoseconds (tests inject one).
	Now func() int64
	Log zerolog.Logger
}

// Director is a running director.
type Director struct {
	Host *netstack.Host
	NAT  *nat.Table
	ctl  *admin.Server
	log  zerolog.Logger
}

// New builds and starts a director. On error everything it opened is
// closed again, the devices included.
func New(cfg Config) (_ *Director, err error) {
	var h *netstack.Host
	// The table asks the host for egress MTUs; the host exists only
	// after the table, so the callback reaches it through d.
	d := &Director{log: cfg.Log}
	natCfg := cfg.NAT
	natCfg.EgressMTU = func(dst netip.Addr) int { return h.EgressMTU(dst) }
	d.NAT = nat.New(natCfg)
	h = netstack.New(netstack.Config{NAT: d.NAT, Forwarding: true, Bypass: cfg.Bypass, Now: cfg.Now, Log: cfg.Log})
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
	for _, r := range cfg.Routes {
		if err := h.AddRoute(r.Dst, r.Via, r.Dev); err != nil {
			return nil, err
		}
	}
	if err := admin.Apply(d.NAT, cfg.Rules, cfg.RuleLines, nil); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	for _, s := range d.NAT.Services() {
		cfg.Log.Info().Str("service", nat.ProtoName(s.Proto)+" "+s.AddrPort().String()).
			Str("scheduler", s.SchedulerName()).Int("servers", len(s.Dests())).Msg("service added")
	}
	if cfg.Socket != "" {
		if d.ctl, err = admin.Listen(cfg.Socket, d.NAT, cfg.Log); err != nil {
			return nil, err
		}
		cfg.Log.Info().Str("socket", cfg.Socket).Msg("control socket listening")
	}
	return d, nil
}

// Close stops the control socket and the host and closes the devices.
func (d *Director) Close() error {
	var errs []error
	if d.ctl != nil {
		errs = append(errs, d.ctl.Close())
	}
	if d.Host != nil {
		errs = append(errs, d.Host.Close())
	}
	return errors.Join(errs...)
}
