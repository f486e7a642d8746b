package sched

import (
	"net/netip"
	"time"
)

// Locality-based least-connection (ip_vs_lblc.c) and its replicating
// variant (ip_vs_lblcr.c).
//
// Both remember, per destination address of the packets (Flow.Dst: these
// schedulers are meant for caches, where the client's target address
// varies), which server took it last: lblc one server, lblcr a set of
// servers. A connection to a remembered address goes to the remembered
// server (lblcr: the least loaded of its set) unless that server is gone,
// quiesced, or "overloaded" in the lblc sense: more active connections
// than its weight while some server of the service is below half of its
// weight. Otherwise the wlc choice is taken and remembered (lblcr adds it
// to the set).
//
// The kernel forgets addresses from a timer that runs every 60 s: every
// 30th run (counted only while the table holds at most 16384 entries)
// drops the entries unused for lblc(r)_expiration (sysctl, default 24 h);
// the other runs, while the table holds more than 16384 entries, drop up
// to a goal of entries unused for 6 minutes, bucket by bucket from a
// rover. lblcr also shrinks a set of more than one server by its most
// loaded member when the set has not changed for the expiration time.
// Here the timer is replayed lazily from the NAT table's clock (the time
// of the packet being scheduled, Flow.Now; Update, which has no packet,
// reads the last one): before each Update and Pick every run due by then
// is made at its own time, which gives the table the kernel's contents at
// every pick. The runs start 60 s after the scheduler first sees a clock
// reading, as the kernel's start at init_svc.
//
// Servers are identified by address and port. The kernel's entries hold a
// reference to the server's struct, which keeps a deleted server in the
// trash; re-adding the same address and port revives that struct, so an
// entry naming it becomes valid again. A deleted server is "unavailable"
// (IP_VS_DEST_CF_AVAILABLE clear) until then, but lblcr still reads its
// weight and counters, kept here through the Dest value last seen.

func init() {
	register("lblc", func() Scheduler { return newLBLC(false) })
	register("lblcr", func() Scheduler { return newLBLC(true) })
}

const (
	lblcTabBits = 10 // CONFIG_IP_VS_LBLC_TAB_BITS, CONFIG_IP_VS_LBLCR_TAB_BITS
	lblcTabSize = 1 << lblcTabBits
	lblcTabMask = lblcTabSize - 1
	// lblcMaxSize is the table's max_size; no entry is added once the
	// table holds 3/2 of it.
	lblcMaxSize = lblcTabSize * 16

	lblcCheckInterval     = 60 * time.Second     // CHECK_EXPIRE_INTERVAL
	lblcEntryTimeout      = 6 * 60 * time.Second // ENTRY_TIMEOUT
	lblcDefaultExpiration = 24 * time.Hour       // DEFAULT_EXPIRATION
	lblcFullCount         = 30                   // COUNT_FOR_FULL_EXPIRATION
)

// lblcEntry is an ip_vs_lblc_entry or ip_vs_lblcr_entry.
type lblcEntry struct {
	addr    netip.Addr
	lastuse time.Time
	// dest is lblc's server.
	dest netip.AddrPort
	// set is lblcr's server set, oldest first; the kernel's list has
	// the newest first, so walks go from the end. Each element is the
	// Dest value seen when it was added.
	set     []Dest
	lastmod time.Time // lblcr: last change of set
}

// lblcScheduler is the "lblc" or "lblcr" scheduler. The caller serialises
// Update and Pick, so no lock.
type lblcScheduler struct {
	replicate bool // lblcr
	dests     []Dest
	// at maps a listed server's address and port to its index.
	at map[netip.AddrPort]int

	// now is the clock: by default the time of the last packet picked
	// for (seen); tests replace it.
	now  func() time.Time
	seen time.Time
	// expiration is the lblc_expiration / lblcr_expiration sysctl.
	expiration time.Duration

	// buckets is the kernel's hash table, each bucket oldest first
	// (the kernel adds at the head of a bucket's hlist).
	buckets   [lblcTabSize][]*lblcEntry
	entries   int
	rover     int
	counter   int
	started   bool
	nextCheck time.Time
}

func newLBLC(replicate bool) *lblcScheduler {
	s := &lblcScheduler{
		replicate:  replicate,
		at:         map[netip.AddrPort]int{},
		expiration: lblcDefaultExpiration,
		counter:    1,
	}
	s.now = func() time.Time { return s.seen }
	return s
}

// Name returns "lblc" or "lblcr".
func (s *lblcScheduler) Name() string {
	if s.replicate {
		return "lblcr"
	}
	return "lblc"
}

