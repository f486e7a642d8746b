package keepalived

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// Options of Load.
type Options struct {
	// ConfigID is keepalived's -i (--config-id), which conditional lines
	// (@ID, @^ID) are compared with; "" is keepalived's default, the host
	// name up to its first dot.
	ConfigID string
}

// Config is what a keepalived.conf gives tunvs.
type Config struct {
	// Rules are the virtual services, their real servers and their
	// checks, validated whole (rules.Rules.Validate).
	Rules rules.Rules
	// VRRP are the vrrp_instances tunvs runs.
	VRRP     []VRRPInstance
	Warnings []Warning
}

// keepalived's defaults (check_parser.c, check_api.c).
const (
	defaultDelayLoop      = 60 * time.Second // virtual_server's delay_loop
	defaultConnectTimeout = 5 * time.Second  // a checker's connect_timeout
	defaultRetry          = 1                // a checker's retry
	// IPVS_SVC_PERSISTENT_TIMEOUT (libipvs.h), persistence without a
	// timeout.
	defaultPersistTimeout = 360 * time.Second
)

// Load reads the keepalived configuration at path, its includes too, and
// maps its LVS part. An error names the file and line; warnings name what
// tunvs ignores.
func Load(path string, o Options) (Config, error) {
	id := o.ConfigID
	if id == "" {
		h, _ := os.Hostname()
		id, _, _ = strings.Cut(h, ".")
	}
	rd := reader{id: id, params: map[string]string{}}
	if err := rd.file(path, 0, Pos{File: path}); err != nil {
		return Config{}, err
	}
	top, err := parse(rd.toks)
	if err != nil {
		return Config{}, err
	}
	m := mapper{warn: rd.warn, groups: map[string][]groupEntry{}, seen: map[rules.ServiceKey]Pos{}, vrrpVersion: defaultVRRPVersion}
	if err := m.top(top); err != nil {
		return Config{}, err
	}
	if err := m.linkSync(); err != nil {
		return Config{}, err
	}
	if err := m.out.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return Config{Rules: m.out, VRRP: m.vrrp, Warnings: m.warn}, nil
}

type groupEntry struct {
	Pos
	addr netip.Addr
	port uint16
}

type mapper struct {
	warn   []Warning
	groups map[string][]groupEntry
	seen   map[rules.ServiceKey]Pos
	out    rules.Rules

	vrrpVersion int
	vrrp        []VRRPInstance
	vrrpPos     []Pos
	syncd       *globalSync
}

func (m *mapper) warnf(p Pos, format string, a ...any) {
	m.warn = append(m.warn, Warning{p, fmt.Sprintf(format, a...)})
}

// vrrpBlocks are keepalived's VRRP (and its companions') top-level blocks.
var vrrpBlocks = map[string]bool{
	"vrrp_instance": true, "vrrp_sync_group": true, "vrrp_script": true,
	"vrrp_track_process": true, "vrrp_track_file": true, "track_file": true,
	"static_ipaddress": true, "static_routes": true, "static_rules": true,
	"garp_group": true, "linkbeat_interfaces": true,
}

func (m *mapper) top(ss []stmt) error {
	// Groups first: a virtual_server may name one defined after it.
	for _, s := range ss {
		var err error
		switch s.key() {
		case "virtual_server_group":
			err = m.group(s)
		case "global_defs":
			// Before the instances: vrrp_version applies to them.
			err = m.globalDefs(s)
		}
		if err != nil {
			return err
		}
	}
	for _, s := range ss {
		switch k := s.key(); {
		case k == "virtual_server_group", k == "global_defs":
		case k == "vrrp_instance":
			if err := m.vrrpInstance(s); err != nil {
				return err
			}
		case k == "virtual_server":
			if err := m.virtualServer(s); err != nil {
				return err
			}
		case vrrpBlocks[k]:
			m.warnf(s.Pos, "%s ignored: tunvs runs vrrp_instances only", k)
		default:
			m.warnf(s.Pos, "unknown keyword %q ignored", k)
		}
	}
	return nil
}

