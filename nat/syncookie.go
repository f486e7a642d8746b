package nat

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/siphash"
)

// SYN cookies as Linux makes them (net/ipv4/syncookies.c,
// net/ipv6/syncookies.c). The director's ISN towards the client is
//
//	H0(addrs, ports) + client ISN + count<<24 + ((H1(addrs, ports, count) + data) & 0xffffff)
//
// where count is the minute (tcp_cookie_time, TCP_SYNCOOKIE_PERIOD = 60 s),
// the H are SipHash-2-4 under two secret keys (cookie_hash's
// syncookie_secret[0] and [1]) and data is the index of the client's MSS
// in msstab. check_tcp_syn_cookie peels the layers off in reverse and
// accepts a cookie at most MAX_SYNCOOKIE_AGE-1 minutes old. The window
// scale, SACK and ECN bits a cookie cannot hold ride in the low 6 bits of
// the director's timestamp (cookie_init_timestamp), when the client sent
// one; without timestamps a cookie connection has neither window scaling
// nor SACK, as in Linux.

const (
	cookieBits    = 24 // COOKIEBITS
	cookieMask    = 1<<cookieBits - 1
	maxCookieAge  = 2 // MAX_SYNCOOKIE_AGE
	cookiePeriod  = 60e9
	tsBits        = 6 // TSBITS
	tsOptWscale   = 0xf
	tsOptSACK     = 1 << 4
	tsOptECN      = 1 << 5      // TS_OPT_ECN
	tsOptNoWscale = tsOptWscale // TS_OPT_WSCALE_MASK: the client sent no window scale
)

// msstab4 and msstab6 are the MSS values a cookie can hold (tcp_ipv4's
// and tcp_ipv6's msstab): the client's MSS is rounded down to one.
var (
	msstab4 = [4]uint16{536, 1300, 1440, 1460}
	msstab6 = [4]uint16{1280 - 60, 1480 - 60, 1500 - 60, 9000 - 60}
)

// cookieSecret is syncookie_secret: two SipHash keys, drawn once per table.
type cookieSecret [2][2]uint64

func newCookieSecret() cookieSecret {
	var b [32]byte
	_, _ = rand.Read(b[:])
	var s cookieSecret
	s[0][0] = binary.LittleEndian.Uint64(b[0:])
	s[0][1] = binary.LittleEndian.Uint64(b[8:])
	s[1][0] = binary.LittleEndian.Uint64(b[16:])
	s[1][1] = binary.LittleEndian.Uint64(b[24:])
	return s
}

// cookieHash is cookie_hash: SipHash of the packet's addresses and ports
// (as the client sent them: client -> VIP) and count, under key c.
func (s *cookieSecret) cookieHash(p *Packet, count uint32, c int) uint32 {
	// The layout of net/ipv6/syncookies.c's "combined": saddr, daddr,
	// count, sport, dport; IPv4 packs its four words the same way.
	var in [40]byte
	n := 0
	if p.V6 {
		copy(in[0:32], p.B[8:40])
		n = 32
	} else {
		copy(in[0:8], p.B[12:20])
		n = 8
	}
	binary.LittleEndian.PutUint32(in[n:], count)
	binary.BigEndian.PutUint16(in[n+4:], p.SrcPort)
	binary.BigEndian.PutUint16(in[n+6:], p.DstPort)
	return uint32(siphash.Sum64(s[c][0], s[c][1], in[:n+8]))
}

// cookieCount is tcp_cookie_time for the clock now (Unix ns).
func cookieCount(now int64) uint32 { return uint32(now / cookiePeriod) }

// makeCookie is secure_tcp_syn_cookie for the SYN p, whose sequence
// number is sseq, carrying data (the MSS index).
func (s *cookieSecret) makeCookie(p *Packet, sseq, data uint32, now int64) uint32 {
	count := cookieCount(now)
	return s.cookieHash(p, 0, 0) + sseq + count<<cookieBits +
		((s.cookieHash(p, count, 1) + data) & cookieMask)
}

// checkCookie is check_tcp_syn_cookie for the ACK p: cookie is its
// acknowledgment number less one, sseq its sequence number less one. It
// returns the data and whether the cookie is the director's and fresh.
func (s *cookieSecret) checkCookie(p *Packet, cookie, sseq uint32, now int64) (uint32, bool) {
	count := cookieCount(now)
	cookie -= s.cookieHash(p, 0, 0) + sseq
	diff := (count - cookie>>cookieBits) & (0xffffffff >> cookieBits)
	if diff >= maxCookieAge {
		return 0, false
	}
	return (cookie - s.cookieHash(p, count-diff, 1)) & cookieMask, true
}

// mssIndex is the msstab entry a client's MSS is rounded down to
// (__cookie_v4_init_sequence); 0 when it is below every entry.
func mssIndex(tab *[4]uint16, mss uint16) uint32 {
	i := len(tab) - 1
	for ; i > 0; i-- {
		if mss >= tab[i] {
			break
		}
	}
	return uint32(i)
}

// cookieTimestamp is cookie_init_timestamp: the director's TSval, a
// millisecond clock whose low 6 bits carry the client's window scale (or
// tsOptNoWscale), SACK permission and ECN, never ahead of the clock.
func cookieTimestamp(now int64, wscale int8, sack, ecn bool) uint32 {
	tsNow := uint32(now / 1e6)
	opts := uint32(tsOptNoWscale)
	if wscale >= 0 {
		opts = uint32(wscale) & tsOptWscale
	}
	if sack {
		opts |= tsOptSACK
	}
	if ecn {
		opts |= tsOptECN
	}
	ts := tsNow>>tsBits<<tsBits | opts
	if ts > tsNow {
		ts -= 1 << tsBits
	}
	return ts
}