// Update keeps the new list; the table is not touched (the kernel has no
// add, edit or delete hook for these schedulers).
func (s *lblcScheduler) Update(dests []Dest) {
	s.advance(s.now())
	s.dests = dests
	clear(s.at)
	for i, d := range dests {
		s.at[d.Addr()] = i
	}
}

// advance makes the expiry runs due by now; a zero time (no packet yet)
// is no reading.
func (s *lblcScheduler) advance(now time.Time) {
	if now.IsZero() {
		return
	}
	if !s.started {
		s.started = true
		s.nextCheck = now.Add(lblcCheckInterval)
		return
	}
	for !now.Before(s.nextCheck) {
		if s.entries == 0 {
			// Runs on an empty table only move the counter, which
			// cycles 1..30; skip to the last run due.
			k := int(now.Sub(s.nextCheck) / lblcCheckInterval)
			s.counter = (s.counter-1+k)%lblcFullCount + 1
			s.nextCheck = s.nextCheck.Add(time.Duration(k) * lblcCheckInterval)
		}
		s.checkExpire(s.nextCheck)
		s.nextCheck = s.nextCheck.Add(lblcCheckInterval)
	}
}

// checkExpire is ip_vs_lblc_check_expire / ip_vs_lblcr_check_expire run
// at time t.
func (s *lblcScheduler) checkExpire(t time.Time) {
	if s.counter%lblcFullCount == 0 {
		// ip_vs_lblc(r)_full_check: every bucket once from the
		// rover, which ends where it started.
		j := s.rover
		for range lblcTabSize {
			j = (j + 1) & lblcTabMask
			s.sweep(j, func(e *lblcEntry) bool { return !t.Before(e.lastuse.Add(s.expiration)) }, nil)
		}
		s.rover = j
		s.counter = 1
		return
	}
	if s.entries <= lblcMaxSize {
		s.counter++
		return
	}
	goal := min((s.entries-lblcMaxSize)*4/3, lblcMaxSize/2)
	j := s.rover
	for range lblcTabSize {
		j = (j + 1) & lblcTabMask
		s.sweep(j, func(e *lblcEntry) bool { return !t.Before(e.lastuse.Add(lblcEntryTimeout)) }, &goal)
		if goal <= 0 {
			break
		}
	}
	s.rover = j
}

// sweep drops the entries of bucket j that stale reports, newest first as
// the kernel walks its hlist, counting them down from *goal if goal is
// not nil. The whole bucket is swept even past the goal, as the kernel
// checks the goal only between buckets.
func (s *lblcScheduler) sweep(j int, stale func(*lblcEntry) bool, goal *int) {
	b := s.buckets[j]
	for k := len(b) - 1; k >= 0; k-- {
		if !stale(b[k]) {
			continue
		}
		b = append(b[:k], b[k+1:]...)
		s.entries--
		if goal != nil {
			*goal--
		}
	}
	clear(s.buckets[j][len(b):])
	s.buckets[j] = b
}

func lblcBucket(a netip.Addr) int { return int(hash32(addrFold(a), lblcTabBits)) }

// get is ip_vs_lblc(r)_get.
func (s *lblcScheduler) get(a netip.Addr) *lblcEntry {
	for _, e := range s.buckets[lblcBucket(a)] {
		if e.addr == a {
			return e
		}
	}
	return nil
}

// add hashes a new entry at the head of its bucket.
func (s *lblcScheduler) add(e *lblcEntry) {
	j := lblcBucket(e.addr)
	s.buckets[j] = append(s.buckets[j], e)
	s.entries++
}

// del unhashes an entry.
func (s *lblcScheduler) del(e *lblcEntry) {
	j := lblcBucket(e.addr)
	b := s.buckets[j]
	for k, x := range b {
		if x == e {
			b = append(b[:k], b[k+1:]...)
			b[len(b):cap(b)][0] = nil
			break
		}
	}
	s.buckets[j] = b
	s.entries--
}

// overloaded is the is_overloaded of lblc and lblcr: more active
// connections than weight while some listed server (any, quiesced or
// flagged overloaded included) has fewer than half its weight.
func (s *lblcScheduler) overloaded(d Dest) bool {
	if d.ActiveConns() <= d.Weight() {
		return false
	}
	for _, x := range s.dests {
		if x.ActiveConns()*2 < x.Weight() {
			return true
		}
	}
	return false
}

