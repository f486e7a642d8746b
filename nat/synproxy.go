package nat

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/tunvs/tunvs/internal/csum"
)

// The SYN proxy, as DPVS's (src/ipvs/ip_vs_synproxy.c) and netfilter's
// SYNPROXY target (net/netfilter/nf_synproxy_core.c) do it, with Linux's
// SYN cookies (syncookie.go):
//
//  1. A client's SYN to a proxied service is answered by the director
//     itself, rewritten in place into a SYN-ACK whose sequence number is
//     a cookie (Verdict Reply). Nothing is kept: a spoofed flood costs
//     the table nothing (dp_vs_synproxy_syn_rcv).
//  2. Only an ACK whose acknowledgment proves the cookie makes a
//     connection: the service schedules a real server and the ACK is
//     rewritten into a SYN to it, with the client's ISN and the options
//     the cookie kept (MSS, and with timestamps the window scale and SACK)
//     (dp_vs_synproxy_ack_rcv, syn_proxy_send_rs_syn).
//  3. The real server's SYN-ACK gives the two offsets the connection
//     lives with: its ISN against the cookie, its timestamp clock against
//     the director's. The SYN-ACK is turned into the ACK the client would
//     have sent (or into the client's first data segment, held meanwhile),
//     which completes the server's handshake (dp_vs_synproxy_synack_rcv).
//  4. From then on every segment is translated: towards the client the
//     sequence number and TSval by the offsets (dp_vs_synproxy_snat_handler,
//     synproxy_tstamp_adjust), towards the server the acknowledgment, the
//     SACK blocks and TSecr (dp_vs_synproxy_dnat_handler,
//     syn_proxy_filter_opt_outin); windows are rescaled when the server's
//     window scale is not the one the director offered.
//     ICMP errors from the client's side quote the cookie's numbers:
//     the server gets them with its own (spICMPIn), as it checks them.
//
// Data the client sends after its ACK, before the real server answered:
// the first segment is held (one per connection, at most heldMax bytes,
// at most maxHeld connections at once, in pooled buffers) and replaces
// the SYN-ACK on the way to the server, so a request sent right after
// connect() costs no retransmission timeout; later ones are dropped and
// the client retransmits them, as DPVS bounds its saved ACKs
// (max_ack_saved). Each such client packet also resends the SYN to the
// server, at most once per synResendGap: the client's retransmissions pace
// the director's; a timer resends it too, for a client that sends nothing
// (synretry.go), as DPVS does from a copy of the SYN.
//
// What the SYN proxy cannot give a connection: ECN, window scaling and
// SACK to a client without timestamps (the cookie has nowhere else to
// keep them, as Linux's: cookie_v4_init_sequence keeps only the MSS,
// cookie_timestamp_decode the rest), TCP Fast Open data in the SYN (not
// acknowledged: the client sends it again), and options the real server
// would have offered but the client did not. ECN with timestamps is in
// synecn.go.

// The "synproxy" knob: when a SYN gets a cookie.
const (
	// SynProxyOff: only services with --synproxy.
	SynProxyOff = 0
	// SynProxyAuto (the default): also every other TCP service while
	// its half-open connections are at synproxy_backlog, as Linux's
	// tcp_syncookies=1 sends cookies only while a listener's SYN queue
	// is full (halfopen.go), or while the table is at its bound.
	SynProxyAuto = 1
	// SynProxyAlways: every TCP service, as tcp_syncookies=2.
	SynProxyAlways = 2
)

const (
	// synWscale is the window scale the director offers a client that
	// asked for one: Linux's for its default receive buffers, so that a
	// Linux real server's windows pass unchanged.
	synWscale = 7
	// synTTL is the TTL (hop limit) of the director's own segments:
	// Linux's ip_default_ttl.
	synTTL = 64
	// heldMax and maxHeld bound the data held while a real server's
	// handshake is under way (see above).
	heldMax = 2048
	maxHeld = 4096
	// synResendGap: the least time between two SYNs to a real server.
	synResendGap = 200e6
)

// Phases of a SYN-proxied connection.
const (
	spSynSent     = iota // the SYN to the real server is out
	spEstablished        // offsets known: every segment is translated
)