func (m *mapper) group(s stmt) error {
	if len(s.words) < 2 {
		return errAt(s.Pos, "virtual_server_group needs a name")
	}
	var es []groupEntry
	for _, e := range s.block {
		if e.key() == "fwmark" {
			return errAt(e.Pos, "virtual_server_group %s: fwmark services are not supported (tunvs does not mark packets)", s.words[1])
		}
		if len(e.words) < 2 {
			return errAt(e.Pos, "virtual_server_group %s: want ADDRESS[-LAST] PORT", s.words[1])
		}
		addrs, err := addrRange(e.words[0])
		if err != nil {
			return errAt(e.Pos, "virtual_server_group %s: %v", s.words[1], err)
		}
		port, err := parsePort(e.words[1])
		if err != nil {
			return errAt(e.Pos, "virtual_server_group %s: %v", s.words[1], err)
		}
		for _, a := range addrs {
			es = append(es, groupEntry{e.Pos, a, port})
		}
	}
	m.groups[s.words[1]] = es
	return nil
}

// addrRange is keepalived's "10.0.0.3-10": the last byte (IPv4) or the
// last 16 bits (IPv6, hexadecimal) run from the address's to the one
// after the dash.
func addrRange(s string) ([]netip.Addr, error) {
	first, last, isRange := strings.Cut(s, "-")
	a, err := netip.ParseAddr(first)
	if err != nil || a.Zone() != "" {
		return nil, fmt.Errorf("bad address %q", s)
	}
	if !isRange {
		return []netip.Addr{a}, nil
	}
	base, maxEnd := 10, uint64(255)
	if a.Is6() {
		base, maxEnd = 16, 0xffff
	}
	end, err := strconv.ParseUint(last, base, 32)
	b := a.AsSlice()
	var start uint64
	if a.Is4() {
		start = uint64(b[3])
	} else {
		start = uint64(b[14])<<8 | uint64(b[15])
	}
	if err != nil || end > maxEnd || end < start {
		return nil, fmt.Errorf("bad address range %q", s)
	}
	var out []netip.Addr
	for v := start; v <= end; v++ {
		if a.Is4() {
			b[3] = byte(v)
		} else {
			b[14], b[15] = byte(v>>8), byte(v)
		}
		x, _ := netip.AddrFromSlice(b)
		out = append(out, x)
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// timer is keepalived's <TIMER>: seconds, fractions allowed.
func timer(s stmt) (time.Duration, error) {
	f, err := strconv.ParseFloat(s.arg(1), 64)
	if err != nil || f < 0 || f > math.MaxInt32 || math.IsNaN(f) {
		return 0, errAt(s.Pos, "%s: %q is not a number of seconds", s.key(), s.arg(1))
	}
	return time.Duration(f * float64(time.Second)), nil
}

func number(s stmt, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s.arg(1))
	if err != nil || n < lo || n > hi {
		return 0, errAt(s.Pos, "%s: %q is not a number from %d to %d", s.key(), s.arg(1), lo, hi)
	}
	return n, nil
}

// vsConf is what a virtual_server block says, for each of its addresses.
type vsConf struct {
	svc        rules.Service
	check      rules.CheckService
	inhibit    bool // virtual_server's inhibit_on_failure
	delayLoop  time.Duration
	alpha      bool
	vhost      string
	retry      int
	connTO     time.Duration
	servers    []rsConf
	anyInhibit int  // real servers with inhibit_on_failure
	group      bool // virtual_server group
	// fwd is lb_kind/lvs_method: the default of the real servers and the
	// sorry server that do not set their own; sorryFwd the sorry
	// server's.
	fwd, sorryFwd fwd
}

type rsConf struct {
	Pos
	srv     rules.Server
	check   *rules.Check
	inhibit bool
	fwd     fwd
}

// fwd is a forwarding method as keepalived keeps it for a virtual, real or
// sorry server: unset until an lvs_method line sets it (check_data.c's
// alloc_vs sets IP_VS_CONN_F_FWD_MASK "so we can detect if it has been
// set").
type fwd struct {
	set    bool
	method rules.Method
	tun    rules.Encap
}

func (m *mapper) virtualServer(s stmt) error {
	var keys []groupEntry
	switch {
	case s.arg(1) == "group":
		es, ok := m.groups[s.arg(2)]
		if !ok {
			return errAt(s.Pos, "virtual_server group %s: no such virtual_server_group", s.arg(2))
		}
		keys = es
	case s.arg(1) == "fwmark":
		return errAt(s.Pos, "virtual_server fwmark: fwmark services are not supported (tunvs does not mark packets); use an address and port")
	default:
		if len(s.words) < 2 {
			return errAt(s.Pos, "virtual_server needs an address and a port")
		}
		a, err := netip.ParseAddr(s.arg(1))
		if err != nil || a.Zone() != "" {
			return errAt(s.Pos, "virtual_server: bad address %q", s.arg(1))
		}
		var port uint16
		if len(s.words) > 2 {
			if port, err = parsePort(s.arg(2)); err != nil {
				return errAt(s.Pos, "virtual_server: %v", err)
			}
		}
		keys = []groupEntry{{s.Pos, a, port}}
	}
	vs := vsConf{delayLoop: defaultDelayLoop, retry: -1, group: s.arg(1) == "group"}
	for _, k := range s.block {
		if err := m.vsKeyword(&vs, k); err != nil {
			return err
		}
	}
	// keepalived's validate_check_config (check_data.c) mends what the
	// kernel would take otherwise, and says so; so does tunvs.
	if vs.svc.Proto == 0 {
		// "the kernel defaults to UDP, so set it explicitly"
		m.warnf(s.Pos, "no protocol set: UDP, as keepalived defaults to")
		vs.svc.Proto = rules.ProtoUDP
	}
	if vs.svc.OnePacket && vs.svc.Proto != rules.ProtoUDP {
		m.warnf(s.Pos, "ops is for UDP only: off, as keepalived resets it")
		vs.svc.OnePacket = false
	}
	for i, g := range keys {
		if err := m.emit(s, &vs, g, i == 0); err != nil {
			return err
		}
	}
	return nil
}

func (m *mapper) vsKeyword(vs *vsConf, k stmt) error {
	var err error
	switch k.key() {
	case "delay_loop":
		vs.delayLoop, err = timer(k)
	case "lb_algo", "lvs_sched":
		vs.svc.Scheduler = k.arg(1)
		if _, e := sched.New(k.arg(1)); e != nil {
			return errAt(k.Pos, "%s %s: unknown scheduler (%s)", k.key(), k.arg(1), strings.Join(sched.Names(), ", "))
		}
	case "lb_kind", "lvs_method":
		vs.fwd, err = m.forwarding(k, "virtual")
	case "sorry_server_lvs_method":
		if !vs.check.Sorry.IsValid() {
			// check_parser.c's ss_forwarding_handler.
			m.warnf(k.Pos, "sorry_server_lvs_method ignored: used without (or before) sorry_server, as keepalived ignores it")
			break
		}
		vs.sorryFwd, err = m.forwarding(k, "sorry")
	case "persistence_timeout":
		var n int
		n, err = number(k, 1, math.MaxInt32)
		vs.svc.Persistent, vs.svc.PersistTimeout = true, time.Duration(n)*time.Second
	case "persistence_granularity":
		bits, ok := maskBits(k.arg(1))
		if !ok {
			return errAt(k.Pos, "persistence_granularity %q: want a contiguous netmask or a prefix length", k.arg(1))
		}
		vs.svc.PersistMaskBits = bits
		if !vs.svc.Persistent {
			// check_parser.c's handler: persistence with the default
			// timeout, IPVS_SVC_PERSISTENT_TIMEOUT.
			vs.svc.Persistent, vs.svc.PersistTimeout = true, defaultPersistTimeout
		}
	case "protocol":
		switch strings.ToUpper(k.arg(1)) {
		case "TCP":
			vs.svc.Proto = rules.ProtoTCP
		case "UDP":
			vs.svc.Proto = rules.ProtoUDP
		default:
			return errAt(k.Pos, "protocol %s: tunvs balances TCP and UDP", k.arg(1))
		}
	case "ops":
		vs.svc.OnePacket = true
	case "quorum":
		vs.check.Quorum, err = number(k, 1, math.MaxInt32)
	case "hysteresis":
		vs.check.Hysteresis, err = number(k, 0, math.MaxInt32)
	case "sorry_server":
		a, e := netip.ParseAddr(k.arg(1))
		if e != nil {
			return errAt(k.Pos, "sorry_server: bad address %q", k.arg(1))
		}
		var port uint16
		if len(k.words) > 2 {
			if port, e = parsePort(k.arg(2)); e != nil {
				return errAt(k.Pos, "sorry_server: %v", e)
			}
		}
		vs.check.Sorry = netip.AddrPortFrom(a, port)
		// alloc_ssvr (check_data.c): the sorry server starts with the
		// virtual server's method as it stands.
		vs.sorryFwd = vs.fwd
	case "inhibit_on_failure":
		vs.inhibit = true
	case "virtualhost":
		vs.vhost = k.arg(1)
	case "alpha":
		vs.alpha = true
	case "retry", "nb_get_retry":
		vs.retry, err = number(k, 0, math.MaxInt32)
	case "connect_timeout":
		vs.connTO, err = timer(k)
	case "sh-port", "mh-port", "sh-fallback", "mh-fallback", "flag-1", "flag-2", "flag-3":
		f := map[string]sched.Flags{"sh-port": sched.FlagSched2, "mh-port": sched.FlagSched2,
			"sh-fallback": sched.FlagSched1, "mh-fallback": sched.FlagSched1, "flag-1": sched.FlagSched1,
			"flag-2": sched.FlagSched2, "flag-3": sched.FlagSched3}[k.key()]
		vs.svc.SchedFlags |= f
	case "real_server":
		rs, e := m.realServer(vs, k)
		if e != nil {
			return e
		}
		vs.servers = append(vs.servers, rs)
	case "omega", "quorum_up", "quorum_down", "notify_up", "notify_down", "smtp_alert", "ha_suspend",
		"sorry_server_inhibit", "delay_before_retry", "warmup", "ip_family":
		m.warnf(k.Pos, "%s ignored: %s", k.key(), ignoredWhy[k.key()])
	default:
		m.warnf(k.Pos, "unknown keyword %q in virtual_server ignored", k.key())
	}
	return err
}

// ignoredWhy says why a keyword keepalived knows does nothing here.
var ignoredWhy = map[string]string{
	"omega":                "tunvs runs no quorum scripts",
	"quorum_up":            "tunvs runs no notification scripts (the log has the event)",
	"quorum_down":          "tunvs runs no notification scripts (the log has the event)",
	"notify_up":            "tunvs runs no notification scripts (the log has the event)",
	"notify_down":          "tunvs runs no notification scripts (the log has the event)",
	"smtp_alert":           "tunvs sends no mail",
	"ha_suspend":           "tunvs checks whether or not this director holds the virtual address",
	"sorry_server_inhibit": "the sorry server is added and removed",
	"delay_before_retry":   "tunvs retries at the delay_loop interval",
	"warmup":               "only in a checker",
	"ip_family":            "taken from the addresses",
	"connect_ip":           "tunvs checks the real server's address",
	"bindto":               "checks leave from the director's own address",
	"bind_port":            "checks leave from the director's own address",
	"fwmark":               "tunvs does not mark packets",
	"user":                 "the command runs as tunvs's user",
	"http_protocol":        "tunvs sends HTTP/1.1",
	"enable_sni":           "not set",
	"min_reply_length":     "not checked",
	"max_reply_length":     "not checked",
	"regex":                "tunvs checks a digest or the status only",
	"log_all_failures":     "failures are logged once per transition",
	"dynamic_weight":       "not supported",
}

// forwarding is keepalived 2.2.7's svr_forwarding_handler
// (check_parser.c): "lvs_method NAT|DR|TUN [type ipip|gue|gre] [port N]
// [nocsum|csum|remcsum]", words compared as they are written (strcmp), the
// tunnel's options defaulting to ipip, no port, nocsum on every line.
// What keepalived reports as a configuration error (keepalived -t fails)
// is refused, with its words; full NAT is tunvs's own and has no name
// there. Tunnel options on a NAT or DR line, which keepalived takes and
// the kernel does not use, are dropped with a warning.
func (m *mapper) forwarding(k stmt, who string) (fwd, error) {
	f := fwd{set: true}
	switch k.arg(1) {
	case "NAT":
		f.method = rules.Masquerade
	case "DR":
		f.method = rules.Route
	case "TUN":
		f.method = rules.Tunnel
	default:
		return f, errAt(k.Pos, "%s %q: unknown routing method for %s server (want NAT, DR or TUN)", k.key(), k.arg(1), who)
	}
	t, port, opts := rules.TunIPIP, 0, false
	for i := 2; i < len(k.words); i++ {
		opts = true
		switch w := k.words[i]; w {
		case "type":
			if i+1 == len(k.words) {
				return f, errAt(k.Pos, "%s: missing tunnel type for %s server", k.key(), who)
			}
			i++
			switch k.words[i] {
			case "ipip":
				t = rules.TunIPIP
			case "gue":
				t = rules.TunGUE
			case "gre":
				t = rules.TunGRE
			default:
				return f, errAt(k.Pos, "%s: unknown tunnel type %s for %s server", k.key(), k.words[i], who)
			}
		case "port":
			if i+1 == len(k.words) {
				return f, errAt(k.Pos, "%s: missing port for %s server gue tunnel", k.key(), who)
			}
			i++
			n, err := strconv.Atoi(k.words[i])
			if err != nil || n < 1 || n > 65535 {
				return f, errAt(k.Pos, "%s: invalid gue tunnel port %s for %s server", k.key(), k.words[i], who)
			}
			port = n
		case "nocsum":
			f.tun.Flags = 0
		case "csum":
			f.tun.Flags = rules.TunCsum
		case "remcsum":
			f.tun.Flags = rules.TunRemCsum
		default:
			return f, errAt(k.Pos, "%s: invalid tunnel option %s for %s server", k.key(), w, who)
		}
	}
	switch {
	case (t == rules.TunGUE) != (port != 0):
		return f, errAt(k.Pos, "%s: gue tunnels require port, otherwise cannot have port", k.key())
	case t == rules.TunIPIP && f.tun.Flags != 0:
		return f, errAt(k.Pos, "%s: ipip tunnels do not support checksum option", k.key())
	case t == rules.TunGRE && f.tun.Flags == rules.TunRemCsum:
		return f, errAt(k.Pos, "%s: gre tunnels do not support remote checksum option", k.key())
	}
	f.tun.Type, f.tun.Port = t, uint16(port)
	if f.method != rules.Tunnel {
		if opts {
			m.warnf(k.Pos, "%s %s: tunnel options ignored (for TUN only)", k.key(), k.arg(1))
		}
		f.tun = rules.Encap{}
	}
	return f, nil
}

// maskBits is a netmask (255.255.255.0) or a prefix length as bits.
func maskBits(s string) (int, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, n >= 1 && n <= 128
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, false
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	bits := 0
	for bits < 32 && v&(1<<(31-bits)) != 0 {
		bits++
	}
	return bits, bits == 32 || v<<bits == 0
}

func (m *mapper) realServer(vs *vsConf, s stmt) (rsConf, error) {
	// alloc_rs (check_data.c): the method the virtual server has so far.
	rs := rsConf{Pos: s.Pos, srv: rules.Server{Weight: 1, Line: s.Line}, fwd: vs.fwd}
	a, err := netip.ParseAddr(s.arg(1))
	if err != nil || a.Zone() != "" {
		return rs, errAt(s.Pos, "real_server: bad address %q", s.arg(1))
	}
	port := uint16(0)
	if len(s.words) > 2 {
		if port, err = parsePort(s.arg(2)); err != nil {
			return rs, errAt(s.Pos, "real_server: %v", err)
		}
	}
	rs.srv.Addr = netip.AddrPortFrom(a, port)
	var ck *rules.Check
	delayLoop := time.Duration(0)
	for _, k := range s.block {
		var err error
		switch k.key() {
		case "weight":
			rs.srv.Weight, err = number(k, 0, rules.MaxWeight)
		case "uthreshold":
			rs.srv.UThreshold, err = number(k, 0, math.MaxInt32)
		case "lthreshold":
			rs.srv.LThreshold, err = number(k, 0, math.MaxInt32)
		case "inhibit_on_failure":
			rs.inhibit = true
		case "lvs_method":
			// keepalived takes lvs_method only here; lb_kind is the
			// virtual server's (check_parser.c's init_check_keywords).
			rs.fwd, err = m.forwarding(k, "real")
		case "delay_loop":
			delayLoop, err = timer(k)
		case "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "UDP_CHECK", "PING_CHECK":
			if ck != nil {
				m.warnf(k.Pos, "%s ignored: tunvs runs one checker per real server (the first)", k.key())
				continue
			}
			ck, err = m.checker(vs, k)
			if err == nil && ck.Kind == rules.KindMisc {
				if perr := scriptAccessible(ck.Command); perr != nil {
					// keepalived checks the script when it loads the
					// file and runs without the checker, leaving the
					// server in the pool ("Disabling misc script ...
					// since not found/accessible": check_misc.c,
					// check_misc_script_security).
					m.warnf(k.Pos, "MISC_CHECK disabled, as keepalived disables it: %v", perr)
					ck = nil
				}
			}
		case "SMTP_CHECK", "DNS_CHECK", "BFD_CHECK", "FILE_CHECK":
			m.warnf(k.Pos, "%s ignored: tunvs has no such check (tcp, http, https, udp, ping, misc)", k.key())
		case "notify_up", "notify_down", "smtp_alert", "alpha", "retry", "delay_before_retry", "connect_timeout", "virtualhost", "warmup":
			m.warnf(k.Pos, "%s in real_server ignored: give it in the checker or the virtual_server", k.key())
		default:
			m.warnf(k.Pos, "unknown keyword %q in real_server ignored", k.key())
		}
		if err != nil {
			return rs, err
		}
	}
	if ck != nil && ck.Interval == 0 {
		ck.Interval = delayLoop // the checker's own delay_loop first
	}
	rs.check = ck
	return rs, nil
}

// checker maps a checker block; what it does not say is filled in by emit
// from the virtual_server.
func (m *mapper) checker(vs *vsConf, s stmt) (*rules.Check, error) {
	c := &rules.Check{Kind: map[string]rules.Kind{"TCP_CHECK": rules.KindTCP, "HTTP_GET": rules.KindHTTP,
		"SSL_GET": rules.KindHTTPS, "MISC_CHECK": rules.KindMisc, "UDP_CHECK": rules.KindUDP,
		"PING_CHECK": rules.KindPing}[s.key()]}
	urls := 0
	for _, k := range s.block {
		var err error
		switch k.key() {
		case "connect_timeout", "misc_timeout":
			c.Timeout, err = timer(k)
		case "connect_port":
			c.Port, err = parsePort(k.arg(1))
			if err != nil {
				err = errAt(k.Pos, "connect_port: %v", err)
			}
		case "retry", "nb_get_retry":
			var n int
			n, err = number(k, 0, math.MaxInt32-1)
			c.Fall = n + 1
		case "delay_loop":
			c.Interval, err = timer(k)
		case "warmup":
			c.Warmup, err = timer(k)
		case "alpha":
			c.StartDown = true
		case "virtualhost":
			c.VHost = k.arg(1)
		case "url":
			urls++
			if urls > 1 {
				m.warnf(k.Pos, "url ignored: tunvs checks one url per real server (the first)")
				continue
			}
			err = m.url(c, k)
		case "misc_path":
			c.Command = strings.Join(k.words[1:], " ")
		case "misc_dynamic":
			c.Dynamic = true
		case "payload":
			c.Payload, err = hexArg(k)
		case "require_reply":
			c.Expect = []byte{}
			if len(k.words) > 1 {
				c.Expect, err = hexArg(k)
			}
		case "delay_before_retry", "connect_ip", "bindto", "bind_port", "fwmark", "user", "http_protocol",
			"enable_sni", "min_reply_length", "max_reply_length", "log_all_failures", "dynamic_weight":
			m.warnf(k.Pos, "%s ignored: %s", k.key(), ignoredWhy[k.key()])
		default:
			m.warnf(k.Pos, "unknown keyword %q in %s ignored", k.key(), s.key())
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Kind == rules.KindMisc && c.Command == "" {
		return nil, errAt(s.Pos, "MISC_CHECK without misc_path")
	}
	if c.Kind == rules.KindUDP && c.Expect == nil {
		m.warnf(s.Pos, "UDP_CHECK without require_reply: tunvs still wants a reply (keepalived takes silence as success)")
	}
	return c, nil
}

// lookPath finds a misc_path's program; tests replace it.
var lookPath = exec.LookPath

// scriptAccessible tells whether a misc_path's program (its first word,
// looked up in PATH when it has no slash, as keepalived's find_path does)
// exists and can be executed.
func scriptAccessible(command string) error {
	f := strings.Fields(command)
	if len(f) == 0 {
		return errors.New("empty misc_path")
	}
	if _, err := lookPath(f[0]); err != nil {
		return fmt.Errorf("script %s cannot be accessed: %w", f[0], err)
	}
	return nil
}

func hexArg(k stmt) ([]byte, error) {
	b, err := hex.DecodeString(k.arg(1))
	if err != nil {
		return nil, errAt(k.Pos, "%s: %q is not hexadecimal", k.key(), k.arg(1))
	}
	return b, nil
}

func (m *mapper) url(c *rules.Check, s stmt) error {
	for _, k := range s.block {
		switch k.key() {
		case "path":
			c.Path = k.arg(1)
		case "digest":
			d, err := hex.DecodeString(k.arg(1))
			if err != nil || len(d) != 16 {
				return errAt(k.Pos, "digest %q: want an MD5 digest, 32 hexadecimal digits", k.arg(1))
			}
			c.Digest, c.DigestAlg = d, rules.DigestMD5
		case "status_code":
			for _, w := range k.words[1:] {
				lo, hi, isRange := strings.Cut(w, "-")
				l, err1 := strconv.Atoi(lo)
				h, err2 := l, error(nil)
				if isRange {
					h, err2 = strconv.Atoi(hi)
				}
				if err1 != nil || err2 != nil || l < 100 || h > 999 || l > h {
					return errAt(k.Pos, "status_code %q: want codes or ranges from 100 to 999", w)
				}
				c.Status = append(c.Status, rules.StatusRange{Lo: l, Hi: h})
			}
		case "virtualhost":
			c.VHost = k.arg(1)
		case "regex", "regex_no_match", "regex_options", "regex_stack", "regex_min_offset", "regex_max_offset":
			m.warnf(k.Pos, "%s ignored: %s", k.key(), ignoredWhy["regex"])
		default:
			m.warnf(k.Pos, "unknown keyword %q in url ignored", k.key())
		}
	}
	return nil
}

// emit adds the virtual service at g, with vs's settings, servers and
// checks; its warnings only for the first address of a group.
func (m *mapper) emit(s stmt, vs *vsConf, g groupEntry, first bool) error {
	warnf := func(p Pos, format string, a ...any) {
		if first {
			m.warnf(p, format, a...)
		}
	}
	svc := vs.svc
	svc.Addr, svc.Port, svc.Line = g.addr, g.port, g.Line
	svc.Servers = nil
	if svc.PersistMaskBits == svc.Addr.BitLen() {
		svc.PersistMaskBits = 0
	}
	if !svc.Persistent {
		svc.PersistMaskBits = 0
	}
	if svc.Port == 0 && !svc.Persistent {
		warnf(g.Pos, "virtual_server %v: zero port only valid for persistent services: persistence_timeout %d, as keepalived sets", g.addr, defaultPersistTimeout/time.Second)
		svc.Persistent, svc.PersistTimeout = true, defaultPersistTimeout
	}
	if err := rules.ValidService(&svc); err != nil {
		return errAt(g.Pos, "virtual_server %v: %v", netip.AddrPortFrom(g.addr, g.port), err)
	}
	k := svc.ServiceKey
	if p, dup := m.seen[k]; dup {
		return errAt(g.Pos, "virtual_server %v %d configured twice (first at %v)", g.addr, g.port, p)
	}
	m.seen[k] = g.Pos
	cs := vs.check
	cs.Proto, cs.VIP, cs.Line = svc.Proto, svc.AddrPort(), g.Line
	if vs.inhibit {
		cs.OnFail = rules.Inhibit
	}
	inhibit := 0
	seen := map[netip.AddrPort]bool{}
	defaultNAT := false
	// resolve is validate_check_config's (check_data.c): a real or sorry
	// server without a method of its own takes the virtual server's, NAT
	// if it has none, said once; a DR or TUN server's port is the
	// service's, reset with a warning when it differs (for a group, whose
	// entries may differ, only the warning).
	resolve := func(p Pos, what string, f fwd, addr netip.AddrPort) (fwd, netip.AddrPort) {
		if !f.set {
			if !vs.fwd.set && !defaultNAT {
				warnf(s.Pos, "virtual_server %v: no forwarding method set, setting default NAT, as keepalived does", netip.AddrPortFrom(g.addr, g.port))
				defaultNAT = true
			}
			f = vs.fwd
		}
		if addr.Port() == 0 {
			addr = netip.AddrPortFrom(addr.Addr(), svc.Port)
		}
		if f.method != rules.Masquerade && addr.Port() != svc.Port {
			if vs.group {
				warnf(p, "virtual_server %v and %s %v ports don't match, as keepalived warns", netip.AddrPortFrom(g.addr, g.port), what, addr)
			} else {
				warnf(p, "virtual_server %v and %s %v ports don't match: resetting, as keepalived does", netip.AddrPortFrom(g.addr, g.port), what, addr)
				addr = netip.AddrPortFrom(addr.Addr(), svc.Port)
			}
		}
		return f, addr
	}
	for _, rs := range vs.servers {
		d := rs.srv
		var f fwd
		f, d.Addr = resolve(rs.Pos, "real_server", rs.fwd, d.Addr)
		d.Method, d.Tun = f.method, f.tun
		if err := rules.ValidServer(k, &d); err != nil {
			return errAt(rs.Pos, "real_server %v: %v", d.Addr, err)
		}
		if seen[d.Addr] {
			return errAt(rs.Pos, "real_server %v configured twice", d.Addr)
		}
		seen[d.Addr] = true
		svc.Servers = append(svc.Servers, d)
		if rs.inhibit {
			inhibit++
		}
		if rs.check == nil {
			continue
		}
		c := *rs.check
		if c.Interval == 0 {
			c.Interval = vs.delayLoop
		}
		if c.Timeout == 0 {
			c.Timeout = vs.connTO
			if c.Kind == rules.KindMisc {
				c.Timeout = c.Interval // misc_timeout's default
			}
		}
		if c.Timeout == 0 {
			c.Timeout = defaultConnectTimeout
		}
		if c.Timeout > c.Interval {
			warnf(rs.Pos, "real_server %v: timeout %v cut to the check interval %v (tunvs starts no check before the last ended)", d.Addr, c.Timeout, c.Interval)
			c.Timeout = c.Interval
		}
		if c.Fall == 0 {
			c.Fall = defaultRetry + 1
			if vs.retry >= 0 {
				c.Fall = vs.retry + 1
			}
		}
		// keepalived puts a server back at its first success.
		c.Rise = 1
		c.StartDown = c.StartDown || vs.alpha
		if c.VHost == "" && (c.Kind == rules.KindHTTP || c.Kind == rules.KindHTTPS) {
			c.VHost = vs.vhost
		}
		if _, err := c.WithDefaults(); err != nil {
			return errAt(rs.Pos, "real_server %v: %v", d.Addr, err)
		}
		cs.Servers = append(cs.Servers, rules.CheckServer{Addr: d.Addr, Check: &c, Line: rs.Line})
	}
	if cs.Sorry.IsValid() {
		// validate_check_config resolves the sorry server after the real
		// servers, and alters its port only when it does not masquerade.
		var f fwd
		sorry := cs.Sorry
		f, sorry = resolve(s.Pos, "sorry_server", vs.sorryFwd, sorry)
		if f.method != rules.Masquerade {
			cs.Sorry = sorry
		}
		cs.SorryMethod, cs.SorryTun = f.method, f.tun
	}
	if inhibit > 0 && !vs.inhibit {
		cs.OnFail = rules.Inhibit
		if inhibit < len(vs.servers) {
			warnf(s.Pos, "inhibit_on_failure on some real servers only: tunvs inhibits every failed server of the service")
		}
	}
	m.out.Services = append(m.out.Services, svc)
	switch {
	case len(cs.Servers) > 0:
		m.out.Checks.Services = append(m.out.Checks.Services, cs)
	case cs.Sorry.IsValid() || cs.Quorum > 0:
		warnf(s.Pos, "sorry_server and quorum ignored: no real server of the service has a checker")
	}
	return nil
}
