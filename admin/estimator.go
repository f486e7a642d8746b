package admin

import (
	"sync"
	"time"

	"github.com/tunvs/tunvs/nat"
)

// EstimatorInterval is how often the rate estimator samples the counters:
// IPVS's 2 seconds.
const EstimatorInterval = 2 * time.Second

// Rates are what `ipvsadm -L --rate` shows: connections, packets and bytes
// per second, each smoothed as the kernel does.
type Rates struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}

// est is the kernel's struct ip_vs_estimator: the last counters and the
// smoothed rates, scaled (<<10 for conns and packets, <<5 for bytes).
type est struct {
	last                              nat.StatsSnapshot
	cps, inpps, outpps, inbps, outbps int64
	seen                              bool
}

// update is estimation_timer's body (Linux 6.1 ip_vs_est.c): every 2 s,
// rate = delta << 9 (per 2 s, so << 10 per s) or << 4 for bytes (<< 5 per
// s), and avg += (rate - avg) >> 2.
func (e *est) update(s nat.StatsSnapshot) {
	step := func(now, last uint64, shift uint, avg *int64) {
		d := now - last
		if now < last { // zeroed behind our back
			d = now
		}
		rate := int64(d << shift)
		*avg += (rate - *avg) >> 2
	}
	step(s.Conns, e.last.Conns, 9, &e.cps)
	step(s.InPkts, e.last.InPkts, 9, &e.inpps)
	step(s.OutPkts, e.last.OutPkts, 9, &e.outpps)
	step(s.InBytes, e.last.InBytes, 4, &e.inbps)
	step(s.OutBytes, e.last.OutBytes, 4, &e.outbps)
	e.last = s
}

// rates is ip_vs_read_estimator.
func (e *est) rates() Rates {
	if e == nil {
		return Rates{}
	}
	return Rates{
		CPS:    uint64(e.cps+0x1FF) >> 10,
		InPPS:  uint64(e.inpps+0x1FF) >> 10,
		OutPPS: uint64(e.outpps+0x1FF) >> 10,
		InBPS:  uint64(e.inbps+0xF) >> 5,
		OutBPS: uint64(e.outbps+0xF) >> 5,
	}
}

// Estimator keeps the rates of every service and real server of a table.
// The daemon calls Tick every EstimatorInterval (Run does); listings read
// it. A nil *Estimator reports zero rates.
type Estimator struct {
	mu    sync.Mutex
	svcs  map[*nat.Service]*est
	dests map[*nat.Dest]*est
}

// NewEstimator makes an estimator with no history.
func NewEstimator() *Estimator {
	return &Estimator{svcs: map[*nat.Service]*est{}, dests: map[*nat.Dest]*est{}}
}

// Tick samples every counter of t once. Services and servers gone from t
// are forgotten.
func (x *Estimator) Tick(t *nat.Table) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.svcs {
		e.seen = false
	}
	for _, e := range x.dests {
		e.seen = false
	}
	for _, s := range t.Services() {
		e := x.svcs[s]
		if e == nil {
			// A new estimator starts from the current counters
			// (ip_vs_start_estimator after the counters exist).
			e = &est{last: s.Stats.Snapshot()}
			x.svcs[s] = e
		} else {
			e.update(s.Stats.Snapshot())
		}
		e.seen = true
		for _, d := range s.Dests() {
			de := x.dests[d]
			if de == nil {
				de = &est{last: d.Stats.Snapshot()}
				x.dests[d] = de
			} else {
				de.update(d.Stats.Snapshot())
			}
			de.seen = true
		}
	}
	for k, e := range x.svcs {
		if !e.seen {
			delete(x.svcs, k)
		}
	}
	for k, e := range x.dests {
		if !e.seen {
			delete(x.dests, k)
		}
	}
}

// Zero is ip_vs_zero_estimator for everything: called after -Z.
func (x *Estimator) Zero() {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	clear(x.svcs)
	clear(x.dests)
}

// ZeroService forgets one service's history (-Z -t).
func (x *Estimator) ZeroService(s *nat.Service) {
	if x == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.svcs, s)
	for _, d := range s.Dests() {
		delete(x.dests, d)
	}
}

// ServiceRates are a service's rates.
func (x *Estimator) ServiceRates(s *nat.Service) Rates {
	if x == nil {
		return Rates{}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.svcs[s].rates()
}

// DestRates are a real server's rates.
func (x *Estimator) DestRates(d *nat.Dest) Rates {
	if x == nil {
		return Rates{}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.dests[d].rates()
}

// Run ticks every EstimatorInterval until done is closed.
func (x *Estimator) Run(t *nat.Table, done <-chan struct{}) {
	tk := time.NewTicker(EstimatorInterval)
	defer tk.Stop()
	for {
		select {
		case <-done:
			return
		case <-tk.C:
			x.Tick(t)
		}
	}
}
