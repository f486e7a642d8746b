// Package rules is the director's configuration as a value: virtual
// services and their real servers, the IPVS sysctls and timeouts, and the
// health checks. It is plain data with one validation (Validate), a
// difference (Diff) and a plain application of changes (Next); it knows
// nothing of connections or packets.
//
// The NAT table applies a Diff under its own lock (nat.Table.Apply), after
// checking it against what runs: every writer of the table (tunvsadm
// commands, rules files, reloads, the health checks) goes through it.
// This follows the split of the kernel's IPVS between its control side
// (ip_vs_ctl.c) and its packet path (ip_vs_core.c), and katran's config
// structs kept apart from the code that programs its data plane.
//
// It sits below nat (nat imports it, for Table.Apply and for its key
// types), so that the table validates with the same code as everyone
// else; it imports only sched, to know the schedulers' names.
package rules

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tunvs/tunvs/sched"
)

// Protocols of virtual services.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// MaxWeight is the largest weight ipvsadm accepts.
const MaxWeight = 65535

// DefaultScheduler is ipvsadm's default.
const DefaultScheduler = "wlc"

// DefaultPersistTimeout is -p's timeout when none is given.
const DefaultPersistTimeout = 300 * time.Second

// ServiceKey identifies a virtual service: protocol, address and port.
type ServiceKey struct {
	Proto uint8 // ProtoTCP or ProtoUDP
	Addr  netip.Addr
	Port  uint16 // 0: every port (ipvsadm's port-less service)
}

// AddrPort is the service's address and port.
func (k ServiceKey) AddrPort() netip.AddrPort { return netip.AddrPortFrom(k.Addr, k.Port) }

// ServerKey identifies a real server within a service.
type ServerKey struct {
	Service ServiceKey
	Addr    netip.AddrPort // port 0: the port the client asked for
}

// Method is a real server's forwarding method (ipvsadm -m, -g, -i).
type Method uint8

// The forwarding methods.
const (
	// Masquerade is -m, NAT: the destination is rewritten to the real
	// server, and the replies' source back to the VIP.
	Masquerade Method = iota
	// FullNAT is DPVS's --fullnat: the client's address and port are
	// rewritten too, to one of the service's local addresses
	// (Service.LocalAddrs) and a port of the director's, so the real
	// server's replies come back to the director whatever its routes.
	FullNAT
	// Route is -g, direct routing (IP_VS_CONN_F_DROUTE): the packet is
	// not rewritten; it goes out on the real server's segment to the
	// real server's Ethernet address, and the real server, which holds
	// the VIP itself, answers the client directly. Only a TAP link has
	// Ethernet addresses to rewrite.
	Route
	// Tunnel is -i, IP-in-IP tunnelling (IP_VS_CONN_F_TUNNEL): the
	// packet, unchanged, goes inside a new IP header (and a GUE or GRE
	// header: Server.Tun) from the director to the real server, which
	// decapsulates it, holds the VIP and answers the client directly.
	// Any link carries it.
	Tunnel
)

// String is the method as ipvsadm (and DPVS's, for full NAT) lists it.
func (m Method) String() string {
	switch m {
	case Masquerade:
		return "Masq"
	case FullNAT:
		return "FullNat"
	case Route:
		return "Route"
	case Tunnel:
		return "Tunnel"
	}
	return "method?"
}

// TunType is a tunnelling real server's encapsulation (--tun-type), the
// kernel's IP_VS_CONN_F_TUNNEL_TYPE_*.
type TunType uint8

// The encapsulations.
const (
	TunIPIP TunType = iota // IP in IP (IPv6 in IPv6): ipip
	TunGUE                 // Generic UDP Encapsulation to Encap.Port: gue
	TunGRE                 // GRE: gre
)

// String is the type as ipvsadm spells it.
func (t TunType) String() string {
	switch t {
	case TunIPIP:
		return "ipip"
	case TunGUE:
		return "gue"
	case TunGRE:
		return "gre"
	}
	return "tun-type?"
}

// TunFlags are IP_VS_TUNNEL_ENCAP_FLAG_*: 0 is --tun-nocsum.
type TunFlags uint8

// The encapsulation flags.
const (
	TunCsum    TunFlags = 1 << 0 // --tun-csum: the GUE UDP or GRE checksum is set
	TunRemCsum TunFlags = 1 << 1 // --tun-remcsum: GUE remote checksum offload
)

// String is the flag as ipvsadm's --tun-info lists it.
func (f TunFlags) String() string {
	switch f {
	case 0:
		return "nocsum"
	case TunCsum:
		return "csum"
	case TunRemCsum:
		return "remcsum"
	}
	return "flags?"
}

// Encap is a tunnelling real server's encapsulation (ipvsadm 1.31's
// --tun-type, --tun-port, --tun-nocsum, --tun-csum, --tun-remcsum; the
// kernel's dest tun_type, tun_port, tun_flags). It is the zero value for
// every other method.
type Encap struct {
	Type  TunType
	Port  uint16 // GUE's UDP destination port; 0 otherwise
	Flags TunFlags
}

