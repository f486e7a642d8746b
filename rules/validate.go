package rules

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"github.com/tunvs/tunvs/sched"
)

// Errors of a refused configuration. Messages follow ipvsadm's where it
// has one; nat re-exports them.
var (
	ErrServiceExists = errors.New("service already exists")
	ErrNoService     = errors.New("no such service")
	ErrDestExists    = errors.New("destination already exists")
	ErrNoDest        = errors.New("no such destination")
	ErrInvalid       = errors.New("invalid argument")
	// The local-address errors are DPVS's (EDPVS_EXIST, EDPVS_NOTEXIST
	// from --add-laddr and --del-laddr).
	ErrLocalAddrExists = errors.New("local address already exists")
	ErrNoLocalAddr     = errors.New("no such local address")
	// ErrNoDirectRoute is a -g real server the director's host cannot
	// reach on an Ethernet segment of its own (nat.Config.DirectRoute).
	ErrNoDirectRoute = errors.New("direct routing")
	// ErrRange is the kernel's ERANGE for thresholds (ip_vs_add_dest,
	// ip_vs_edit_dest); it also matches ErrInvalid.
	ErrRange = rangeError{}
)

type rangeError struct{}

func (rangeError) Error() string        { return "out of range" }
func (rangeError) Is(target error) bool { return target == ErrInvalid }

// LineError is a refused configuration with the rules file line it came
// from.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

func atLine(line int, err error) error {
	if line <= 0 || err == nil {
		return err
	}
	return &LineError{Line: line, Err: err}
}

// ValidService checks a service's own configuration (not its servers).
func ValidService(s *Service) error {
	if s.Proto != ProtoTCP && s.Proto != ProtoUDP {
		return fmt.Errorf("%w: protocol %d (tcp or udp)", ErrInvalid, s.Proto)
	}
	if _, err := sched.NewWithFlags(s.SchedulerName(), s.SchedFlags); err != nil {
		return err
	}
	if !s.Addr.IsValid() || s.Addr.Zone() != "" {
		return fmt.Errorf("%w: service address %v", ErrInvalid, s.Addr)
	}
	if err := NotMapped("service", s.Addr); err != nil {
		return err
	}
	if s.SynProxy && s.Proto != ProtoTCP {
		// DPVS's synproxy is a TCP handshake: there is none to proxy
		// for UDP.
		return fmt.Errorf("%w: --synproxy is for TCP services", ErrInvalid)
	}
	if s.PersistTimeout < 0 {
		return fmt.Errorf("%w: persistence timeout %v", ErrInvalid, s.PersistTimeout)
	}
	if s.PersistMaskBits < 0 || s.PersistMaskBits > s.Addr.BitLen() {
		return fmt.Errorf("%w: persistence netmask /%d", ErrInvalid, s.PersistMaskBits)
	}
	if err := validProxy(s.ProxyProtocol, s.Proto); err != nil {
		return err
	}
	for i, a := range s.LocalAddrs {
		if err := ValidLocalAddr(s, a); err != nil {
			return err
		}
		if slices.Contains(s.LocalAddrs[:i], a) {
			return fmt.Errorf("%w: local address %v given twice", ErrLocalAddrExists, a)
		}
	}
	return nil
}

// ValidLocalAddr checks a full-NAT local address of service s. Its
// family is the service's: a real server of one family cannot answer an
// address of the other, and translating between families (NAT64) is not
// done. The service's own address is refused: its replies and its
// clients' packets would share one address and port space.
func ValidLocalAddr(s *Service, a netip.Addr) error {
	if !a.IsValid() || a.Zone() != "" || !Unicast(a) {
		return fmt.Errorf("%w: local address %v is not a unicast address", ErrInvalid, a)
	}
	if err := NotMapped("local", a); err != nil {
		return err
	}
	if a.Is4() != s.Addr.Is4() {
		return fmt.Errorf("%w: local address %v is not of the service's address family", ErrInvalid, a)
	}
	if a == s.Addr {
		return fmt.Errorf("%w: local address %v is the service's own address", ErrInvalid, a)
	}
	return nil
}

