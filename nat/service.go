package nat

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// Protocols of virtual services.
const (
	ProtoTCP = rules.ProtoTCP
	ProtoUDP = rules.ProtoUDP
)

// ServiceKey identifies a virtual service; ServerKey a real server of one.
type (
	ServiceKey = rules.ServiceKey
	ServerKey  = rules.ServerKey
)

// ProtoName is the protocol as ipvsadm prints it.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	}
	return fmt.Sprintf("proto%d", p)
}

// Errors of the configuration calls (the rules package's). Messages follow
// ipvsadm's where it has one.
var (
	ErrServiceExists = rules.ErrServiceExists
	ErrNoService     = rules.ErrNoService
	ErrDestExists    = rules.ErrDestExists
	ErrNoDest        = rules.ErrNoDest
	ErrInvalid       = rules.ErrInvalid
)

// MaxWeight is the largest weight ipvsadm accepts.
const MaxWeight = rules.MaxWeight

// Stats are the counters ipvsadm --stats shows, for a service or a real
// server. In is client to server, Out is server to client; bytes are IP
// packet lengths, as the kernel counts skb->len.
type Stats struct {
	Conns    atomic.Uint64
	InPkts   atomic.Uint64
	OutPkts  atomic.Uint64
	InBytes  atomic.Uint64
	OutBytes atomic.Uint64
}

// StatsSnapshot is a copy of Stats.
type StatsSnapshot struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Conns: s.Conns.Load(), InPkts: s.InPkts.Load(), OutPkts: s.OutPkts.Load(),
		InBytes: s.InBytes.Load(), OutBytes: s.OutBytes.Load(),
	}
}

// Zero zeroes the counters (ipvsadm -Z).
func (s *Stats) Zero() {
	s.Conns.Store(0)
	s.InPkts.Store(0)
	s.OutPkts.Store(0)
	s.InBytes.Store(0)
	s.OutBytes.Store(0)
}

// ServiceConfig is what `ipvsadm -A/-E` sets.
type ServiceConfig struct {
	Proto     uint8 // ProtoTCP or ProtoUDP
	Addr      netip.Addr
	Port      uint16 // 0: all ports (needs Persistent, as in ipvsadm)
	Scheduler string // ipvsadm name; "" means wlc, ipvsadm's default
	// SchedFlags are -b's flags (sh-fallback, sh-port, mh-fallback,
	// mh-port).
	SchedFlags sched.Flags

	// Persistent is -p: new connections from one client (network) go to
	// the real server of the client's persistence template. The template
	// is made with the first connection and expires PersistTimeout after
	// the last new connection that used it; if it still controls
	// connections then, it lives on, 60 s at a time, until they are gone
	// (ip_vs_sched_persist, ip_vs_conn_expire). Templates are listed by
	// Table.Conns (ConnInfo.Template) and counted in Dest.PersistConns.
	Persistent     bool
	PersistTimeout time.Duration // -p's timeout; 0 means DefaultPersistTimeout (300 s)
	// PersistMaskBits is -M as a prefix length: 32 for 255.255.255.255
	// (IPv4) or 128 (IPv6) when 0.
	PersistMaskBits int
	// OnePacket is -o/--ops: every UDP datagram is scheduled on its own
	// and no connection is kept (IP_VS_CONN_F_ONE_PACKET; a persistent
	// service still keeps its templates). As in the kernel, a real
	// server's reply then finds no connection and is not translated: it
	// passes (Verdict Pass) with the real server's address as its source.
	OnePacket bool
	// SynProxy is --synproxy (DPVS's -j enable): the director answers
	// every SYN to the service with a SYN cookie and opens the real
	// server's handshake only for a client that proved it (synproxy.go).
	SynProxy bool
	// LocalAddrs are the local addresses of the service's full-NAT real
	// servers (DPVS's --add-laddr); see rules.Service.LocalAddrs.
	LocalAddrs []netip.Addr
	// ProxyProtocol is --proxy-protocol for the service's full-NAT real
	// servers (proxyproto.go).
	ProxyProtocol rules.ProxyProtocol
}