// syn is the SYN proxy state of a connection with flagSynProxy, kept out
// of line in its connExt (see connext.go).
func (c *Conn) syn() *synState { return c.x.sp }

// synState is a SYN-proxied connection's handshake and offsets.
type synState struct {
	phase atomic.Uint32
	mu    sync.Mutex // the fields marked so, while the phase is spSynSent

	// From the cookie ACK; fixed once the connection is published.
	clientISN, cookieISN uint32
	cookieTS             uint32 // the director's TSval in its SYN-ACK
	mss                  uint16 // the client's, as the cookie kept it
	cws                  int8   // the client's window scale; -1: none
	sack, ts             bool
	ecn                  bool // the client was told ECN is on (synecn.go)

	// Under mu while the phase is spSynSent.
	clientTS uint32 // the client's latest TSval
	cwin     uint16 // the client's latest window, in its scale
	lastSyn  int64  // when the SYN to the server last went
	retries  uint8  // SYNs the timer resent (synretry.go)
	held     *[heldMax]byte
	heldLen  int

	// From the real server's SYN-ACK, written before phase becomes
	// spEstablished and read only after.
	out     SeqAdj // the server's numbers into the cookie's (seqadj.go)
	tsDelta uint32 // cookie TSval - server TSval
	rsTS    bool   // the server does timestamps too
	rsTSval uint32 // its TSval in the SYN-ACK (to ACK it again)
	rsISN   uint32
	// Window rescaling: toClient shifts a server window into the scale the
	// client was given (left by rsWS, right by synWscale); toServer does the
	// same for a client window when the server does no window scaling.
	rsWS     int8
	rescale  bool
	toServer int8
	// ecnStrip: the client was told ECN is on and the server said no:
	// the client's packets lose their ECN marks (synecn.go).
	ecnStrip bool
	// synced: made by a sync backup from the master's offsets
	// (synsync.go); nothing of the handshake is known.
	synced bool
}

// synProxyStats are the SYN proxy's counters.
type synProxyStats struct {
	cookiesSent   atomic.Uint64 // SYN-ACKs with a cookie sent
	cookieACKs    atomic.Uint64 // ACKs that proved a cookie: connections made
	badCookieACKs atomic.Uint64 // ACKs to a proxied service with no connection whose cookie failed
	synResent     atomic.Uint64 // SYNs resent to a real server
	rsReset       atomic.Uint64 // real servers that answered the SYN with a reset
	held          atomic.Uint64 // client data segments held for the server's handshake
	heldDropped   atomic.Uint64 // client segments dropped meanwhile (retransmitted by the client)
	noRoom        atomic.Uint64 // packets too short a buffer to rebuild in place
	rsTimeout     atomic.Uint64 // connections given up: the server never answered (synretry.go)
	ecnOff        atomic.Uint64 // connections taken out of ECN: the server refused it (synecn.go)
	heldNow       atomic.Int64

	pend spPending // connections waiting for their server (synretry.go)
}

// SynProxyCounter is one counter of the SYN proxy, for metrics.
type SynProxyCounter struct {
	Name, Help string
	Value      uint64
}

// SynProxyCounters returns the SYN proxy's counters.
func (t *Table) SynProxyCounters() []SynProxyCounter {
	s := &t.sp
	return []SynProxyCounter{
		{"cookies_sent", "SYN-ACKs with a SYN cookie the director sent", s.cookiesSent.Load()},
		{"cookie_acks", "ACKs that proved a cookie and made a connection", s.cookieACKs.Load()},
		{"bad_cookie_acks", "ACKs without a connection whose cookie failed (left to the stack, which resets them)", s.badCookieACKs.Load()},
		{"syn_resent", "SYNs resent to a real server, on a client's retransmission or the director's timer", s.synResent.Load()},
		{"rs_reset", "real servers that refused the SYN with a reset, passed on to the client", s.rsReset.Load()},
		{"ecn_off", "connections whose client was given ECN and whose real server refused it: the client's packets are made not-ECT", s.ecnOff.Load()},
		{"rs_timeout", "connections given up after the real server left every SYN unanswered; the client was reset", s.rsTimeout.Load()},
		{"data_held", "client data segments held until the real server's handshake", s.held.Load()},
		{"data_dropped", "client segments dropped during the real server's handshake (the client retransmits)", s.heldDropped.Load()},
		{"no_room", "packets whose buffer had no room to be rebuilt in place", s.noRoom.Load()},
	}
}

