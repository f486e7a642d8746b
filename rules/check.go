package rules

// The health checking of the real servers: what `--check` lines say. The
// health package runs these checks; here they are plain data, validated
// with the rest of the rules (see Rules.Validate).

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Kind is the type of a check.
type Kind string

// The checks.
const (
	// KindNone: the server is not checked (a per-server override of a
	// service default).
	KindNone Kind = "none"
	// KindTCP connects and closes (keepalived's TCP_CHECK).
	KindTCP Kind = "tcp"
	// KindHTTP sends a GET and checks status, digest or substring
	// (HTTP_GET).
	KindHTTP Kind = "http"
	// KindHTTPS is KindHTTP over TLS, the certificate not verified
	// (SSL_GET).
	KindHTTPS Kind = "https"
	// KindUDP sends a datagram and waits for a reply (UDP_CHECK).
	KindUDP Kind = "udp"
	// KindPing sends an ICMP echo request (PING_CHECK).
	KindPing Kind = "ping"
	// KindMisc runs a command on the machine (MISC_CHECK).
	KindMisc Kind = "misc"
)

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool {
	switch k {
	case KindNone, KindTCP, KindHTTP, KindHTTPS, KindUDP, KindPing, KindMisc:
		return true
	}
	return false
}

// Defaults of a check's timing.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 3 * time.Second
	DefaultFall     = 3
	DefaultRise     = 2
)

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// Digest algorithms.
const (
	DigestMD5    = "md5" // keepalived's HTTP_GET digest
	DigestSHA256 = "sha256"
)

// Check is one check's configuration. In a service's Default, it applies
// to every real server of the service; a server's own Check overrides it
// field by field (zero fields take the default's values; the fields
// particular to a kind only when the kinds are the same).
type Check struct {
	Kind Kind
	// Port is the port to check (keepalived's connect_port); 0 is the
	// real server's port. Not used by ping and misc.
	Port uint16

	Interval time.Duration // between the starts of two checks
	Timeout  time.Duration // of one check; at most Interval
	Fall     int           // failures in a row before the server is down
	Rise     int           // successes in a row before it is up again
	// Warmup delays the first check (keepalived's warmup is a random
	// delay up to this; here it is exactly this).
	Warmup time.Duration
	// StartDown (keepalived's alpha) starts the server down: it takes
	// traffic only after Rise successes.
	StartDown bool

	// HTTP and HTTPS.
	Path      string        // default "/"
	VHost     string        // Host header (virtualhost); default the address
	Status    []StatusRange // default 200-299
	DigestAlg string        // DigestMD5 or DigestSHA256, with Digest
	Digest    []byte        // of the whole body
	Contains  string        // the body must contain it

	// UDP.
	Payload []byte // sent; default empty datagram
	Expect  []byte // the reply must contain it; nil: any reply

	// Misc.
	Command string // run by /bin/sh -c, on the machine
	// Dynamic is keepalived's misc_dynamic: exit status 0 is up (weight
	// kept), 1 is down, 2 to 255 are up with weight status-2.
	Dynamic bool
}

// OnFail is what happens to a real server that fails its check.
type OnFail uint8

const (
	// Remove takes it out of the service (ipvsadm -d), and adds it back
	// on recovery; keepalived's default.
	Remove OnFail = iota
	// Inhibit sets its weight to 0 (ipvsadm -e -w 0): no new
	// connections, existing ones drain; the weight comes back on
	// recovery. keepalived's inhibit_on_failure.
	Inhibit
)

func (o OnFail) String() string {
	if o == Inhibit {
		return "inhibit"
	}
	return "remove"
}

// MarshalText makes OnFail readable in JSON (for the control socket).
func (o OnFail) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads inhibit or remove.
func (o *OnFail) UnmarshalText(b []byte) error {
	switch string(b) {
	case "inhibit":
		*o = Inhibit
	case "remove":
		*o = Remove
	default:
		return fmt.Errorf("on-fail %q: want inhibit or remove", b)
	}
	return nil
}