// DestConfig is what `ipvsadm -a/-e` sets for a real server.
type DestConfig struct {
	Addr   netip.Addr
	Port   uint16 // 0: the port the client asked for
	Weight int    // 0..MaxWeight; 0 quiesces the server
	// UThreshold and LThreshold are -x and -y: connection thresholds
	// (0: none).
	UThreshold, LThreshold int
	// Method is Masquerade (the zero value), FullNAT, Route or Tunnel;
	// Tun is a Tunnel's encapsulation.
	Method rules.Method
	Tun    rules.Encap
	// ProxyProtocol is the server's own --proxy-protocol (ProxyUnset:
	// the service's).
	ProxyProtocol rules.ProxyProtocol
}

// Service is a virtual service and its real servers.
type Service struct {
	Proto uint8
	Addr  netip.Addr
	Port  uint16

	Stats Stats

	// mu serialises the scheduler (Pick and Update) and changes to dests,
	// as the kernel's service lock does.
	mu         sync.Mutex
	sched      sched.Scheduler
	dests      []*Dest // IPVS list order: newest first
	schedDests []sched.Dest
	// flow is Pick's argument, kept here (under mu) so that it does not
	// escape to the heap on every new connection.
	flow sched.Flow
	// cfg is the configuration as last set by -A/-E (under mu).
	cfg ServiceConfig
	// laddrs is cfg.LocalAddrs for the packet path (fullnat.go).
	laddrs atomic.Pointer[laddrPool]
	// proxy is cfg.ProxyProtocol for the packet path.
	proxy atomic.Uint32
	// synProxy is cfg.SynProxy for the packet path.
	synProxy atomic.Bool
	// halfOpen counts the connections in SYN_RECV or SYNACK
	// (halfopen.go).
	halfOpen atomic.Int64
}

// Config returns the service's configuration as -A/-E last set it, the
// scheduler name filled in.
func (s *Service) Config() ServiceConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg
	c.Scheduler = s.sched.Name()
	return c
}

// Dest is a real server of a service. Connections keep a pointer to their
// Dest, so a removed Dest still serves its existing connections (the kernel
// keeps removed destinations in a trash list for the same reason).
type Dest struct {
	Addr netip.Addr
	Port uint16
	// svc is the service the dest belongs to; a dest revived from the
	// trash may belong to a new service of the same address and port.
	svc atomic.Pointer[Service]
	// vkey is the service's protocol, address and port when the dest was
	// made (dest->protocol, vaddr, vport), for the trash lookup.
	vkey svcKey
	// idleStart is when the trash first saw the removed dest unused
	// (under Table.trashMu).
	idleStart int64

	Stats Stats

	weight  atomic.Int32
	uthresh atomic.Int32 // -x
	lthresh atomic.Int32 // -y
	persist atomic.Int32 // persistence templates bound to the dest
	active  atomic.Int32
	total   atomic.Int32 // every connection bound to the dest, active or not
	removed atomic.Bool
	// fullNAT: new connections to the dest are full NAT (-a/-e
	// --fullnat); a connection keeps the method it was made with.
	fullNAT atomic.Bool
	// route: new connections to the dest are direct routing (-g).
	route atomic.Bool
	// proxy is the dest's own rules.ProxyProtocol (-a/-e
	// --proxy-protocol); a connection keeps what it was made with.
	proxy atomic.Uint32
	// tun: tunOn when new connections to the dest are tunnelled (-i),
	// and its encapsulation (packTun), which its connections read at
	// every packet, as the kernel's read dest->tun_type.
	tun atomic.Uint32
	// pmtu is the path MTU to a tunnel real server that ICMP errors
	// taught (tunicmp.go).
	pmtu pathMTU

	// overload is IP_VS_DEST_F_OVERLOAD; lthreshVal is the kernel's
	// l_threshold_val (-y, or 3/4 of -x when -y is 0). Both change under
	// dstMu (the kernel's dst_lock), which the packet path of an
	// established connection never takes.
	overload   atomic.Bool
	lthreshVal atomic.Int32
	dstMu      sync.Mutex
}