// SynProxy is the "synproxy" knob (SynProxyOff, Auto or Always).
func (t *Table) SynProxy() int { return int(t.spMode.Load()) }

// SetSynProxy sets the "synproxy" knob (clamped to its range).
func (t *Table) SetSynProxy(mode int) { t.setSysctl("synproxy", min(max(mode, 0), SynProxyAlways)) }

var heldPool = sync.Pool{New: func() any { return new([heldMax]byte) }}

// spEligible: a TCP packet the proxy can rebuild in place: not a
// fragment, no IPv6 extension header, not a super-packet.
func spEligible(p *Packet) bool {
	return !p.Frag && p.segLen == 0 && (!p.V6 || p.L4 == ipv6Header)
}

// synProxyOn says whether a SYN to svc gets a cookie.
func (t *Table) synProxyOn(svc *Service) bool {
	if svc.synProxy.Load() {
		return true
	}
	switch t.spMode.Load() {
	case SynProxyAlways:
		return true
	case SynProxyAuto:
		return t.synQueueFull(svc) || t.n.Load() >= int64(t.cfg.MaxConns)
	}
	return false
}

// synProxyMayACK says whether an ACK without a connection to svc may
// carry a cookie: whenever the proxy could have answered a SYN. As
// DPVS's dp_vs_synproxy_ack_rcv, not whether it would now: the table or
// the flag may have changed since.
func (t *Table) synProxyMayACK(svc *Service) bool {
	return svc.synProxy.Load() || t.spMode.Load() != SynProxyOff
}

// spInit is what a cookie ACK tells of the client.
type spInit struct {
	clientISN, cookieISN uint32
	cookieTS, clientTS   uint32
	mss, cwin            uint16
	cws                  int8
	sack, ts, ecn        bool
}

// tcpOpts are the TCP options the proxy reads (tcp_parse_options).
type tcpOpts struct {
	mss          uint16
	ws           int8 // -1: none
	sack, ts     bool
	tsval, tsecr uint32
	tsOff        int // offset of the timestamp option's kind in the header
}

func parseTCPOpts(th []byte, o *tcpOpts) {
	*o = tcpOpts{ws: -1}
	th = th[:min(int(th[12]>>4)*4, len(th))]
	forOptions(th, func(k uint8, i, l int) bool {
		switch {
		case k == tcpOptMSS && l == 4:
			o.mss = binary.BigEndian.Uint16(th[i+2:])
		case k == 3 && l == 3:
			// tcp_parse_options clamps to TCP_MAX_WSCALE.
			o.ws = int8(min(th[i+2], 14))
		case k == 4 && l == 2:
			o.sack = true
		case k == 8 && l == 10:
			o.ts = true
			o.tsval = binary.BigEndian.Uint32(th[i+2:])
			o.tsecr = binary.BigEndian.Uint32(th[i+6:])
			o.tsOff = i
		}
		return true
	})
}

// optsLen is the length putOpts writes.
func optsLen(mss bool, ts, sack bool, ws int8) int {
	n := 0
	if mss {
		n += 4
	}
	if ts || sack {
		n += 4
		if ts {
			n += 8
		}
	}
	if ws >= 0 {
		n += 4
	}
	return n
}

// putOpts writes options in the order and padding of Linux's
// tcp_options_write: MSS, SACK-permitted with timestamps (or NOP NOP
// before either alone), NOP and window scale.
func putOpts(o []byte, mss uint16, ts bool, tsval, tsecr uint32, sack bool, ws int8) {
	i := 0
	if mss != 0 {
		o[0], o[1] = 2, 4
		binary.BigEndian.PutUint16(o[2:], mss)
		i = 4
	}
	switch {
	case ts:
		if sack {
			o[i], o[i+1] = 4, 2
		} else {
			o[i], o[i+1] = 1, 1
		}
		o[i+2], o[i+3] = 8, 10
		binary.BigEndian.PutUint32(o[i+4:], tsval)
		binary.BigEndian.PutUint32(o[i+8:], tsecr)
		i += 12
	case sack:
		o[i], o[i+1], o[i+2], o[i+3] = 1, 1, 4, 2
		i += 4
	}
	if ws >= 0 {
		o[i], o[i+1], o[i+2], o[i+3] = 1, 3, 3, byte(ws)
	}
}

