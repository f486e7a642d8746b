package director

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/vrrp"
)

// VRRP is one virtual router of the director (keepalived's
// vrrp_instance): it moves its virtual addresses, and with them the
// clients' and the real servers' traffic, to whichever director is
// master.
type VRRP struct {
	Router vrrp.Config
	// Sync, if set, is the connection sync daemon the router drives, as
	// keepalived's lvs_sync_daemon does (ipvs_syncd_master,
	// ipvs_syncd_backup in keepalived's ipvswrapper.c): while MASTER the
	// sync master runs, otherwise the sync backup, so that the backup's
	// table holds the master's connections when it takes over.
	Sync *rules.SyncDaemon
}

// startVRRP starts the routers (none: nothing). Their packets come to a
// receiver from the host's TAP readers.
func (d *Director) startVRRP(cfgs []VRRP) error {
	if len(cfgs) == 0 {
		return nil
	}
	rx := vrrp.NewReceiver()
	// d.Routers holds only started routers (Close stops them).
	var rs []*vrrp.Router
	macs := map[string]*linkMACs{}
	for _, c := range cfgs {
		c := c
		lm := macs[c.Router.Link]
		if lm == nil {
			lm = &linkMACs{masters: map[vrrp.MAC]bool{}}
			macs[c.Router.Link] = lm
		}
		link := &vrrpLink{h: d.Host, name: c.Router.Link, macs: lm}
		r, err := vrrp.New(c.Router, link, vrrp.Options{Clock: d.clock, Log: d.log,
			OnState: func(s vrrp.State) { d.vrrpSync(c, s) }})
		if err != nil {
			return err
		}
		if !rx.Add(r) {
			return fmt.Errorf("vrrp %s: virtual router id %d twice on %s", c.Router.Name, c.Router.VRID, c.Router.Link)
		}
		rs = append(rs, r)
		if c.Sync != nil {
			d.vrrpDrivesSync = true
		}
	}
	d.vrrpRx = rx
	d.Host.SetVRRP(rx.Receive)
	for _, r := range rs {
		r.Start()
	}
	d.Routers = rs
	return nil
}

// stopVRRP stops the routers: a master resigns (priority 0), so that its
// backup takes over after Skew_Time instead of Master_Down_Interval.
func (d *Director) stopVRRP() {
	for _, r := range d.Routers {
		r.Stop()
	}
}

// vrrpSync follows a router's state with its sync daemon.
func (d *Director) vrrpSync(c VRRP, s vrrp.State) {
	if c.Sync == nil || d.Sync == nil {
		return
	}
	stop := func(role ipvssync.Role) {
		if err := d.Sync.Stop(role); err != nil && !errors.Is(err, ipvssync.ErrStopped) {
			d.log.Error().Err(err).Str("vrrp", c.Router.Name).Stringer("role", role).Msg("vrrp: stopping the sync daemon failed")
		}
	}
	start := func(role ipvssync.Role) {
		if err := d.Sync.Start(role, *c.Sync); err != nil && !errors.Is(err, ipvssync.ErrRunning) {
			d.log.Error().Err(err).Str("vrrp", c.Router.Name).Stringer("role", role).Msg("vrrp: starting the sync daemon failed")
			return
		}
		d.log.Info().Str("vrrp", c.Router.Name).Stringer("role", role).Str("interface", c.Sync.Interface).Msg("vrrp: sync daemon started")
	}
	switch s {
	case vrrp.Master:
		stop(ipvssync.Backup)
		start(ipvssync.Master)
	case vrrp.Backup:
		stop(ipvssync.Master)
		start(ipvssync.Backup)
	default:
		stop(ipvssync.Master)
		stop(ipvssync.Backup)
	}
}

// vrrpLink is a router's TAP link on the director's host.
type vrrpLink struct {
	h    *netstack.Host
	name string
	macs *linkMACs
}

// linkMACs are the virtual MACs of the routers that are master on one
// link. A TAP NIC has one Ethernet address at a time (the stack answers
// ARP and Neighbor Solicitations with it): with several routers master
// on the link it takes the lowest of their virtual MACs (IPv4's
// 00-00-5E-00-01-xx before IPv6's), the same on every director that
// holds the same routers, so the address a neighbour learned still
// reaches the master after a failover; the routers' gratuitous ARPs and
// Neighbor Advertisements say so too.
type linkMACs struct {
	mu      sync.Mutex
	masters map[vrrp.MAC]bool
}

// set records vmac as master (or not) and returns the MAC the link takes
// (the lowest master's, or nil for its own) and every master's, which
// the link receives on; m.mu held, until the link has them.
func (m *linkMACs) set(vmac vrrp.MAC, master bool) (use []byte, all [][]byte) {
	if master {
		m.masters[vmac] = true
	} else {
		delete(m.masters, vmac)
	}
	var low *vrrp.MAC
	for v := range m.masters {
		v := v
		all = append(all, v[:])
		if low == nil || bytes.Compare(v[:], low[:]) < 0 {
			low = &v
		}
	}
	if low == nil {
		return nil, nil
	}
	return low[:], all
}

func (l *vrrpLink) WriteFrame(f []byte) error { return l.h.WriteFrame(l.name, f) }

func (l *vrrpLink) Primary(v6 bool) (netip.Addr, error) {
	if v6 {
		// RFC 5798 5.1.2.1: an IPv6 advert comes from the link-local
		// address; a link without one gets its EUI-64 address.
		mac, err := l.h.OwnMAC(l.name)
		if err != nil {
			return netip.Addr{}, err
		}
		return l.h.LinkLocal(l.name, vrrp.LinkLocal(vrrp.MAC(mac)))
	}
	a, err := l.h.PrimaryAddr(l.name, false)
	if err == nil && !a.IsValid() {
		err = vrrp.ErrNoAddress
	}
	return a, err
}

func (l *vrrpLink) SetMaster(vmac vrrp.MAC, vips []netip.Prefix, master bool) error {
	var errs []error
	// The routers of a link change its MACs one at a time.
	l.macs.mu.Lock()
	defer l.macs.mu.Unlock()
	mac, all := l.macs.set(vmac, master)
	if master {
		if err := l.h.SetLinkMAC(l.name, mac, all); err != nil {
			return err
		}
		for _, p := range vips {
			if err := l.h.AddVirtualAddress(l.name, p); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for _, p := range vips {
		if err := l.h.RemoveVirtualAddress(l.name, p); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, l.h.SetLinkMAC(l.name, mac, all))
	if mac != nil {
		// Another router is still master on the link.
		return errors.Join(errs...)
	}
	// Neighbours learned the link's own address at the virtual MAC
	// while it was on (the stack answered ARP with it): tell them the
	// address is back at the link's own MAC.
	if a, err := l.h.PrimaryAddr(l.name, false); err == nil && a.IsValid() {
		if mac, err := l.h.OwnMAC(l.name); err == nil {
			errs = append(errs, l.h.WriteFrame(l.name, vrrp.AppendGratuitousARP(nil, vrrp.MAC(mac), a)))
		}
	}
	return errors.Join(errs...)
}
