package rules

import (
	"fmt"
	"math"
	"time"
)

// Sysctl is one of the kernel's /proc/sys/net/ipv4/vs knobs that tunvs
// has (Documentation/networking/ipvs-sysctl.rst). A new knob is a row
// here and its setter and getter in nat (nat/sysctl.go); nat's tests
// check that every row has both.
type Sysctl struct {
	Name     string
	Default  int
	Min, Max int
	Doc      string
}

// SysctlTable lists the knobs, each with the kernel's default and range.
var SysctlTable = []Sysctl{
	{Name: "expire_nodest_conn", Default: 0, Min: 0, Max: 1,
		Doc: "expire the connections of a removed real server at once"},
	{Name: "expire_quiescent_template", Default: 0, Min: 0, Max: 1,
		Doc: "invalidate persistence templates of a real server of weight 0"},
	{Name: "conn_reuse_mode", Default: 1, Min: 0, Max: 3,
		Doc: "a SYN finding a TIME_WAIT or CLOSE connection is scheduled as new"},
	// tcp_conn_schedule: with sloppy_tcp any TCP packet but a RST may
	// open a connection, so a flow that arrives mid-stream (at another
	// director behind ECMP, or after a failover) is scheduled and goes
	// on. UDP needs no such knob: every datagram may open one.
	{Name: "sloppy_tcp", Default: 0, Min: 0, Max: 1,
		Doc: "a TCP packet other than a SYN (never a RST) may open a connection"},
	// The sync daemon's knobs (ip_vs_sync.c). The kernel sets
	// sync_threshold and sync_period as one sysctl, "sync_threshold = 3
	// 50"; here they are two.
	{Name: "sync_threshold", Default: 3, Min: 0, Max: math.MaxInt32,
		Doc: "a connection is synced at this many packets (modulo sync_period)"},
	{Name: "sync_period", Default: 50, Min: 0, Max: math.MaxInt32,
		Doc: "and again every sync_period packets after; 0: once"},
	{Name: "sync_refresh_period", Default: 0, Min: 0, Max: math.MaxInt32,
		Doc: "seconds: sync a connection again only when its expiry moved this much (0: off)"},
	{Name: "sync_retries", Default: 0, Min: 0, Max: 3,
		Doc: "resends within a sync_refresh_period"},
	{Name: "sync_persist_mode", Default: 0, Min: 0, Max: 1,
		Doc: "sync only the templates of persistent services, not their connections"},
	{Name: "sync_version", Default: 1, Min: 0, Max: 1,
		Doc: "the sync protocol version a master sends"},
	{Name: "sync_ports", Default: 1, Min: 1, Max: 64,
		Doc: "how many ports from the sync port the daemons use (a power of 2)"},
	// The flood defences (ip_vs_ctl.c update_defense_level, run every
	// second): "memory is short" is the host's free and buffer memory
	// below amemthresh pages.
	{Name: "amemthresh", Default: 1024, Min: 0, Max: math.MaxInt32,
		Doc: "pages of free memory below which the defences of mode 1 or 2 turn on"},
	{Name: "drop_entry", Default: 0, Min: 0, Max: 3,
		Doc: "drop entries at random (half-open first) every second: 0 never, 1/2 when memory is short, 3 always"},
	{Name: "secure_tcp", Default: 0, Min: 0, Max: 3,
		Doc: "the TCP state table that needs the real server's answer to establish: 0 never, 1/2 when memory is short, 3 always"},
	// Not the kernel's: tunvs's SYN proxy (nat/synproxy.go), whose
	// modes follow tcp_syncookies (0 never, 1 when the SYN queue
	// overflows, 2 always). Services with --synproxy always have it.
	{Name: "synproxy", Default: 1, Min: 0, Max: 2,
		Doc: "SYN cookies for every TCP service: 0 only --synproxy services, 1 while its half-open connections are at synproxy_backlog or the table is at its bound, 2 always"},
	// tcp_syncookies=1's trigger, a listener's SYN queue full
	// (inet_csk_reqsk_queue_is_full), its bound the listen backlog,
	// at most somaxconn (4096).
	{Name: "synproxy_backlog", Default: 4096, Min: 0, Max: math.MaxInt32,
		Doc: "half-open (SYN_RECV, SYNACK) connections of a service at which synproxy=1 answers its SYNs with cookies"},
}

// LookupSysctl finds a knob by name.
func LookupSysctl(name string) (Sysctl, bool) {
	for _, s := range SysctlTable {
		if s.Name == name {
			return s, true
		}
	}
	return Sysctl{}, false
}

// ValidSysctl says whether knob name may take value v (its range, and
// sync_ports a power of 2), as Validate and Next do.
func ValidSysctl(name string, v int) error { return validSysctl(name, v) }

func validSysctl(name string, v int) error {
	s, ok := LookupSysctl(name)
	if !ok {
		return fmt.Errorf("%w: no sysctl %q", ErrInvalid, name)
	}
	if v < s.Min || v > s.Max {
		return fmt.Errorf("%w: sysctl %s=%d out of range %d..%d", ErrInvalid, name, v, s.Min, s.Max)
	}
	if name == "sync_ports" && v&(v-1) != 0 {
		// proc_do_sync_ports: a power of 2.
		return fmt.Errorf("%w: sysctl sync_ports=%d is not a power of 2", ErrInvalid, v)
	}
	return nil
}

// Timeouts are connection timeouts by IPVS state name (StateNames); an
// absent state keeps its value.
type Timeouts map[string]time.Duration

// StateNames are the IPVS connection states, in the kernel's order
// (IP_VS_TCP_S_*, as ip_vs_proto_tcp.c tcp_state_name_table names them),
// then UDP's one state. nat's State values index this list.
var StateNames = [...]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP",
}

// The states `ipvsadm --set tcp tcpfin udp` sets.
const (
	TimeoutTCP    = "ESTABLISHED"
	TimeoutTCPFin = "FIN_WAIT"
	TimeoutUDP    = "UDP"
)

func validTimeout(state string, d time.Duration) error {
	for _, n := range StateNames {
		if n == state {
			if d <= 0 {
				return fmt.Errorf("%w: timeout %s %v", ErrInvalid, state, d)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: no connection state %q", ErrInvalid, state)
}