// resizeL4 makes the TCP segment n bytes long (header and payload), within
// the buffer's capacity, and fixes the IP length (and the IPv4 header
// checksum).
func (p *Packet) resizeL4(n int) bool {
	end := p.L4 + n
	if end > cap(p.B) || end > 0xffff+ipv6Header {
		return false
	}
	p.B = p.B[:end]
	if p.V6 {
		put16(p.B[4:], uint16(end-ipv6Header))
	} else {
		put16(p.B[2:], uint16(end))
		csum.SetIPv4Header(p.B[:p.L4])
	}
	return true
}

// turnAround swaps the packet's addresses and ports and gives it the
// director's TTL, for a segment the director sends back.
func (p *Packet) turnAround() {
	b := p.B
	if p.V6 {
		var a [16]byte
		copy(a[:], b[8:24])
		copy(b[8:24], b[24:40])
		copy(b[24:40], a[:])
		b[0], b[1], b[2], b[3] = 0x60, 0, 0, 0 // no traffic class, no flow label
		b[7] = synTTL
	} else {
		var a [4]byte
		copy(a[:], b[12:16])
		copy(b[12:16], b[16:20])
		copy(b[16:20], a[:])
		b[1] = 0             // TOS, as DPVS's syn_proxy_reuse_mbuf
		b[6], b[7] = 0x40, 0 // DF, as Linux's TCP
		b[8] = synTTL        // ip_default_ttl
		csum.SetIPv4Header(b[:p.L4])
	}
	th := b[p.L4:]
	th[0], th[1], th[2], th[3] = th[2], th[3], th[0], th[1]
}

// finishTCP computes the TCP checksum whole and parses the packet again,
// so that p describes what it now is.
func (p *Packet) finishTCP() {
	th := p.B[p.L4:]
	th[16], th[17] = 0, 0
	put16(th[16:], ^csum.Fold(csum.Sum(th, csum.PseudoIP(p.B, p.V6, ipProtoTCP, len(th)))))
	Parse(p.B, p)
}

// advMSS is the MSS the director offers a client: the MTU of the link
// its SYN came by (Offload.MTU), where the SYN-ACK goes back and the
// client's segments arrive, or else of its route (dst_metric_advmss),
// or Ethernet's, less the headers.
func (t *Table) advMSS(p *Packet) uint16 {
	hdr := 40
	if p.V6 {
		hdr = 60
	}
	mtu := 1500
	if p.inMTU > hdr {
		mtu = p.inMTU
	} else if f := t.cfg.EgressMTU; f != nil {
		if m := f(p.Src()); m > hdr {
			mtu = m
		}
	}
	return uint16(min(mtu-hdr, 0xffff))
}

