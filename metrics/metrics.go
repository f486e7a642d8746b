// Package metrics serves the director's counters in the Prometheus text
// exposition format (version 0.0.4), written by hand: per service and real
// server connections, packets and bytes, drops by reason, the connection
// table, the host's packet counters and the Go runtime; and node_exporter's
// IPVS series (node.go) for the dashboards written for kernel IPVS.
package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/internal/guard"
	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
)

// DefaultAddr is where --metrics listens when given no address: loopback.
const DefaultAddr = "127.0.0.1:9177"

// Source is what the metrics read.
type Source struct {
	NAT  *nat.Table
	Host *netstack.Host // may be nil
	// Health, if set, returns the health checks' state (nil: none).
	Health func() []health.ServiceStatus
	// Listeners are the daemon's own listeners (the control socket);
	// Serve adds its own.
	Listeners []*guard.Listener
	// VRRP, if set, are the virtual routers (metrics/ha.go).
	VRRP *VRRPSource
	// Sync, if set, are the connection sync daemons.
	Sync *ipvssync.Daemons
	// BGP, if set, is the speaker announcing the VIPs (metrics/bgp.go):
	// a *bgp.Speaker.
	BGP BGPSource
}

// Handler serves /metrics.
func Handler(src Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		bw := bufio.NewWriter(w)
		Write(bw, src)
		bw.Flush()
	})
}

// Limits of the metrics listener: a scraper needs one connection and
// a few hundred bytes of request; these keep idle keep-alive clients and
// slow or large requests from holding the daemon's descriptors and
// memory.
const (
	MaxConns    = 64
	IdleTimeout = 60 * time.Second
	ReadTimeout = 10 * time.Second
	// MaxHeaderBytes bounds a request's header (net/http answers 431
	// beyond); a GET has no body, and one with a body is refused.
	MaxHeaderBytes = 16 << 10
)

// Serve listens on addr and serves /metrics until the listener is closed.
// Accept errors (out of descriptors) are retried with backoff, and
// connections are limited and time out when idle (see guard).
func Serve(addr string, src Source, log zerolog.Logger) (*guard.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	gl := guard.New(ln, guard.Config{Name: "metrics", Max: MaxConns, Log: log})
	src.Listeners = append(src.Listeners, gl)
	h := Handler(src)
	mux := http.NewServeMux()
	mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			gl.TooLarge(0)
			http.Error(w, "a request to /metrics has no body", http.StatusRequestEntityTooLarge)
			return
		}
		h.ServeHTTP(w, r)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: ReadTimeout,
		WriteTimeout: 30 * time.Second, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes,
		ErrorLog: stdlog.New(log, "metrics: ", 0)}
	go srv.Serve(headerCap{gl})
	return gl, nil
}

// headerCap counts, as too large, the requests net/http refuses itself
// for a header over MaxHeaderBytes: it writes "HTTP/1.1 431 ..." straight
// to the connection (conn.serve in net/http/server.go) and no handler
// runs, so the refusal is seen where it is written. The handler above
// never answers 431.
type headerCap struct{ *guard.Listener }

func (l headerCap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return headerCapConn{c, l.Listener}, nil
}

type headerCapConn struct {
	net.Conn
	gl *guard.Listener
}

var status431 = []byte("HTTP/1.1 431 ")

func (c headerCapConn) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, status431) {
		c.gl.TooLarge(MaxHeaderBytes)
	}
	return c.Conn.Write(b)
}

// labelEscaper escapes a label value as the text format wants. It is
// built once: a Replacer made per call cost a scrape tens of kilobytes of
// garbage per label, which the director's heap then had to make room for.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// escape escapes a label value.
func escape(s string) string {
	return labelEscaper.Replace(s)
}

type writer struct {
	w    io.Writer
	seen map[string]bool
}