// CheckService is the health checking of one virtual service
// (health.ServiceConfig).
type CheckService struct {
	Proto uint8          // ProtoTCP or ProtoUDP
	VIP   netip.AddrPort // the virtual service

	// Default, if set, checks every real server the service has at start
	// that Servers does not name.
	Default *Check
	OnFail  OnFail
	// Sorry, if valid, is added as a real server (weight SorryWeight,
	// default 1) while the service is below quorum, and removed when it
	// is back (keepalived's sorry_server).
	Sorry       netip.AddrPort
	SorryWeight int
	// SorryMethod and SorryTun are the sorry server's forwarding method
	// and encapsulation (keepalived's sorry_server_lvs_method; zero:
	// masquerading).
	SorryMethod Method
	SorryTun    Encap
	// Quorum is the least sum of the weights of the live real servers
	// for the service to be up (default 1, as keepalived); Hysteresis
	// widens it: lost below Quorum-Hysteresis, back at Quorum+Hysteresis.
	Quorum, Hysteresis int
	// Expire drops the connections of a server as soon as it fails, so
	// that clients (UDP flows above all) are rescheduled instead of
	// talking to a dead server until their connection times out, as the
	// kernel's expire_nodest_conn does for removed servers. It needs a
	// ConnExpirer (see Options).
	Expire bool

	Servers []CheckServer

	// Line is the rules file line that first named the service (0:
	// none), for errors.
	Line int
}

// CheckServer is one real server's check (health.ServerConfig).
type CheckServer struct {
	Addr  netip.AddrPort // as the service's dest: port 0 is "the client's port"
	Check *Check         // nil: the service's Default
	Line  int            // the rules file line (0: none)
}

// Checks is the health checking of a director (health.Config).
type Checks struct {
	Services []CheckService
}

// ErrCheck wraps every error in the health checking's configuration
// (health.ErrConfig).
var ErrCheck = errors.New("health")

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCheck, fmt.Sprintf(format, a...))
}

// Merge fills c's zero fields from def.
func (c Check) Merge(def *Check) Check {
	if def == nil {
		return c
	}
	if c.Kind == "" {
		c.Kind = def.Kind
	}
	if c.Interval == 0 {
		c.Interval = def.Interval
	}
	if c.Timeout == 0 {
		c.Timeout = def.Timeout
	}
	if c.Fall == 0 {
		c.Fall = def.Fall
	}
	if c.Rise == 0 {
		c.Rise = def.Rise
	}
	if c.Warmup == 0 {
		c.Warmup = def.Warmup
	}
	if !c.StartDown {
		c.StartDown = def.StartDown
	}
	if c.Kind != def.Kind {
		return c
	}
	if c.Port == 0 {
		c.Port = def.Port
	}
	if c.Path == "" {
		c.Path = def.Path
	}
	if c.VHost == "" {
		c.VHost = def.VHost
	}
	if c.Status == nil {
		c.Status = def.Status
	}
	if c.Digest == nil {
		c.Digest, c.DigestAlg = def.Digest, def.DigestAlg
	}
	if c.Contains == "" {
		c.Contains = def.Contains
	}
	if c.Payload == nil {
		c.Payload = def.Payload
	}
	if c.Expect == nil {
		c.Expect = def.Expect
	}
	if c.Command == "" {
		c.Command = def.Command
	}
	if !c.Dynamic {
		c.Dynamic = def.Dynamic
	}
	return c
}

// WithDefaults fills the package defaults and validates.
func (c Check) WithDefaults() (Check, error) {
	if c.Kind == "" {
		return c, cfgErr("no check kind (tcp, http, https, udp, ping, misc, none)")
	}
	if !c.Kind.Valid() {
		return c, cfgErr("unknown check kind %q", c.Kind)
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultTimeout, c.Interval)
	}
	if c.Fall == 0 {
		c.Fall = DefaultFall
	}
	if c.Rise == 0 {
		c.Rise = DefaultRise
	}
	switch {
	case c.Interval < 0 || c.Timeout < 0 || c.Warmup < 0:
		return c, cfgErr("negative duration")
	case c.Timeout > c.Interval:
		return c, cfgErr("timeout %v longer than interval %v", c.Timeout, c.Interval)
	case c.Fall < 0 || c.Rise < 0:
		return c, cfgErr("fall and rise must be at least 1")
	}
	switch c.Kind {
	case KindHTTP, KindHTTPS:
		if c.Path == "" {
			c.Path = "/"
		}
		if c.Path[0] != '/' {
			return c, cfgErr("path %q does not start with /", c.Path)
		}
		if c.Status == nil {
			c.Status = []StatusRange{{200, 299}}
		}
		for _, r := range c.Status {
			if r.Lo < 100 || r.Hi > 999 || r.Lo > r.Hi {
				return c, cfgErr("status range %d-%d", r.Lo, r.Hi)
			}
		}
		switch {
		case c.Digest == nil:
		case c.DigestAlg == DigestMD5 && len(c.Digest) == 16:
		case c.DigestAlg == DigestSHA256 && len(c.Digest) == 32:
		default:
			return c, cfgErr("digest: want md5 (32 hex digits) or sha256 (64)")
		}
	case KindMisc:
		if c.Command == "" {
			return c, cfgErr("misc check without cmd=")
		}
	}
	return c, nil
}
