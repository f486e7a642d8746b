package netstack

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// The ICMP errors the director sends on its own (port unreachable for a
// service without a real server, time exceeded) are rate-limited as the
// kernel limits its own (net/ipv4/icmp.c, net/ipv6/icmp.c), so that they
// never scale with an attacker's packet rate:
//
//   - icmpv4_mask_allow / icmpv6_mask_allow: only the types in
//     icmp_ratemask (default 0x1818: destination unreachable, source
//     quench, time exceeded, parameter problem) or icmpv6_ratemask (every
//     error but packet too big) are limited, and "fragmentation needed"
//     never is ("Don't limit PMTU discovery"): path MTU discovery must
//     not fail under load. sendTooBig is therefore not limited.
//   - icmp_global_allow: one bucket for the whole host, icmp_msgs_per_sec
//     (1000) credits a second refilled at most every HZ/50 (20 ms), at
//     most icmp_msgs_burst (50); each message takes 0, 1 or 2 credits at
//     random, one on average, so that the bucket's level cannot be read
//     from outside (CVE-2020-25705).
//   - inet_peer_xrlim_allow: then one bucket per destination,
//     icmp_ratelimit (1000 ms) of tokens a message, tokens accrue with
//     time up to XRLIM_BURST_FACTOR (6) messages.
//
// Destinations are kept in a fixed table indexed by address hash, so that
// the limiter allocates nothing; two destinations in one slot share
// nothing but the slot, the newer taking it over with a full burst, as a
// new inet_peer starts.
const (
	icmpMsgsPerSec = 1000
	icmpMsgsBurst  = 50
	icmpRateLimit  = int64(time.Second)
	xrlimBurst     = 6
	icmpPeers      = 4096 // slots of the per-destination table
)

type icmpPeer struct {
	addr   netip.Addr
	tokens int64 // nanoseconds of credit, as the kernel's jiffies
	last   int64
}

type icmpLimiter struct {
	mu     sync.Mutex
	credit int
	stamp  int64
	peers  [icmpPeers]icmpPeer
	// cost is the credits one message takes (0..2; tests fix it).
	cost func() int
}

func newICMPLimiter() *icmpLimiter {
	return &icmpLimiter{credit: icmpMsgsBurst, cost: func() int { return int(rand.Uint32N(3)) }}
}

// allow reports whether an ICMP error may go to dst at now (Unix ns).
func (l *icmpLimiter) allow(dst netip.Addr, now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.globalAllow(now) {
		return false
	}
	return l.peerAllow(dst, now)
}

// globalAllow is icmp_global_allow (before 6.11's lockless rewrite, which
// keeps the same arithmetic).
func (l *icmpLimiter) globalAllow(now int64) bool {
	const hz50 = int64(time.Second / 50)
	delta := min(now-l.stamp, int64(time.Second))
	if l.credit == 0 && delta < hz50 {
		return false
	}
	incr := 0
	if delta >= hz50 {
		incr = int(icmpMsgsPerSec * delta / int64(time.Second))
		if incr > 0 {
			l.stamp = now
		}
	}
	credit := min(l.credit+incr, icmpMsgsBurst)
	if credit == 0 {
		return false
	}
	l.credit = max(credit-l.cost(), 0)
	return true
}

// peerAllow is inet_peer_xrlim_allow with icmp_ratelimit.
func (l *icmpLimiter) peerAllow(dst netip.Addr, now int64) bool {
	a := dst.As16()
	h := uint64(14695981039346656037)
	for _, b := range a {
		h = (h ^ uint64(b)) * 1099511628211
	}
	p := &l.peers[h%icmpPeers]
	if p.addr != dst {
		// A new peer: rate_last 0, so its tokens start at the cap.
		*p = icmpPeer{addr: dst, tokens: xrlimBurst * icmpRateLimit, last: now}
	}
	tokens := p.tokens + now - p.last
	p.last = now
	tokens = min(tokens, xrlimBurst*icmpRateLimit)
	ok := tokens >= icmpRateLimit
	if ok {
		tokens -= icmpRateLimit
	}
	p.tokens = tokens
	return ok
}

// icmpAllowed asks the limiter, counting a refusal.
func (h *Host) icmpAllowed(dst netip.Addr) bool {
	if h.icmp.allow(dst, h.cfg.Now()) {
		return true
	}
	h.Counters.ICMPLimited.Add(1)
	return false
}