// Weight is the current weight.
func (d *Dest) Weight() int { return int(d.weight.Load()) }

// ActiveConns is the ActiveConn column of ipvsadm -L.
func (d *Dest) ActiveConns() int { return int(d.active.Load()) }

// InactConns is the InActConn column: every connection not active (the
// kernel's ip_vs_dest_inactconns, totalconns - activeconns).
func (d *Dest) InactConns() int { return max(int(d.total.Load()-d.active.Load()), 0) }

// UThreshold and LThreshold are -x and -y (0: none).
func (d *Dest) UThreshold() int { return int(d.uthresh.Load()) }

// LThreshold is -y (0: none).
func (d *Dest) LThreshold() int { return int(d.lthresh.Load()) }

// PersistConns is the PersistConn column of --persistent-conn: the
// persistence templates bound to the dest.
func (d *Dest) PersistConns() int { return int(d.persist.Load()) }

// TotalConns is every connection bound to the dest.
func (d *Dest) TotalConns() int { return int(d.total.Load()) }

// Overloaded reports the kernel's IP_VS_DEST_F_OVERLOAD: set when the
// dest's connections reach its upper threshold (-x), cleared when they drop
// below its lower one (-y, or 3/4 of -x when -y is 0). Schedulers skip an
// overloaded dest; persistence templates still lead to it, as in the
// kernel (ip_vs_check_template does not look at the flag).
func (d *Dest) Overloaded() bool { return d.overload.Load() }

// Available is the kernel's IP_VS_DEST_CF_AVAILABLE: false once the dest
// was removed from its service (ipvsadm -d, -D or -C).
func (d *Dest) Available() bool { return !d.removed.Load() }

// AddrPort is the real server's address and port.
func (d *Dest) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

// Service is the service the dest belongs to.
func (d *Dest) Service() *Service { return d.svc.Load() }

// countIn and countOut are ip_vs_in_stats and ip_vs_out_stats: a packet
// counts for the dest and its current service only while the dest is
// available (not removed).
func (d *Dest) countIn(n uint64) {
	if d.removed.Load() {
		return
	}
	d.Stats.InPkts.Add(1)
	d.Stats.InBytes.Add(n)
	if s := d.svc.Load(); s != nil {
		s.Stats.InPkts.Add(1)
		s.Stats.InBytes.Add(n)
	}
}

func (d *Dest) countOut(n uint64) {
	if d.removed.Load() {
		return
	}
	d.Stats.OutPkts.Add(1)
	d.Stats.OutBytes.Add(n)
	if s := d.svc.Load(); s != nil {
		s.Stats.OutPkts.Add(1)
		s.Stats.OutBytes.Add(n)
	}
}

// schedDest adapts a Dest to sched.Dest (whose Addr returns an AddrPort).
type schedDest struct{ *Dest }

func (d schedDest) Addr() netip.AddrPort { return d.Dest.AddrPort() }

// SchedulerName is the ipvsadm name of the service's scheduler.
func (s *Service) SchedulerName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sched.Name()
}

// Dests returns the real servers in IPVS list order (newest first).
func (s *Service) Dests() []*Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Dest(nil), s.dests...)
}

// AddrPort is VIP:port.
func (s *Service) AddrPort() netip.AddrPort { return netip.AddrPortFrom(s.Addr, s.Port) }

// pickLocked asks the scheduler for a real server for s.flow; nil when
// none is available. s.mu must be held.
func (s *Service) pickLocked() *Dest {
	i := s.sched.Pick(&s.flow)
	if i < 0 || i >= len(s.dests) {
		return nil
	}
	return s.dests[i]
}

// updateLocked rebuilds the scheduler's view; s.mu must be held.
func (s *Service) updateLocked() {
	sd := make([]sched.Dest, len(s.dests))
	for i, d := range s.dests {
		sd[i] = schedDest{d}
	}
	s.schedDests = sd
	s.sched.Update(sd)
}

func (s *Service) findLocked(a netip.Addr, port uint16) int {
	for i, d := range s.dests {
		if d.Addr == a && d.Port == port {
			return i
		}
	}
	return -1
}