func (m *writer) head(name, typ, help string) {
	if m.seen[name] {
		return
	}
	m.seen[name] = true
	fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func (m *writer) val(name, labels string, v uint64) {
	if labels != "" {
		fmt.Fprintf(m.w, "%s{%s} %d\n", name, labels, v)
	} else {
		fmt.Fprintf(m.w, "%s %d\n", name, v)
	}
}

// Write writes every metric of src.
func Write(w io.Writer, src Source) {
	m := &writer{w: w, seen: map[string]bool{}}
	t := src.NAT
	svcs := t.Services()
	type stat struct {
		name, help string
		get        func(nat.StatsSnapshot) uint64
	}
	stats := []stat{
		{"connections_total", "connections scheduled (ipvsadm --stats Conns)", func(s nat.StatsSnapshot) uint64 { return s.Conns }},
		{"in_packets_total", "packets client to real server", func(s nat.StatsSnapshot) uint64 { return s.InPkts }},
		{"out_packets_total", "packets real server to client", func(s nat.StatsSnapshot) uint64 { return s.OutPkts }},
		{"in_bytes_total", "bytes (IP length) client to real server", func(s nat.StatsSnapshot) uint64 { return s.InBytes }},
		{"out_bytes_total", "bytes (IP length) real server to client", func(s nat.StatsSnapshot) uint64 { return s.OutBytes }},
	}
	svcLabels := func(s *nat.Service) string {
		return fmt.Sprintf(`protocol="%s",service="%s"`, strings.ToLower(nat.ProtoName(s.Proto)), escape(s.AddrPort().String()))
	}
	for _, st := range stats {
		name := "tunvs_service_" + st.name
		m.head(name, "counter", "per virtual service: "+st.help)
		for _, s := range svcs {
			m.val(name, svcLabels(s), st.get(s.Stats.Snapshot()))
		}
	}
	for _, st := range stats {
		name := "tunvs_server_" + st.name
		m.head(name, "counter", "per real server: "+st.help)
		for _, s := range svcs {
			for _, d := range s.Dests() {
				m.val(name, svcLabels(s)+`,server="`+escape(d.AddrPort().String())+`"`, st.get(d.Stats.Snapshot()))
			}
		}
	}
	gauges := []struct {
		name, help string
		get        func(*nat.Dest) int
	}{
		{"tunvs_server_active_connections", "ipvsadm ActiveConn", (*nat.Dest).ActiveConns},
		{"tunvs_server_inactive_connections", "ipvsadm InActConn", (*nat.Dest).InactConns},
		{"tunvs_server_connections", "connections bound to the real server, active or not", (*nat.Dest).TotalConns},
		{"tunvs_server_persistent_connections", "persistence templates (ipvsadm PersistConn)", (*nat.Dest).PersistConns},
		{"tunvs_server_weight", "weight (0: quiesced)", (*nat.Dest).Weight},
	}
	for _, g := range gauges {
		m.head(g.name, "gauge", g.help)
		for _, s := range svcs {
			for _, d := range s.Dests() {
				m.val(g.name, svcLabels(s)+`,server="`+escape(d.AddrPort().String())+`"`, uint64(max(g.get(d), 0)))
			}
		}
	}
	// The SYN queue of each service as the SYN proxy's automatic mode
	// counts it (nat/halfopen.go): at synproxy_backlog its SYNs are
	// answered with cookies. A Linux listener keeps the same count of
	// its SYN queue (inet_csk_reqsk_queue_len; tcp_conn_request in
	// net/ipv4/tcp_input.c sends cookies once it reaches the listen
	// backlog, which ss -lt shows as Send-Q); ss lists its entries
	// (state syn-recv) but does not sum them: a listener's Recv-Q is its
	// accept queue (sk_ack_backlog, tcp_diag_get_info). IPVS has no such
	// count.
	m.head("tunvs_service_half_open_connections", "gauge", "per virtual service: connections in SYN_RECV or SYNACK; at tunvs_synproxy_backlog the SYN proxy's automatic mode answers its SYNs with cookies")
	for _, s := range svcs {
		m.val("tunvs_service_half_open_connections", svcLabels(s), uint64(max(s.HalfOpen(), 0)))
	}
	m.head("tunvs_synproxy_backlog", "gauge", "the synproxy_backlog knob: a service's half-open connections at which the automatic SYN proxy starts")
	m.val("tunvs_synproxy_backlog", "", uint64(max(t.SynProxyBacklog(), 0)))
	m.head("tunvs_drops_total", "counter", "packets dropped by the NAT, by reason")
	for _, r := range nat.DropReasons() {
		m.val("tunvs_drops_total", `reason="`+escape(r.String())+`"`, t.Drops(r))
	}
	if src.Health != nil {
		writeHealth(m, src.Health())
	}
	writeListeners(m, src.Listeners)
	if src.BGP != nil {
		writeBGP(m, src.BGP)
	}
	if src.VRRP != nil {
		writeVRRP(m, src.VRRP)
	}
	if src.Sync != nil {
		writeSync(m, src.Sync)
	}
	m.head("tunvs_connections", "gauge", "entries in the connection table")
	m.val("tunvs_connections", "", uint64(t.Len()))
	m.head("tunvs_connections_early_dropped_total", "counter", "connections not yet established dropped to make room in a full table")
	m.val("tunvs_connections_early_dropped_total", "", t.EarlyDrops())
	m.head("tunvs_connections_defense_dropped_total", "counter", "connections dropped by drop_entry (ip_vs_random_dropentry)")
	m.val("tunvs_connections_defense_dropped_total", "", t.DefenseDropped())
	m.head("tunvs_synproxy_total", "counter", "the SYN proxy's events, by kind: cookies sent, cookie ACKs (connections made), bad cookie ACKs, ...")
	for _, c := range t.SynProxyCounters() {
		m.val("tunvs_synproxy_total", `event="`+escape(c.Name)+`"`, c.Value)
	}
	m.head("tunvs_proxy_protocol_headers_total", "counter", "PROXY protocol headers sent to full-NAT real servers, retransmitted first segments included")
	m.val("tunvs_proxy_protocol_headers_total", "", t.ProxyHeaders())
	m.head("tunvs_connections_max", "gauge", "bound of the connection table (--max-conns)")
	m.val("tunvs_connections_max", "", uint64(t.MaxConns()))
	m.head("tunvs_services", "gauge", "virtual services")
	m.val("tunvs_services", "", uint64(len(svcs)))
	WriteNodeIPVS(w, t)
	if h := src.Host; h != nil {
		c := &h.Counters
		ringEnters, ringWrites := h.RingCounts()
		sbAttaches, sbDetaches := h.StandbyCounts()
		for _, hc := range []struct {
			name, help string
			v          uint64
		}{
			{"fast_path", "NATed packets that skipped the stack (bypass)", c.FastPath.Load()},
			{"delivered", "packets handed to the stack", c.Delivered.Load()},
			{"too_big_sent", "ICMP fragmentation needed / packet too big sent", c.TooBigSent.Load()},
			{"unreachable_sent", "ICMP port unreachable sent (no real server)", c.UnreachSent.Load()},
			{"time_exceeded_sent", "ICMP time exceeded sent", c.TimeExceededSent.Load()},
			{"icmp_rate_limited", "ICMP errors not sent: rate limit (icmp_ratelimit, icmp_msgs_per_sec)", c.ICMPLimited.Load()},
			{"link_drops", "frames too short or of unknown type", c.LinkDrops.Load()},
			{"other_host", "frames read from a TAP for another host's MAC, dropped (the kernel's PACKET_OTHERHOST)", c.OtherHost.Load()},
			{"route_drops", "direct-routing (-g) packets not sent: real server not on a TAP segment, or its MAC unresolved", c.RouteDrops.Load()},
			{"replies", "packets the NAT answered in place, sent back out of their link (SYN proxy cookie SYN-ACKs)", c.Replies.Load()},
			{"tunnel_sent", "tunnel (-i) packets sent encapsulated to their real server (pieces and fragments each)", c.TunnelSent.Load()},
			{"tunnel_drops", "tunnel (-i) packets not sent: no route to the real server, or its MAC unresolved", c.TunnelDrops.Load()},
			{"tunnel_icmp_relayed", "ICMP errors from routers about tunnel (-i) packets, relayed to the client (frag needed with the MTU less the encapsulation)", c.TunnelICMPRelayed.Load()},
			{"tunnel_icmp_drops", "ICMP errors about tunnel (-i) packets not relayed: bad checksum, client without DF (path MTU still lowered), rate limit, no route to the client", c.TunnelICMPDrops.Load()},
			{"gso_packets", "offloaded super-packets read whole from a TUN or TAP device and NATed as one", c.GSOPackets.Load()},
			{"gso_split", "super-packets cut into packets in software (towards the stack or a device without offloads)", c.GSOSplit.Load()},
			{"read_errors", "device read errors", c.ReadErrors.Load()},
			{"write_errors", "device write errors", c.WriteErrors.Load()},
			{"read_waits", "times a device reader found its device empty and slept until a packet woke it (offload devices; --tun-read says where it sleeps)", h.ReadWaits()},
			{"ring_enters", "io_uring_enter calls of the device readers (--tun-read=ring): each submits reads, and the writes deferred since, and waits for a packet", ringEnters},
			{"ring_writes", "packets a one-armed director's readers wrote back to their own device through io_uring, with their next wait (--tun-read=ring)", ringWrites},
			{"queue_attaches", "times a device queue on standby was attached for bulk traffic (--tun-standby)", sbAttaches},
			{"queue_detaches", "times a device queue on standby was detached again (--tun-standby)", sbDetaches},
		} {
			name := "tunvs_host_" + hc.name + "_total"
			m.head(name, "counter", hc.help)
			m.val(name, "", hc.v)
		}
	}
	writeGoRuntime(m)
}

// writeHealth exports the health checks: whether each checked server is
// up, its checks, failures and transitions, and each service's quorum and
// sorry server.
func writeHealth(m *writer, svcs []health.ServiceStatus) {
	bool01 := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}
	type srvMetric struct {
		name, typ, help string
		get             func(health.ServerStatus) uint64
	}
	for _, sm := range []srvMetric{
		{"tunvs_health_up", "gauge", "a checked real server passes its check (1) or is failed (0)", func(s health.ServerStatus) uint64 { return bool01(s.Up) }},
		{"tunvs_health_checks_total", "counter", "checks run against the real server", func(s health.ServerStatus) uint64 { return s.Checks }},
		{"tunvs_health_failures_total", "counter", "checks that failed", func(s health.ServerStatus) uint64 { return s.Failures }},
		{"tunvs_health_downs_total", "counter", "times the server was taken out (fall reached)", func(s health.ServerStatus) uint64 { return s.Downs }},
		{"tunvs_health_ups_total", "counter", "times the server came back (rise reached)", func(s health.ServerStatus) uint64 { return s.Ups }},
	} {
		m.head(sm.name, sm.typ, sm.help)
		for _, svc := range svcs {
			for _, srv := range svc.Servers {
				m.val(sm.name, fmt.Sprintf(`service="%s",server="%s",check="%s"`, escape(svc.Service), escape(srv.Server.String()), escape(fmt.Sprint(srv.Check))), sm.get(srv))
			}
		}
	}
	m.head("tunvs_health_quorum_up", "gauge", "the service has its quorum of live weight (1) or is down (0)")
	for _, svc := range svcs {
		m.val("tunvs_health_quorum_up", `service="`+escape(svc.Service)+`"`, bool01(svc.QuorumUp))
	}
	m.head("tunvs_health_sorry_active", "gauge", "the sorry server is in the pool")
	for _, svc := range svcs {
		m.val("tunvs_health_sorry_active", `service="`+escape(svc.Service)+`"`, bool01(svc.SorryActive))
	}
}

