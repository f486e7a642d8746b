package director

import (
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/nat"
)

// announceEvery is how often the VIPs to announce are recomputed from the
// table: a health check's verdict reaches the routers within this (plus
// the check's own fall count).
const announceEvery = 500 * time.Millisecond

// startBGP starts the speaker on the director's stack and keeps its
// announcements equal to the VIPs that have a real server to send to.
func (d *Director) startBGP(cfg *bgp.Config, links []Link) error {
	c := *cfg
	c.Dial = d.Host.DialTCP
	c.Log = d.log
	if !c.NextHop.IsValid() {
		c.NextHop = ownAddr(links, c.Peers, true)
	}
	if !c.NextHop6.IsValid() {
		c.NextHop6 = ownAddr(links, c.Peers, false)
	}
	if !c.NextHop.IsValid() && !c.NextHop6.IsValid() {
		return errors.New("bgp: no next hop given and no link address on a peer's subnet to take it from")
	}
	s, err := bgp.Start(c)
	if err != nil {
		return err
	}
	d.bgp = s
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		tk := time.NewTicker(announceEvery)
		defer tk.Stop()
		for {
			if err := s.Set(upVIPs(d.NAT.Services())); err != nil && !errors.Is(err, bgp.ErrClosed) {
				d.log.Warn().Err(err).Msg("bgp: announcements not updated")
			}
			select {
			case <-d.done:
				return
			case <-tk.C:
			}
		}
	}()
	return nil
}

// ownAddr is the director's first address of the family (IPv4 when v4)
// on a subnet that holds a peer: the next hop the router can reach.
func ownAddr(links []Link, peers []bgp.Peer, v4 bool) netip.Addr {
	for _, l := range links {
		for _, a := range l.Addrs {
			if a.Addr().Is4() != v4 || a.IsSingleIP() {
				continue
			}
			for _, p := range peers {
				if a.Masked().Contains(p.Addr) {
					return a.Addr()
				}
			}
		}
	}
	return netip.Addr{}
}

// upVIPs are the virtual addresses of services with at least one real
// server that takes new connections (weight above 0, not removed): the
// ones a router may send clients to. A VIP with several services (ports)
// is up if any of them is. Firewall-mark services have no address of
// their own to announce.
func upVIPs(svcs []*nat.Service) []netip.Addr {
	var out []netip.Addr
	for _, s := range svcs {
		if !s.Addr.IsValid() || slices.Contains(out, s.Addr) {
			continue
		}
		for _, dst := range s.Dests() {
			if dst.Available() && dst.Weight() > 0 {
				out = append(out, s.Addr)
				break
			}
		}
	}
	return out
}

// stopBGP withdraws the VIPs and ends the sessions, while the stack that
// carries them still runs.
func (d *Director) stopBGP() error {
	if d.bgp == nil {
		return nil
	}
	return d.bgp.Close()
}

// BGP is the director's speaker, nil without Config.BGP.
func (d *Director) BGP() *bgp.Speaker { return d.bgp }
