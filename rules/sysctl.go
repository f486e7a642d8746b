package rules

import (
	"fmt"
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

func validSysctl(name string, v int) error {
	s, ok := LookupSysctl(name)
	if !ok {
		return fmt.Errorf("%w: no sysctl %q", ErrInvalid, name)
	}
	if v < s.Min || v > s.Max {
		return fmt.Errorf("%w: sysctl %s=%d out of range %d..%d", ErrInvalid, name, v, s.Min, s.Max)
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