// cookieReply turns the client's SYN p into the director's SYN-ACK with a
// cookie, in place (syn_proxy_reuse_mbuf): no state is kept. Its options
// answer the client's: MSS, and with timestamps SACK-permitted and a window
// scale if the client offered them (the timestamp keeps them).
func (t *Table) cookieReply(p *Packet, now int64) Result {
	th := p.B[p.L4:]
	var o tcpOpts
	parseTCPOpts(th, &o)
	tab := &msstab4
	if p.V6 {
		tab = &msstab6
	}
	mss := o.mss
	if mss == 0 {
		mss = 536 // TCP_MSS_DEFAULT
	}
	cseq := binary.BigEndian.Uint32(th[4:])
	isn := t.cookie.makeCookie(p, cseq, mssIndex(tab, mss), now)
	ws, sack := int8(-1), false
	var tsval uint32
	if o.ts {
		if o.ws >= 0 {
			ws = synWscale
		}
		sack = o.sack
		tsval = cookieTimestamp(now, o.ws, o.sack, ecnSetup(p))
	}
	adv := t.advMSS(p)
	n := tcpMinHeader + optsLen(true, o.ts, sack, ws)
	if !p.resizeL4(n) {
		// A bare SYN in a buffer with no room: answer without options
		// (the client assumes 536).
		n, adv = tcpMinHeader+optsLen(false, o.ts, sack, ws), 0
		if !p.resizeL4(n) {
			t.sp.noRoom.Add(1)
			return t.drop(DropSynProxy)
		}
	}
	p.turnAround()
	th = p.B[p.L4:]
	binary.BigEndian.PutUint32(th[4:], isn)
	binary.BigEndian.PutUint32(th[8:], cseq+1)
	th[12] = byte(n/4) << 4
	th[13] = tcpSYN | tcpACK
	if o.ts && ecnSetup(p) {
		th[13] |= tcpECE // tcp_ecn_make_synack
	}
	put16(th[14:], 0xffff) // a SYN's window is never scaled
	put16(th[18:], 0)
	putOpts(th[tcpMinHeader:n], adv, o.ts, tsval, o.tsval, sack, ws)
	p.finishTCP()
	t.sp.cookiesSent.Add(1)
	return Result{Verdict: Reply, Rebuilt: true}
}

// checkCookieACK reads a client's ACK to a proxied service: whether it
// proves a cookie, and what the cookie and the timestamp kept
// (cookie_v4_check, cookie_timestamp_decode).
func (t *Table) checkCookieACK(p *Packet, now int64, s *spInit) bool {
	th := p.B[p.L4:]
	seq, ack := binary.BigEndian.Uint32(th[4:]), binary.BigEndian.Uint32(th[8:])
	data, ok := t.cookie.checkCookie(p, ack-1, seq-1, now)
	if !ok || data >= uint32(len(msstab4)) {
		return false
	}
	tab := &msstab4
	if p.V6 {
		tab = &msstab6
	}
	var o tcpOpts
	parseTCPOpts(th, &o)
	*s = spInit{clientISN: seq - 1, cookieISN: ack - 1, mss: tab[data], cws: -1,
		cwin: binary.BigEndian.Uint16(th[14:])}
	if o.ts {
		s.ts = true
		s.clientTS, s.cookieTS = o.tsval, o.tsecr
		if w := o.tsecr & tsOptWscale; w != tsOptNoWscale {
			s.cws = int8(min(w, 14))
		}
		s.sack = o.tsecr&tsOptSACK != 0
		s.ecn = o.tsecr&tsOptECN != 0 // cookie_ecn_ok
	}
	return true
}

// spStart sets up a new connection's proxy state from its cookie ACK p,
// holds the ACK's data if it has any, and rebuilds p into the SYN to the
// real server. It runs before the connection is published.
func (t *Table) spStart(c *Conn, s *spInit, p *Packet, now int64) bool {
	sp := new(synState)
	c.ext().sp = sp
	c.setFlag(flagSynProxy)
	sp.clientISN, sp.cookieISN, sp.cookieTS = s.clientISN, s.cookieISN, s.cookieTS
	sp.mss, sp.cws, sp.sack, sp.ts, sp.ecn = s.mss, s.cws, s.sack, s.ts, s.ecn
	sp.clientTS, sp.cwin = s.clientTS, s.cwin
	sp.lastSyn = now
	t.spHold(sp, p)
	return t.spSyn(sp, p)
}

// spHold keeps a copy of the client segment p if it carries data and the
// bounds allow (sp.mu held, or the connection not yet published).
func (t *Table) spHold(sp *synState, p *Packet) {
	th := p.B[p.L4:]
	if len(th) <= int(th[12]>>4)*4 {
		return // no data
	}
	if sp.held != nil || len(p.B) > heldMax || p.segLen > 0 || t.sp.heldNow.Add(1) > maxHeld {
		if sp.held == nil && len(p.B) <= heldMax && p.segLen == 0 {
			t.sp.heldNow.Add(-1)
		}
		t.sp.heldDropped.Add(1)
		return
	}
	sp.held = heldPool.Get().(*[heldMax]byte)
	sp.heldLen = copy(sp.held[:], p.B)
	if p.partial {
		// The device was to finish the checksum; the copy goes out
		// later in another packet's buffer, without offloads.
		csum.Finish(sp.held[:sp.heldLen], p.L4, 16)
	}
	t.sp.held.Add(1)
}