// ValidServer checks a real server's configuration for service svc.
func ValidServer(svc ServiceKey, d *Server) error {
	a := d.Addr.Addr()
	if !a.IsValid() || a.Zone() != "" {
		return fmt.Errorf("%w: real server address %v", ErrInvalid, a)
	}
	if a.Is4() != svc.Addr.Is4() {
		// IPVS allows mixed families for tunnel mode (IPv4 in IPv6 and
		// back); tunvs does not.
		return fmt.Errorf("%w: real server %v is not of the service's address family (tunvs tunnels IPv4 in IPv4 and IPv6 in IPv6 only)", ErrInvalid, a)
	}
	if d.Method > Tunnel {
		return fmt.Errorf("%w: forwarding method %v", ErrInvalid, d.Method)
	}
	if err := validProxy(d.ProxyProtocol, svc.Proto); err != nil {
		return err
	}
	if d.ProxyProtocol.Version() != 0 && d.Method != FullNAT {
		// DPVS sends it only to full-NAT servers (proxy_proto_insert:
		// EDPVS_NOTSUPP otherwise).
		return fmt.Errorf("%w: the PROXY protocol needs --fullnat", ErrInvalid)
	}
	if err := validTunnel(d); err != nil {
		return err
	}
	if d.Weight < 0 || d.Weight > MaxWeight {
		return fmt.Errorf("%w: weight %d out of range 0..%d", ErrInvalid, d.Weight, MaxWeight)
	}
	// ip_vs_add_dest / ip_vs_edit_dest: ERANGE and EINVAL.
	if d.UThreshold < 0 || d.LThreshold < 0 || d.UThreshold > math.MaxInt32 {
		return fmt.Errorf("%w: connection thresholds %d/%d", ErrInvalid, d.UThreshold, d.LThreshold)
	}
	if d.LThreshold > d.UThreshold {
		return fmt.Errorf("%w: lower threshold is higher than upper threshold", ErrRange)
	}
	// ip_vs_add_dest checks the thresholds (-ERANGE) before
	// ip_vs_new_dest looks at the address (-EINVAL).
	if err := NotMapped("real server", a); err != nil {
		return err
	}
	if !Unicast(a) {
		return fmt.Errorf("%w: real server %v is not a unicast address", ErrInvalid, a)
	}
	return nil
}

// NotMapped refuses an IPv4-mapped IPv6 address. The kernel takes
// ::ffff:a.b.c.d as an IPv6 address (AF_INET6), a service apart from
// a.b.c.d, that no IPv6 packet can reach (ip6_rcv_core drops v4-mapped
// sources, and no IPv4 packet carries one); accepting it would make two
// services of one address, or one that nothing reaches.
func NotMapped(what string, a netip.Addr) error {
	if a.Is4In6() {
		return &MappedError{What: what, Addr: a}
	}
	return nil
}

// MappedError is NotMapped's refusal; it is an ErrInvalid.
type MappedError struct {
	What string
	Addr netip.Addr
}

func (e *MappedError) Error() string {
	return fmt.Sprintf("%s address %v is IPv4-mapped: write it as %v (IPv4) or give a native IPv6 address",
		e.What, e.Addr, e.Addr.Unmap())
}

// Is makes a MappedError an ErrInvalid.
func (e *MappedError) Is(target error) bool { return target == ErrInvalid }

