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
	"strconv"
	"strings"

	"github.com/tunvs/tunvs/nat"
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

	// The real server (-r), if given.
	HasDest   bool
	DestAddr  netip.Addr
	DestPort  uint16
	Weight    int
	HasWeight bool

	Format Format

	// Timeouts for --set, seconds: tcp, tcpfin, udp.
	Timeouts [3]int
}

// ErrUsage marks a command line that ipvsadm would refuse.
var ErrUsage = errors.New("usage")

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// opNames maps both spellings of every command.
var opNames = map[string]Op{
	"-A": OpAddService, "--add-service": OpAddService,
	"-E": OpEditService, "--edit-service": OpEditService,
	"-D": OpDelService, "--delete-service": OpDelService,
	"-C": OpClear, "--clear": OpClear,
	"-R": OpRestore, "--restore": OpRestore,
	"-S": OpSave, "--save": OpSave,
	"-a": OpAddDest, "--add-server": OpAddDest,
	"-e": OpEditDest, "--edit-server": OpEditDest,
	"-d": OpDelDest, "--delete-server": OpDelDest,
	"-L": OpList, "-l": OpList, "--list": OpList,
	"-Z": OpZero, "--zero": OpZero,
	"--set": OpSetTimeout,
	"-h":    OpHelp, "--help": OpHelp,
}

var fmtNames = map[string]Format{
	"-n": FmtNumeric, "--numeric": FmtNumeric,
	"--stats": FmtStats, "--rate": FmtRate,
	"--thresholds": FmtThresholds, "--persistent-conn": FmtPersistentConn,
	"--nosort": FmtNoSort, "--exact": FmtExact,
	"-c": FmtConn, "--connection": FmtConn,
	"--timeout": FmtTimeout, "--daemon": FmtDaemon,
}

// Parse parses an ipvsadm command line (without the program name).
func Parse(args []string) (Command, error) {
	var c Command
	setOp := func(op Op, name string) error {
		if c.Op != OpNone && c.Op != op {
			return usagef("multiple commands specified")
		}
		c.Op = op
		return nil
	}
	args = splitJoined(args)
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", usagef("option %s requires an argument", a)
			}
			i++
			return args[i], nil
		}
		if op, ok := opNames[a]; ok {
			if err := setOp(op, a); err != nil {
				return c, err
			}
			if op == OpSetTimeout {
				for j := range 3 {
					v, err := next()
					if err != nil {
						return c, usagef("--set requires tcp tcpfin udp")
					}
					n, err := strconv.Atoi(v)
					if err != nil || n < 0 {
						return c, usagef("illegal timeout %q", v)
					}
					c.Timeouts[j] = n
				}
			}
			continue
		}
		if f, ok := fmtNames[a]; ok {
			c.Format |= f
			continue
		}
		switch a {
		case "--sort", "-6", "--ipv6":
			// Sorting is the default; -6 only matters with -f.
		case "-t", "--tcp-service", "-u", "--udp-service":
			v, err := next()
			if err != nil {
				return c, err
			}
			if c.HasService {
				return c, usagef("multiple service addresses specified")
			}
			c.Proto = nat.ProtoTCP
			if a == "-u" || a == "--udp-service" {
				c.Proto = nat.ProtoUDP
			}
			ap, hasPort, err := parseAddrPort(v)
			if err != nil {
				return c, usagef("illegal virtual server address[:port] specified: %v", err)
			}
			c.Addr, c.Port, c.HasService = ap.Addr(), ap.Port(), true
			_ = hasPort
		case "-f", "--fwmark-service":
			return c, usagef("-f (firewall mark services) is not supported: tunvs does not mark packets; use -t or -u")
		case "-s", "--scheduler":
			v, err := next()
			if err != nil {
				return c, err
			}
			c.Scheduler = v
		case "-r", "--real-server":
			v, err := next()
			if err != nil {
				return c, err
			}
			ap, _, err := parseAddrPort(v)
			if err != nil {
				return c, usagef("illegal real server address[:port] specified: %v", err)
			}
			c.DestAddr, c.DestPort, c.HasDest = ap.Addr(), ap.Port(), true
		case "-m", "--masquerading":
		case "-g", "--gatewaying":
			return c, usagef("-g (direct routing) is not supported: tunvs is a NAT director; use -m")
		case "-i", "--ipip":
			return c, usagef("-i (tunnelling) is not supported: tunvs is a NAT director; use -m")
		case "-w", "--weight":
			v, err := next()
			if err != nil {
				return c, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > nat.MaxWeight {
				return c, usagef("illegal weight specified")
			}
			c.Weight, c.HasWeight = n, true
		case "-p", "--persistent", "-M", "--netmask", "--pe", "-o", "--ops", "-b", "--sched-flags", "-x", "--u-threshold", "-y", "--l-threshold":
			return c, usagef("option %s is not supported yet", a)
		default:
			return c, usagef("unknown option %q", a)
		}
	}
	if c.Op == OpNone {
		if c.Format&(FmtTimeout|FmtConn|FmtStats|FmtNumeric) != 0 {
			c.Op = OpList // ipvsadm -n alone lists
		} else {
			return c, usagef("no command specified")
		}
	}
	return c, c.check()
}