// spRelease gives back a held segment's buffer.
func (t *Table) spRelease(sp *synState) {
	if sp.held != nil {
		heldPool.Put(sp.held)
		sp.held, sp.heldLen = nil, 0
		t.sp.heldNow.Add(-1)
	}
}

// spSyn rebuilds the client segment p (an ACK, with or without data) into
// the SYN the client would have sent the real server, still addressed
// client -> VIP: its ISN, and the options the cookie kept, its latest
// timestamp.
func (t *Table) spSyn(sp *synState, p *Packet) bool {
	th := p.B[p.L4:]
	var o tcpOpts
	parseTCPOpts(th, &o)
	tsval := sp.clientTS
	if o.ts {
		tsval = o.tsval
	}
	n := tcpMinHeader + optsLen(true, sp.ts, sp.sack, sp.cws)
	if !p.resizeL4(n) {
		t.sp.noRoom.Add(1)
		return false
	}
	th = p.B[p.L4:]
	binary.BigEndian.PutUint32(th[4:], sp.clientISN)
	binary.BigEndian.PutUint32(th[8:], 0)
	th[12] = byte(n/4) << 4
	th[13] = tcpSYN
	if sp.ecn {
		th[13] |= tcpECE | tcpCWR // an ECN-setup SYN (tcp_ecn_send_syn)
	}
	win := uint32(sp.cwin)
	if sp.cws > 0 {
		win <<= uint(sp.cws)
	}
	put16(th[14:], uint16(min(win, 0xffff)))
	put16(th[18:], 0)
	putOpts(th[tcpMinHeader:n], sp.mss, sp.ts, tsval, 0, sp.sack, sp.cws)
	p.finishTCP()
	return true
}

// spClientPending handles a client segment while the real server's
// handshake is under way: its data is held if there is room, and it
// becomes the SYN again if the last one is old enough (the first may be
// lost); else it is dropped.
func (t *Table) spClientPending(c *Conn, p *Packet, now int64) Result {
	sp := c.syn()
	if p.TCPFlags&tcpRST != 0 {
		// The client gives up: the server, which has the SYN, hears it.
		return t.forward(c, DirIn, p, now)
	}
	if p.TCPFlags&tcpSYN != 0 || !p.VerifyL4Checksum() {
		return t.drop(DropSynProxy)
	}
	sp.mu.Lock()
	if sp.phase.Load() != spSynSent {
		sp.mu.Unlock()
		return t.forward(c, DirIn, p, now)
	}
	var o tcpOpts
	parseTCPOpts(p.B[p.L4:], &o)
	if o.ts {
		sp.clientTS = o.tsval
	}
	sp.cwin = binary.BigEndian.Uint16(p.B[p.L4+14:])
	t.spHold(sp, p)
	resend := now-sp.lastSyn >= synResendGap
	if resend {
		sp.lastSyn = now
	}
	sp.mu.Unlock()
	if !resend || !t.spSyn(sp, p) {
		return t.drop(DropSynProxy)
	}
	t.sp.synResent.Add(1)
	return t.rebuilt(t.forward(c, DirIn, p, now))
}