// Unicast is the kernel's test of a real server's address in
// ip_vs_new_dest (ip_vs_ctl.c): for IPv4, inet_addr_type must be
// RTN_UNICAST or RTN_LOCAL (0.0.0.0/8 and 255.255.255.255 are
// RTN_BROADCAST, 224.0.0.0/4 RTN_MULTICAST); for IPv6, ipv6_addr_type must
// say unicast and not link-local (the unspecified address and multicast
// are not unicast).
func Unicast(a netip.Addr) bool {
	if a.Is4() {
		b := a.As4()
		return b[0] != 0 && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return !a.IsUnspecified() && !a.IsMulticast() && !a.IsLinkLocalUnicast()
}

// Validate checks the whole configuration: every service and real server,
// no key twice, the sysctls and timeouts, and the checks against the
// services they name. The error names the rules file line, when known.
func (r *Rules) Validate() error {
	seen := make(map[ServiceKey]bool, len(r.Services))
	for i := range r.Services {
		s := &r.Services[i]
		if seen[s.ServiceKey] {
			return atLine(s.Line, fmt.Errorf("%w: %s", ErrServiceExists, serviceName(s.ServiceKey)))
		}
		seen[s.ServiceKey] = true
		if err := ValidService(s); err != nil {
			return atLine(s.Line, err)
		}
		ds := make(map[netip.AddrPort]bool, len(s.Servers))
		for j := range s.Servers {
			d := &s.Servers[j]
			if err := ValidServer(s.ServiceKey, d); err != nil {
				return atLine(d.Line, err)
			}
			if ds[d.Addr] {
				return atLine(d.Line, fmt.Errorf("%w: %v", ErrDestExists, d.Addr))
			}
			ds[d.Addr] = true
		}
	}
	for _, sc := range SysctlTable {
		if v, ok := r.Sysctls[sc.Name]; ok {
			if err := validSysctl(sc.Name, v); err != nil {
				return err
			}
		}
	}
	for n := range r.Sysctls {
		if _, ok := LookupSysctl(n); !ok {
			return validSysctl(n, 0)
		}
	}
	for st, d := range r.Timeouts {
		if err := validTimeout(st, d); err != nil {
			return err
		}
	}
	return r.ValidateChecks(r.Checks)
}

func serviceName(k ServiceKey) string {
	p := "TCP"
	if k.Proto == ProtoUDP {
		p = "UDP"
	}
	return p + " " + k.AddrPort().String()
}

// ValidateChecks checks the health checks c against r's services: each
// service and each real server named exists, and every check is
// complete. (health.New runs it against the table's rules.)
func (r *Rules) ValidateChecks(c Checks) error {
	seen := map[ServiceKey]bool{}
	for _, sc := range c.Services {
		k := sc.key()
		if seen[k] {
			return atLine(sc.Line, cfgErr("%s configured twice", serviceName(k)))
		}
		seen[k] = true
		if line, err := r.validCheckService(&sc); err != nil {
			return atLine(line, err)
		}
	}
	return nil
}

// validCheckService checks one service's checks; the line is the one to
// blame.
func (r *Rules) validCheckService(sc *CheckService) (int, error) {
	name := serviceName(sc.key())
	svc := r.Service(sc.key())
	if svc == nil {
		return sc.Line, cfgErr("%s: no such virtual service", name)
	}
	if sc.Quorum < 0 || sc.Hysteresis < 0 || sc.SorryWeight < 0 || sc.SorryWeight > MaxWeight {
		return sc.Line, cfgErr("%s: quorum, hysteresis and sorry weight must be positive", name)
	}
	if sc.Sorry.IsValid() && svc.Server(sc.Sorry) != nil {
		return sc.Line, cfgErr("%s: sorry server %v is also a real server", name, sc.Sorry)
	}
	if sc.SorryMethod > Tunnel {
		return sc.Line, cfgErr("%s: sorry server forwarding method %v", name, sc.SorryMethod)
	}
	if err := validTunnel(&Server{Method: sc.SorryMethod, Tun: sc.SorryTun}); err != nil {
		return sc.Line, fmt.Errorf("%s: sorry server: %w", name, err)
	}
	if sc.Default != nil {
		if _, err := sc.Default.WithDefaults(); err != nil {
			return sc.Line, fmt.Errorf("%s: default check: %w", name, err)
		}
	}
	named := map[netip.AddrPort]bool{}
	for _, s := range sc.Servers {
		if named[s.Addr] {
			return s.Line, cfgErr("%s: real server %v configured twice", name, s.Addr)
		}
		named[s.Addr] = true
		var ck Check
		if s.Check != nil {
			ck = *s.Check
		} else if sc.Default == nil {
			return s.Line, cfgErr("%s real server %v: no check and no service default", name, s.Addr)
		}
		if err := sc.validServerCheck(svc, s.Addr, ck); err != nil {
			return s.Line, err
		}
	}
	if sc.Default != nil {
		for _, d := range svc.Servers {
			if !named[d.Addr] {
				if err := sc.validServerCheck(svc, d.Addr, Check{}); err != nil {
					return sc.Line, err
				}
			}
		}
	}
	return 0, nil
}

func (sc *CheckService) validServerCheck(svc *Service, addr netip.AddrPort, c Check) error {
	c, _, err := sc.ServerCheck(addr, c)
	if err != nil || c.Kind == KindNone {
		return err
	}
	if svc.Server(addr) == nil {
		return cfgErr("%s: %v is not a real server of the service", serviceName(sc.key()), addr)
	}
	return sc.checkPort(addr, c)
}

func (sc *CheckService) key() ServiceKey {
	return ServiceKey{Proto: sc.Proto, Addr: sc.VIP.Addr(), Port: sc.VIP.Port()}
}

// ServerCheck is the check of real server addr of the service: c merged
// with the service's default, the defaults filled in, and the address
// the check connects to. A check of kind none checks nothing.
func (sc *CheckService) ServerCheck(addr netip.AddrPort, c Check) (Check, netip.AddrPort, error) {
	c, err := c.Merge(sc.Default).WithDefaults()
	if err != nil {
		return c, netip.AddrPort{}, fmt.Errorf("%s real server %v: %w", serviceName(sc.key()), addr, err)
	}
	return c, sc.target(addr, c), nil
}

func (sc *CheckService) target(addr netip.AddrPort, c Check) netip.AddrPort {
	target := addr
	if target.Port() == 0 {
		target = netip.AddrPortFrom(addr.Addr(), sc.VIP.Port())
	}
	if c.Port != 0 {
		target = netip.AddrPortFrom(addr.Addr(), c.Port)
	}
	return target
}

// checkPort refuses a check that needs a port and has none.
func (sc *CheckService) checkPort(addr netip.AddrPort, c Check) error {
	if sc.target(addr, c).Port() == 0 && c.Kind != KindPing && c.Kind != KindMisc {
		return cfgErr("%s real server %v: no port to check (port=)", serviceName(sc.key()), addr)
	}
	return nil
}

// validProxy checks a --proxy-protocol setting for a service of protocol
// proto: a setting tunvs knows, and a header only on TCP (tunvs inserts
// it in front of a TCP stream's first data; it has no place in UDP).
func validProxy(p ProxyProtocol, proto uint8) error {
	if p > ProxyV2Insecure {
		return fmt.Errorf("%w: proxy protocol %d", ErrInvalid, p)
	}
	if p.Version() != 0 && proto != ProtoTCP {
		return fmt.Errorf("%w: the PROXY protocol is for TCP services", ErrInvalid)
	}
	return nil
}

// validTunnel checks a server's encapsulation as ip_vs_add_dest does (a
// GUE tunnel needs its port: EINVAL "tunnel port is zero"), and what
// ipvsadm's tunnel_types_v_options lets through: no port but for GUE, no
// checksum flag for ipip, no remote checksum for GRE, one flag at most;
// no tunnel options on a server that does not tunnel.
func validTunnel(d *Server) error {
	t := d.Tun
	switch {
	case d.Method != Tunnel && t != Encap{}:
		return fmt.Errorf("%w: tunnel options on a %v real server", ErrInvalid, d.Method)
	case t.Type > TunGRE:
		return fmt.Errorf("%w: tunnel type %d", ErrInvalid, t.Type)
	case t.Type == TunGUE && t.Port == 0:
		return fmt.Errorf("%w: tunnel port is zero (a gue tunnel needs --tun-port)", ErrInvalid)
	case t.Type != TunGUE && t.Port != 0:
		return fmt.Errorf("%w: a tunnel port is for the gue tunnel type only", ErrInvalid)
	case t.Flags > TunRemCsum, t.Type == TunIPIP && t.Flags != 0, t.Type == TunGRE && t.Flags == TunRemCsum:
		return fmt.Errorf("%w: tunnel checksum flags %v with the %v tunnel type", ErrInvalid, t.Flags, t.Type)
	}
	return nil
}