// writeListeners exports the guarded listeners' counters and open
// connections.
func writeListeners(m *writer, ls []*guard.Listener) {
	for _, c := range []struct {
		name, help string
		get        func(*guard.Stats) uint64
	}{
		{"accepted", "connections accepted", func(s *guard.Stats) uint64 { return s.Accepted.Load() }},
		{"accept_errors", "failed accepts retried after a backoff (out of descriptors, say)", func(s *guard.Stats) uint64 { return s.AcceptErrors.Load() }},
		{"over_limit", "connections closed at once: the listener's connection limit was reached", func(s *guard.Stats) uint64 { return s.OverLimit.Load() }},
		{"evicted", "connections that had sent nothing closed to make room for a new one at the limit", func(s *guard.Stats) uint64 { return s.Evicted.Load() }},
		{"timeouts", "connections closed idle or too slow past their read deadline", func(s *guard.Stats) uint64 { return s.Timeouts.Load() }},
		{"too_large", "requests refused for their size", func(s *guard.Stats) uint64 { return s.TooLarge.Load() }},
	} {
		name := "tunvs_listener_" + c.name + "_total"
		m.head(name, "counter", "daemon listeners: "+c.help)
		for _, l := range ls {
			m.val(name, `listener="`+escape(l.Name())+`"`, c.get(&l.Stats))
		}
	}
	m.head("tunvs_listener_open_connections", "gauge", "daemon listeners: connections open")
	for _, l := range ls {
		m.val("tunvs_listener_open_connections", `listener="`+escape(l.Name())+`"`, uint64(l.Open()))
	}
}
