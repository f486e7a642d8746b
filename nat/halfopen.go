package nat

// Half-open connections per service: Linux's SYN queue for the SYN
// proxy's automatic mode. With tcp_syncookies=1 a listener answers with
// a cookie once its queue of request socks is full (tcp_conn_request:
// "if ((syncookies == 2 || inet_csk_reqsk_queue_is_full(sk)) && !isn)",
// net/ipv4/tcp_input.c), that queue bounded by the listen backlog
// (sk_max_ack_backlog, which inet_listen sets from listen()'s backlog,
// capped at somaxconn by __sys_listen). A
// service's queue here is its connections in SYN_RECV or SYNACK (the
// states a connection sits in from the client's SYN until its ACK or the
// real server's answer, the latter with secure_tcp), and its backlog the
// synproxy_backlog knob, 4096 as somaxconn. Without it the automatic
// mode waited for the whole table to fill: a spoofed flood first made up
// to MaxConns half-open entries, each forwarded to a real server.
//
// The count follows the state word: every change of it goes through
// updateState, which adds the difference its compare-and-swap made, so
// the count is exact whatever the order of racing packets, sync
// messages, expiry and early drop (a dead connection, stDead, counts
// nothing). The only word not made by updateState is initState's, of a
// connection not yet in the table: newConn's starts in NONE; a synced one
// is counted once inserted (halfOpenInserted).

// DefaultSynProxyBacklog is the synproxy_backlog knob's default: Linux's
// somaxconn (net.core.somaxconn, 4096 since 5.4), the most a listen
// backlog, and so a SYN queue, can be.
const DefaultSynProxyBacklog = 4096

// halfOpenWord says whether a state word counts as half-open.
func halfOpenWord(w uint32) bool {
	if w&stDead != 0 {
		return false
	}
	s := State(w)
	return s == StateSynRecv || s == StateSynAck
}

// halfOpenMove keeps the service's count in step with a change of the
// state word from old to nw (made by compare-and-swap).
func (c *Conn) halfOpenMove(old, nw uint32) {
	if c.svc == nil {
		return
	}
	switch was, is := halfOpenWord(old), halfOpenWord(nw); {
	case !was && is:
		c.svc.halfOpen.Add(1)
	case was && !is:
		c.svc.halfOpen.Add(-1)
	}
}

// halfOpenInserted counts a connection whose state word initState set,
// now that it is in the table. A packet or an unbind may have changed
// the word since the insert: their updateState counted the change from
// the word initState set, so counting that word here keeps the sum exact.
func (c *Conn) halfOpenInserted(initial uint32) { c.halfOpenMove(0, initial) }

// HalfOpen is the number of the service's connections in SYN_RECV or
// SYNACK: its SYN queue, as the SYN proxy's automatic mode counts it.
func (s *Service) HalfOpen() int64 { return s.halfOpen.Load() }

// SynProxyBacklog is the "synproxy_backlog" knob.
func (t *Table) SynProxyBacklog() int { return int(t.spBacklog.Load()) }

// synQueueFull is inet_csk_reqsk_queue_is_full for a service: its
// half-open connections at or above the backlog.
func (t *Table) synQueueFull(svc *Service) bool {
	return svc.halfOpen.Load() >= int64(t.spBacklog.Load())
}