// Service is one virtual service (ipvsadm -A/-E) and its real servers.
type Service struct {
	ServiceKey
	Scheduler string // ipvsadm name; "" is DefaultScheduler
	// SchedFlags are -b's flags (sh-fallback, sh-port, mh-fallback,
	// mh-port).
	SchedFlags sched.Flags
	// Persistent is -p; PersistTimeout its timeout (0:
	// DefaultPersistTimeout). PersistMaskBits is -M as a prefix length
	// (0: the whole address).
	Persistent      bool
	PersistTimeout  time.Duration
	PersistMaskBits int
	// OnePacket is -o/--ops.
	OnePacket bool
	// ProxyProtocol is --proxy-protocol on -A/-E: the PROXY protocol for
	// the service's full-NAT real servers (TCP only).
	ProxyProtocol ProxyProtocol
	// SynProxy is --synproxy enable (DPVS's -j): SYNs to the service are
	// answered with SYN cookies by the director (TCP only).
	SynProxy bool

	// LocalAddrs is the service's pool of director addresses for its
	// full-NAT real servers (DPVS's --add-laddr), of the service's
	// family, in the order they were added.
	LocalAddrs []netip.Addr

	// Servers in the order they were added (oldest first, as a rules
	// file lists them; the table's list is newest first, as IPVS's).
	Servers []Server

	// Line is the rules file line that made the service (0: none), for
	// errors.
	Line int
}

// SchedulerName is the scheduler, the default filled in.
func (s *Service) SchedulerName() string {
	if s.Scheduler == "" {
		return DefaultScheduler
	}
	return s.Scheduler
}

// Server is a real server of a service (ipvsadm -a/-e).
type Server struct {
	Addr   netip.AddrPort
	Method Method
	// Tun is the encapsulation of a Tunnel server (zero otherwise).
	Tun    Encap
	Weight int // 0..MaxWeight; 0 quiesces it
	// UThreshold and LThreshold are -x and -y (0: none).
	UThreshold, LThreshold int
	// ProxyProtocol is --proxy-protocol on -a/-e (ProxyUnset: the
	// service's; see ProxyProtocol.Effective).
	ProxyProtocol ProxyProtocol
	// Line is the rules file line that made it (0: none).
	Line int
}

// Sync is the connection sync daemons' configuration (ipvsadm
// --start-daemon; package ipvssync runs them): a master, a backup, or
// both, as the kernel allows. The sync_* knobs are sysctls (SysctlTable).
type Sync struct {
	Master *SyncDaemon
	Backup *SyncDaemon
}

// SyncDaemon is one daemon's options (the kernel's struct
// ipvs_sync_daemon_cfg); zero values take the kernel's defaults.
type SyncDaemon struct {
	Interface string     // --mcast-interface, required
	SyncID    uint8      // --syncid; a backup with 0 takes every id
	MaxLen    int        // --sync-maxlen; 0: 1500 less headers (master), the link's MTU (backup)
	Group     netip.Addr // --mcast-group; zero: 224.0.0.81
	Port      uint16     // --mcast-port; 0: 8848
	TTL       uint8      // --mcast-ttl; 0: 1
}

// MaxSyncMaxLen is the largest --sync-maxlen ipvsadm takes (65535 less the
// IPv4 and UDP headers).
const MaxSyncMaxLen = 65535 - 20 - 8

// Validate checks what ipvsadm and start_sync_thread check.
func (d *SyncDaemon) Validate() error {
	if d.Interface == "" || len(d.Interface) >= 16 {
		return fmt.Errorf("%w: multicast interface %q (1 to 15 characters)", ErrInvalid, d.Interface)
	}
	if d.MaxLen < 0 || d.MaxLen > MaxSyncMaxLen {
		return fmt.Errorf("%w: sync-maxlen %d", ErrInvalid, d.MaxLen)
	}
	if d.Group.IsValid() && (!d.Group.IsMulticast() || d.Group.Zone() != "") {
		return fmt.Errorf("%w: mcast-group %v is not a multicast address", ErrInvalid, d.Group)
	}
	return nil
}

// Rules is the whole configuration of a director.
type Rules struct {
	// Services in the order they were added.
	Services []Service
	// Sysctls are the /proc/sys/net/ipv4/vs knobs set (see SysctlTable);
	// one not in the map keeps its value (a new table: its default).
	Sysctls map[string]int
	// Timeouts are the per-state timeouts set (`--set`, and tunvs's
	// --state-timeout); a state not in the map keeps its value.
	Timeouts Timeouts
	// Checks are the health checks (`--check` lines).
	Checks Checks
	// Sync is the sync daemon (issue 17); nil: none.
	Sync *Sync
}

// Service finds a service by its key.
func (r *Rules) Service(k ServiceKey) *Service {
	for i := range r.Services {
		if r.Services[i].ServiceKey == k {
			return &r.Services[i]
		}
	}
	return nil
}

// Server finds a real server of s.
func (s *Service) Server(a netip.AddrPort) *Server {
	for i := range s.Servers {
		if s.Servers[i].Addr == a {
			return &s.Servers[i]
		}
	}
	return nil
}

// Clone is a deep copy of r (the checks are shared: they are replaced
// whole, never changed in place).
func (r Rules) Clone() Rules {
	c := r
	c.Services = make([]Service, len(r.Services))
	for i, s := range r.Services {
		s.Servers = append([]Server(nil), s.Servers...)
		s.LocalAddrs = append([]netip.Addr(nil), s.LocalAddrs...)
		c.Services[i] = s
	}
	if r.Sysctls != nil {
		c.Sysctls = make(map[string]int, len(r.Sysctls))
		for k, v := range r.Sysctls {
			c.Sysctls[k] = v
		}
	}
	if r.Timeouts != nil {
		c.Timeouts = make(Timeouts, len(r.Timeouts))
		for k, v := range r.Timeouts {
			c.Timeouts[k] = v
		}
	}
	return c
}