// spServer handles a segment from the real server of a SYN-proxied
// connection before it is translated; done is false when it is an
// ordinary one of an established connection.
func (t *Table) spServer(c *Conn, p *Packet, now int64) (r Result, done bool) {
	sp := c.syn()
	th := p.B[p.L4:]
	fl := p.TCPFlags
	if sp.phase.Load() == spEstablished {
		if fl&(tcpSYN|tcpACK|tcpRST) == tcpSYN|tcpACK && !sp.synced && binary.BigEndian.Uint32(th[4:]) == sp.rsISN {
			// The server sends its SYN-ACK again: the ACK was lost.
			// (On a sync backup, which knows neither ISN, it goes to
			// the client translated, and the client's answer, an
			// ACK, completes the server's handshake.)
			return t.spACK(c, sp, p, now), true
		}
		return Result{}, false
	}
	ack := binary.BigEndian.Uint32(th[8:])
	switch {
	case fl&(tcpSYN|tcpACK|tcpRST) == tcpSYN|tcpACK && ack == sp.clientISN+1 && p.VerifyL4Checksum():
	case fl&tcpRST != 0 && fl&tcpACK != 0 && ack == sp.clientISN+1:
		// Refused: the client is told, at the sequence number it
		// expects (DPVS: "get rst from rs").
		p.put32(th, tcpSeqOff, sp.cookieISN+1)
		t.sp.rsReset.Add(1)
		return t.forward(c, DirOut, p, now), true
	default:
		return t.drop(DropSynProxy), true
	}
	var o tcpOpts
	parseTCPOpts(th, &o)
	rsISN := binary.BigEndian.Uint32(th[4:])
	sp.mu.Lock()
	if sp.phase.Load() != spSynSent {
		sp.mu.Unlock()
		return t.spServer(c, p, now)
	}
	sp.rsISN = rsISN
	sp.out.Init(int32(sp.cookieISN - rsISN))
	if sp.ts && o.ts {
		sp.rsTS, sp.rsTSval = true, o.tsval
		sp.tsDelta = sp.cookieTS - o.tsval
	}
	// An ECN-setup SYN-ACK has ECE without CWR (tcp_ecn_rcv_synack).
	sp.ecnStrip = sp.ecn && fl&(tcpECE|tcpCWR) != tcpECE
	if sp.ecnStrip {
		t.sp.ecnOff.Add(1)
	}
	if sp.cws >= 0 {
		// The client was offered synWscale; the server scales by
		// its own, or not at all (then neither does the client's
		// window mean to it what the client means).
		sp.rsWS = max(o.ws, 0)
		sp.rescale = sp.rsWS != synWscale
		if o.ws < 0 {
			sp.toServer = sp.cws
		}
	}
	held, heldLen := sp.held, sp.heldLen
	sp.held, sp.heldLen = nil, 0
	sp.phase.Store(spEstablished)
	sp.mu.Unlock()
	if held != nil {
		fits := heldLen <= cap(p.B)
		if fits {
			copy(p.B[:heldLen], held[:heldLen])
			fits = Parse(p.B[:heldLen], p) == DropNone
		}
		heldPool.Put(held)
		t.sp.heldNow.Add(-1)
		if fits {
			return t.rebuilt(t.forward(c, DirIn, p, now)), true
		}
		t.sp.heldDropped.Add(1)
		// p is no longer the SYN-ACK: nothing to rebuild from.
		return t.drop(DropSynProxy), true
	}
	return t.spACK(c, sp, p, now), true
}

// spACK rebuilds the real server's SYN-ACK p into the ACK the client would
// have sent, addressed client -> VIP, and forwards it: the translation
// takes it to the server's numbers.
func (t *Table) spACK(c *Conn, sp *synState, p *Packet, now int64) Result {
	ca, va := c.CAddr(), c.VAddr()
	if ca.Is6() != p.V6 || va.Is6() != p.V6 {
		return t.drop(DropSynProxy)
	}
	ts := sp.ts && sp.rsTS
	n := tcpMinHeader
	if ts {
		n += 12
	}
	if !p.resizeL4(n) {
		t.sp.noRoom.Add(1)
		return t.drop(DropSynProxy)
	}
	b := p.B
	if p.V6 {
		a, v := ca.As16(), va.As16()
		copy(b[8:24], a[:])
		copy(b[24:40], v[:])
		b[7] = synTTL
	} else {
		a, v := ca.As4(), va.As4()
		copy(b[12:16], a[:])
		copy(b[16:20], v[:])
		b[8] = synTTL
		csum.SetIPv4Header(b[:p.L4])
	}
	th := b[p.L4:]
	put16(th[0:], c.CPort)
	put16(th[2:], c.VPort)
	sp.mu.Lock()
	clientTS, cwin := sp.clientTS, sp.cwin
	sp.mu.Unlock()
	binary.BigEndian.PutUint32(th[4:], sp.clientISN+1)
	binary.BigEndian.PutUint32(th[8:], sp.cookieISN+1)
	th[12] = byte(n/4) << 4
	th[13] = tcpACK
	put16(th[14:], cwin)
	put16(th[18:], 0)
	if ts {
		putOpts(th[tcpMinHeader:n], 0, true, clientTS, sp.rsTSval+sp.tsDelta, false, -1)
	}
	p.finishTCP()
	return t.rebuilt(t.forward(c, DirIn, p, now))
}

