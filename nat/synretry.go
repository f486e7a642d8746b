package nat

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	"github.com/tunvs/tunvs/internal/csum"
)

// The SYN to a real server may be lost, or the server may not answer. The
// client's own retransmissions resend it (spClientPending), but a client
// that waits for the server to speak first (SMTP, FTP, SSH's banner,
// MySQL) sends nothing after its ACK, and without a timer of the
// director's its connection would wait for the table's SYN_RECV timeout
// and then for whatever the client gives up on. So, as DPVS keeps a copy
// of the SYN and resends it from the connection's timer
// (dp_vs_conn_resend_packets, syn_retry 3), the director resends it
// itself: synRetries times, after synRTO, doubling each time as TCP
// backs a SYN off (TCP_TIMEOUT_INIT, tcp_syn_retries). When the last goes
// unanswered for as long again, the client is reset at the sequence
// number it expects (the cookie's ISN + 1: exactly its rcv_nxt, so it
// takes the reset, RFC 5961 3.2) and the connection removed; DPVS lets
// the connection expire and the client find out by itself. A server
// that refuses with a reset is passed on to the client at once
// (spServer).
const (
	synRetries = 3   // DPVS's DP_VS_SYNPROXY_SYN_RETRY_DEFAULT
	synRTO     = 1e9 // TCP_TIMEOUT_INIT, ns
)

// spPending are the SYN-proxied connections whose real server has not
// answered yet, for the retransmission timer.
type spPending struct {
	mu  sync.Mutex
	cs  []*Conn
	buf []byte // where the pass builds its packets
}

// spWatch puts a connection, just published with its SYN out, on the
// timer. Tunnelled connections are left to their clients: their SYN
// leaves by an encapsulation the timer's packets do not take.
func (t *Table) spWatch(c *Conn) {
	if c.hasFlag(flagTunnel | flagRoute) {
		return
	}
	pd := &t.sp.pend
	pd.mu.Lock()
	pd.cs = append(pd.cs, c)
	pd.mu.Unlock()
}

// SynRetransmit is the SYN proxy's retransmission timer (see above): it
// resends each due SYN to its real server, or, when the retries are
// spent, resets the client and removes the connection. Each packet is
// handed to emit as an IP packet ready to be routed: the SYN translated
// for the real server, the reset addressed to the client. emit must not
// keep the slice. Call it a few times a second (the host does, with its
// other timers); it allocates nothing once its buffers have grown.
func (t *Table) SynRetransmit(now int64, emit func(l3 []byte)) {
	pd := &t.sp.pend
	pd.mu.Lock()
	defer pd.mu.Unlock()
	if pd.buf == nil {
		pd.buf = make([]byte, 0, ipv6Header+tcpMinHeader+40)
	}
	var p Packet
	pd.cs = slices.DeleteFunc(pd.cs, func(c *Conn) bool {
		sp := c.syn()
		if sp.phase.Load() != spSynSent || c.st.Load()&stDead != 0 || c.state() == StateClose {
			return true // answered, gone, or refused (reset)
		}
		sp.mu.Lock()
		if sp.phase.Load() != spSynSent || now-sp.lastSyn < synRTO<<sp.retries {
			sp.mu.Unlock()
			return false
		}
		if sp.retries >= synRetries {
			sp.mu.Unlock()
			if t.remove(c) {
				t.sp.rsTimeout.Add(1)
				b := tcpSegment(pd.buf, c.VAddr(), c.CAddr(), c.VPort, c.CPort)
				binary.BigEndian.PutUint32(b[len(b)-tcpMinHeader+4:], sp.cookieISN+1)
				b[len(b)-tcpMinHeader+13] = tcpRST
				if Parse(b, &p) == DropNone {
					p.finishTCP()
					emit(p.B)
				}
			}
			return true
		}
		sp.retries++
		sp.lastSyn = now
		b := tcpSegment(pd.buf, c.CAddr(), c.VAddr(), c.CPort, c.VPort)
		ok := Parse(b, &p) == DropNone && t.spSyn(sp, &p)
		sp.mu.Unlock()
		if !ok {
			return false
		}
		if r := t.forward(c, DirIn, &p, now); r.Verdict == Forward {
			t.sp.synResent.Add(1)
			emit(p.B)
		}
		return false
	})
	if c := cap(pd.cs); c > 1024 && len(pd.cs) < c/4 {
		// A burst of connections has drained: give the array back.
		pd.cs = slices.Clone(pd.cs)
	}
}

// tcpSegment writes into b's storage an IP packet (IPv4 or IPv6, as the
// addresses are) holding a bare TCP header from src to dst: the
// director's TTL, DF, no flags, zero checksums. The caller fills in the
// header and finishes it (finishTCP).
func tcpSegment(b []byte, src, dst netip.Addr, sport, dport uint16) []byte {
	hl := 20
	if src.Is6() {
		hl = ipv6Header
	}
	b = b[:hl+tcpMinHeader]
	clear(b)
	if src.Is6() {
		b[0] = 0x60
		put16(b[4:], tcpMinHeader)
		b[6], b[7] = ProtoTCP, synTTL
		s, d := src.As16(), dst.As16()
		copy(b[8:24], s[:])
		copy(b[24:40], d[:])
	} else {
		b[0] = 0x45
		put16(b[2:], uint16(hl+tcpMinHeader))
		b[6] = 0x40 // DF
		b[8], b[9] = synTTL, ProtoTCP
		s, d := src.As4(), dst.As4()
		copy(b[12:16], s[:])
		copy(b[16:20], d[:])
		csum.SetIPv4Header(b[:hl])
	}
	th := b[hl:]
	put16(th[0:], sport)
	put16(th[2:], dport)
	th[12] = tcpMinHeader / 4 << 4
	return b
}