// Pick is ip_vs_lblc_schedule or ip_vs_lblcr_schedule.
func (s *lblcScheduler) Pick(f *Flow) int {
	if f == nil {
		f = &zeroFlow
	}
	if f.Now != 0 {
		s.seen = time.Unix(0, f.Now)
	}
	now := s.now()
	s.advance(now)
	if s.replicate {
		return s.pickLBLCR(f, now)
	}
	en := s.get(f.Dst)
	if en != nil {
		en.lastuse = now
		// The cache's server is used if it is still in the service,
		// not quiesced and not overloaded in the lblc sense. The
		// kernel does not look at its IP_VS_DEST_F_OVERLOAD flag
		// here, only when choosing anew.
		if i, ok := s.at[en.dest]; ok {
			if d := s.dests[i]; d.Weight() > 0 && !s.overloaded(d) {
				return i
			}
		}
	}
	i := wlcLeast(s.dests)
	if i < 0 {
		return -1
	}
	// ip_vs_lblc_new: keep an entry that already names the server,
	// otherwise replace it; no new entry when the table is full.
	ap := s.dests[i].Addr()
	if en != nil {
		if en.dest == ap {
			return i
		}
		s.del(en)
	}
	if s.entries >= lblcMaxSize*3/2 {
		return i
	}
	s.add(&lblcEntry{addr: f.Dst, lastuse: now, dest: ap})
	return i
}

// member returns the Dest to read for a set element, and its index in the
// list or -1 when it is not listed (not available).
func (s *lblcScheduler) member(e Dest) (Dest, int) {
	if i, ok := s.at[e.Addr()]; ok {
		return s.dests[i], i
	}
	return e, -1
}

// setMin is ip_vs_dest_set_min: the least loaded available member, newest
// first, first on ties; overloaded-flagged members are skipped; -1 if
// none. Returns the list index.
func (s *lblcScheduler) setMin(en *lblcEntry) int {
	k := len(en.set) - 1
	least := -1
	var loh, lw int64
	for ; k >= 0; k-- {
		d, i := s.member(en.set[k])
		if d.Overloaded() {
			continue
		}
		if d.Weight() > 0 && i >= 0 {
			least, loh, lw = i, int64(connOverhead(d)), int64(d.Weight())
			break
		}
	}
	if least < 0 {
		return -1
	}
	for k--; k >= 0; k-- {
		d, i := s.member(en.set[k])
		if d.Overloaded() {
			continue
		}
		doh, dw := int64(connOverhead(d)), int64(d.Weight())
		if loh*dw > doh*lw && i >= 0 {
			least, loh, lw = i, doh, dw
		}
	}
	return least
}

// setMax is ip_vs_dest_set_max: the most loaded member with a positive
// weight, available or not, newest first, first on ties. Returns the
// position in en.set, or -1.
func (s *lblcScheduler) setMax(en *lblcEntry) int {
	k := len(en.set) - 1
	most := -1
	var moh, mw int64
	for ; k >= 0; k-- {
		d, _ := s.member(en.set[k])
		if d.Weight() > 0 {
			most, moh, mw = k, int64(connOverhead(d)), int64(d.Weight())
			break
		}
	}
	if most < 0 {
		return -1
	}
	for k--; k >= 0; k-- {
		d, _ := s.member(en.set[k])
		doh, dw := int64(connOverhead(d)), int64(d.Weight())
		if moh*dw < doh*mw && dw > 0 {
			most, moh, mw = k, doh, dw
		}
	}
	return most
}

// setInsert is ip_vs_dest_set_insert with check: add d unless a member is
// the same server.
func (s *lblcScheduler) setInsert(en *lblcEntry, d Dest, now time.Time) {
	ap := d.Addr()
	for _, e := range en.set {
		if e.Addr() == ap {
			return
		}
	}
	en.set = append(en.set, d)
	en.lastmod = now
}

func (s *lblcScheduler) pickLBLCR(f *Flow, now time.Time) int {
	en := s.get(f.Dst)
	if en != nil {
		en.lastuse = now
		least := s.setMin(en)
		// A set of more than one server unchanged for the expiration
		// time loses its most loaded member (possibly the one just
		// chosen, which is still used).
		if len(en.set) > 1 && now.After(en.lastmod.Add(s.expiration)) {
			if m := s.setMax(en); m >= 0 {
				en.set = append(en.set[:m], en.set[m+1:]...)
				en.set[len(en.set):cap(en.set)][0] = nil
				en.lastmod = now
			}
		}
		if least >= 0 && !s.overloaded(s.dests[least]) {
			return least
		}
		i := wlcLeast(s.dests)
		if i < 0 {
			return -1
		}
		s.setInsert(en, s.dests[i], now)
		return i
	}
	i := wlcLeast(s.dests)
	if i < 0 {
		return -1
	}
	if s.entries >= lblcMaxSize*3/2 {
		return i
	}
	s.add(&lblcEntry{addr: f.Dst, lastuse: now, set: []Dest{s.dests[i]}, lastmod: now})
	return i
}