// rebuilt marks a forwarded result as a rebuilt packet.
func (t *Table) rebuilt(r Result) Result {
	r.Rebuilt = true
	return r
}

// translate moves an established SYN-proxied segment between the
// client's numbers and the server's (see the top of the file): sequence
// numbers, acknowledgments and SACK blocks by SeqAdj, timestamps by the
// clocks' offset (synproxy_tstamp_adjust), windows by the scales; and
// takes the client's packets out of ECN when the server does none
// (synecn.go). False: the packet is to be dropped.
func (sp *synState) translate(dir Dir, p *Packet) bool {
	th := p.tcpHeader()
	if th == nil {
		return true
	}
	var o tcpOpts
	if sp.rsTS {
		parseTCPOpts(th, &o)
	}
	if dir == DirOut {
		p.AdjustSeq(&sp.out)
		if o.ts {
			p.put32(th, o.tsOff+2, o.tsval+sp.tsDelta)
		}
		if sp.rescale && th[13]&tcpSYN == 0 {
			w := uint32(binary.BigEndian.Uint16(th[14:])) << uint(sp.rsWS) >> synWscale
			p.put16(th, 14, uint16(min(w, 0xffff)))
		}
		return true
	}
	if sp.ecnStrip && !p.stripECN() {
		return false
	}
	p.AdjustAck(&sp.out)
	if o.ts {
		p.put32(th, o.tsOff+6, o.tsecr-sp.tsDelta)
	}
	if sp.toServer > 0 {
		w := uint32(binary.BigEndian.Uint16(th[14:])) << uint(sp.toServer)
		p.put16(th, 14, uint16(min(w, 0xffff)))
	}
	return true
}

// setInnerSeq rewrites the sequence number of the TCP segment an ICMP
// error quotes, if the quote holds it, keeping the quoted TCP checksum (if
// quoted) and the ICMP checksum right.
func (p *Packet) setInnerSeq(v uint32) {
	b, in := p.B, &p.Inner
	if !p.ICMPError || in.Proto != ipProtoTCP || p.innerLater || in.L4 < 0 || in.L4+8 > len(b) {
		return
	}
	old := binary.BigEndian.Uint32(b[in.L4+4:])
	d := csum.WordDelta(uint16(old>>16), uint16(v>>16)) + csum.WordDelta(uint16(old), uint16(v))
	binary.BigEndian.PutUint32(b[in.L4+4:], v)
	outer := d
	if in.L4+18 <= len(b) {
		c := b[in.L4+16:]
		oc := binary.BigEndian.Uint16(c)
		nc := csum.ApplyDelta(oc, d)
		put16(c, nc)
		outer += csum.WordDelta(oc, nc)
	}
	c := b[p.L4+2:]
	put16(c, csum.ApplyDelta(binary.BigEndian.Uint16(c), outer))
}

// spICMPIn puts the server's sequence number back into an ICMP error from
// the client's side about a segment the director sent the client: the
// server checks that the quoted number is one it sent (tcp_v4_err's
// "between(seq, snd_una, snd_nxt)") before it believes a "too big".
func (c *Conn) spICMPIn(p *Packet) {
	if !c.hasFlag(flagSynProxy) {
		return
	}
	sp := c.syn()
	if sp.phase.Load() != spEstablished || p.innerLater || p.Inner.L4+8 > len(p.B) {
		return
	}
	seq := binary.BigEndian.Uint32(p.B[p.Inner.L4+4:])
	p.setInnerSeq(seq - uint32(sp.out.Delta))
}