// splitJoined splits "-Ln" style bundles of short flags and "-w3".
func splitJoined(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			if strings.ContainsRune("tursrwxyMpbf", rune(a[1])) {
				out = append(out, a[:2], a[2:])
				continue
			}
			ok := true
			for _, ch := range a[1:] {
				if !strings.ContainsRune("AEDCRSaedLlZnchm6g", ch) {
					ok = false
				}
			}
			if ok {
				for _, ch := range a[1:] {
					out = append(out, "-"+string(ch))
				}
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// check applies ipvsadm's rules on which options go with which command.
func (c *Command) check() error {
	needSvc := func() error {
		if !c.HasService {
			return usagef("service address not specified")
		}
		return nil
	}
	switch c.Op {
	case OpAddService, OpEditService, OpDelService:
		if err := needSvc(); err != nil {
			return err
		}
		if c.HasDest || c.HasWeight {
			return usagef("illegal option for a service command")
		}
		if c.Port == 0 {
			return usagef("zero port specified for non-persistent service")
		}
	case OpAddDest, OpEditDest, OpDelDest:
		if err := needSvc(); err != nil {
			return err
		}
		if !c.HasDest {
			return usagef("real server address not specified")
		}
		if c.Scheduler != "" {
			return usagef("illegal option -s for a real server command")
		}
		if c.DestPort == 0 {
			c.DestPort = c.Port
		}
		if c.Op == OpAddDest && !c.HasWeight {
			c.Weight = 1
		}
	}
	return nil
}

// parseAddrPort reads ipvsadm's address[:port] and [v6addr]:port.
func parseAddrPort(s string) (netip.AddrPort, bool, error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.AddrPort{}, false, fmt.Errorf("missing ] in %q", s)
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() {
			return netip.AddrPort{}, false, fmt.Errorf("bad IPv6 address in %q", s)
		}
		rest := s[end+1:]
		if rest == "" {
			return netip.AddrPortFrom(a, 0), false, nil
		}
		if rest[0] != ':' {
			return netip.AddrPort{}, false, fmt.Errorf("bad port in %q", s)
		}
		p, err := parsePort(rest[1:])
		return netip.AddrPortFrom(a, p), true, err
	}
	host, port, found := strings.Cut(s, ":")
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.AddrPort{}, false, fmt.Errorf("bad IPv4 address %q (IPv6 goes in brackets)", host)
	}
	if !found {
		return netip.AddrPortFrom(a, 0), false, nil
	}
	p, err := parsePort(port)
	return netip.AddrPortFrom(a, p), true, err
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}
