package vrrp

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
)

// Receiver hands the adverts read on a director's links to its routers,
// discarding what RFC 5798 7.1 discards, each by reason.
type Receiver struct {
	mu      sync.Mutex
	routers map[routerKey]*Router

	drops [numReasons]atomic.Uint64
	// scratch is the decode buffer: Receive runs on the link's reader
	// goroutine, one at a time per link; the lock covers several links.
	scratch Advert
}

type routerKey struct {
	link string
	v6   bool
	vrid uint8
}

// NewReceiver makes a receiver with no routers.
func NewReceiver() *Receiver { return &Receiver{routers: map[routerKey]*Router{}} }

// Add registers a router; a second one with the same link, family and
// VRID is refused.
func (rc *Receiver) Add(r *Router) bool {
	k := routerKey{r.cfg.Link, r.cfg.V6(), r.cfg.VRID}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.routers[k]; ok {
		return false
	}
	rc.routers[k] = r
	return true
}

// Drops is the count of packets discarded for reason.
func (rc *Receiver) Drops(reason Reason) uint64 { return rc.drops[reason].Load() }

// Receive reads one IP packet carrying VRRP that arrived on link.
func (rc *Receiver) Receive(link string, l3 []byte) {
	ip, err := ParseIP(l3)
	if err != nil {
		rc.drops[ReasonOf(err)].Add(1)
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	a := &rc.scratch
	if err := a.Decode(ip.Payload, ip.Src, ip.Dst); err != nil {
		rc.drops[ReasonOf(err)].Add(1)
		return
	}
	r := rc.routers[routerKey{link, ip.Src.Is6(), a.VRID}]
	if r == nil {
		rc.drops[ReasonVRID].Add(1)
		return
	}
	if ip.Src == r.primary {
		rc.drops[ReasonOwn].Add(1)
		return
	}
	// RFC 5798 7.1: addresses that differ from ours are logged (here:
	// counted) and the advert still counts.
	if a.Priority != OwnerPriority && !sameAddrs(a.Addrs, r.addrs) {
		rc.drops[ReasonAddrs].Add(1)
	}
	if !r.deliver(a, ip.Src) {
		rc.drops[ReasonQueue].Add(1)
	}
}

func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
