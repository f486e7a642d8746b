// Package admin speaks ipvsadm: it parses ipvsadm command lines and
// ipvsadm-save rules files into Commands, applies them to a nat.Table, and
// prints listings byte for byte as ipvsadm 1.31 does. It also carries the
// control socket between the tunvs daemon and tunvsadm.
//
// It does not touch packets; nat does.
package admin

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// Op is the command of an ipvsadm line.
type Op uint8

// The ipvsadm commands.
const (
	OpNone Op = iota
	OpAddService
	OpEditService
	OpDelService
	OpClear
	OpRestore
	OpSave
	OpAddDest
	OpEditDest
	OpDelDest
	OpList
	OpZero
	OpSetTimeout
	OpHelp
	OpVersion
	OpStartDaemon
	OpStopDaemon
	// OpSetSysctl is tunvs's `--sysctl NAME=VALUE` (not ipvsadm's): a
	// /proc/sys/net/ipv4/vs knob (rules.SysctlTable).
	OpSetSysctl
	// DPVS's --add-laddr, --del-laddr, --get-laddr: a service's full-NAT
	// local addresses (-z).
	OpAddLocalAddr
	OpDelLocalAddr
	OpGetLocalAddr
)

// Format selects what a listing shows (ipvsadm's FMT_* bits).
type Format uint16

// Listing options.
const (
	FmtNumeric Format = 1 << iota
	FmtStats
	FmtRate
	FmtThresholds
	FmtPersistentConn
	FmtNoSort
	FmtExact
	FmtConn
	FmtTimeout
	FmtDaemon
	FmtRule
	FmtTunInfo
	// FmtSysctl is tunvs's `-L --sysctl` (or `--sysctl` alone): the
	// knobs as `sysctl net.ipv4.vs` prints them.
	FmtSysctl
)

// Command is one parsed ipvsadm command line.
type Command struct {
	Op Op

	// The service (-t/-u), if given.
	HasService bool
	Proto      uint8
	Addr       netip.Addr
	Port       uint16
	Scheduler  string
	// SchedFlags are -b's flags.
	SchedFlags sched.Flags
	// Persistent is -p; PersistTimeout its timeout in seconds (360 when
	// -p has no argument). PersistMaskBits is -M as a prefix length (0:
	// not given, the whole address).
	Persistent      bool
	PersistTimeout  int
	PersistMaskBits int
	// OnePacket is -o/--ops.
	OnePacket bool
	// SynProxy is DPVS's -j/--synproxy enable.
	SynProxy bool

	// The real server (-r), if given.
	HasDest  bool
	DestAddr netip.Addr
	DestPort uint16
	// Method is the real server's forwarding method: -m (the zero
	// value, and what tunvs takes when none is given), -g or -i; Tun is
	// -i's --tun-type, --tun-port and checksum option.
	Method    rules.Method
	Tun       rules.Encap
	Weight    int
	HasWeight bool
	// UThreshold and LThreshold are -x and -y.
	UThreshold, LThreshold int
	HasUThreshold          bool
	HasLThreshold          bool
	// FullNAT is --fullnat (DPVS's forwarding method) instead of -m.
	FullNAT bool
	// ProxyProtocol is DPVS's --proxy-protocol, on -A/-E for the
	// service and on -a/-e for one real server.
	ProxyProtocol rules.ProxyProtocol

	// LocalAddr is -z/--laddr.
	LocalAddr netip.Addr

	Format Format

	// Timeouts for --set, seconds: tcp, tcpfin, udp (0: unchanged).
	Timeouts [3]int

	// Daemon is --start-daemon's or --stop-daemon's (admin/sync.go).
	Daemon DaemonArgs

	// Sysctl and SysctlValue are --sysctl NAME=VALUE's.
	Sysctl      string
	SysctlValue int
}

// ErrUsage marks a command line that ipvsadm would refuse.
var ErrUsage = errors.New("usage")

// usageError is a refused command line; its text is ipvsadm's message
// alone, as ipvsadm prints it.
type usageError struct {
	msg string
	// exit is the status (0: 2, ipvsadm's fail(2, ...)); tryHelp prints
	// ipvsadm's "Try `prog -h'..." instead of msg.
	exit    int
	tryHelp bool
}

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// schedFlagsString is ipvsadm's print_sched_flags.
func schedFlagsString(schedName string, f sched.Flags) string {
	var s []string
	switch schedName {
	case "sh", "mh":
		if f&sched.FlagSched1 != 0 {
			s = append(s, schedName+"-fallback")
		}
		if f&sched.FlagSched2 != 0 {
			s = append(s, schedName+"-port")
		}
	default:
		if f&sched.FlagSched1 != 0 {
			s = append(s, "flag-1")
		}
		if f&sched.FlagSched2 != 0 {
			s = append(s, "flag-2")
		}
	}
	if f&sched.FlagSched3 != 0 {
		s = append(s, "flag-3")
	}
	return strings.Join(s, ",")
}
