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
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tunvs/tunvs/nat"
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
	OpStartDaemon
	OpStopDaemon
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
	// SchedFlags are -b's flags.
	SchedFlags sched.Flags
	// Persistent is -p; PersistTimeout its timeout in seconds (300 when
	// -p has no argument). PersistMaskBits is -M as a prefix length (0:
	// not given, the whole address).
	Persistent      bool
	PersistTimeout  int
	PersistMaskBits int
	// OnePacket is -o/--ops.
	OnePacket bool

	// The real server (-r), if given.
	HasDest   bool
	DestAddr  netip.Addr
	DestPort  uint16
	Weight    int
	HasWeight bool
	// UThreshold and LThreshold are -x and -y.
	UThreshold, LThreshold int
	HasUThreshold          bool
	HasLThreshold          bool

	Format Format

	// Timeouts for --set, seconds: tcp, tcpfin, udp.
	Timeouts [3]int

	// Daemon is --start-daemon's or --stop-daemon's (admin/sync.go).
	Daemon DaemonArgs

	opts uint32 // ipvsadm's OPT_* bits given, for the legality table
}

// ErrUsage marks a command line that ipvsadm would refuse.
var ErrUsage = errors.New("usage")

// usageError is a refused command line; its text is ipvsadm's message
// alone, as ipvsadm prints it.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, a ...any) error {
	return &usageError{fmt.Sprintf(format, a...)}
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

// ipvsadm's option bits (OPT_*), in the order of its optnames table.
const (
	optNumeric uint32 = 1 << iota
	optConnection
	optService
	optScheduler
	optPersistent
	optNetmask
	optServer
	optForward
	optWeight
	optUThreshold
	optLThreshold
	optTimeout
	optDaemon
	optStats
	optRate
	optThresholds
	optPersistentConn
	optNoSort
	optExact
	optOnePacket
	optSchedFlags
	numOpts = iota
)

// listFlags are the listing options: each sets a format bit and counts as
// its ipvsadm option for the legality table.
var listFlags = map[string]struct {
	f   Format
	opt uint32
}{
	"-n": {FmtNumeric, optNumeric}, "-c": {FmtConn, optConnection},
	"--stats": {FmtStats, optStats}, "--rate": {FmtRate, optRate},
	"--thresholds": {FmtThresholds, optThresholds}, "--persistent-conn": {FmtPersistentConn, optPersistentConn},
	"--nosort": {FmtNoSort, optNoSort}, "--exact": {FmtExact, optExact},
	"--timeout": {FmtTimeout, optTimeout}, "--daemon": {FmtDaemon, optDaemon},
}

var optNames = [numOpts]string{
	"numeric", "connection", "service-address", "scheduler", "persistent",
	"netmask", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "timeout", "daemon", "stats", "rate", "thresholds",
	"persistent-conn", "nosort", "exact", "ops", "sched-flags",
}

var cmdNames = map[Op]string{
	OpAddService: "add-service", OpEditService: "edit-service", OpDelService: "delete-service",
	OpClear: "flush", OpList: "list", OpAddDest: "add-server", OpDelDest: "delete-server",
	OpEditDest: "edit-server", OpSetTimeout: "set", OpRestore: "restore", OpSave: "save", OpZero: "zero",
	OpStartDaemon: "start-daemon", OpStopDaemon: "stop-daemon",
}

// cmdOpts is ipvsadm's commands_v_options table (without the sync-daemon
// columns): '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
//
//	n    c    svc  -s   -p   -M   -r   fwd  -w   -x   -y   tmo  dmn  st   rt   thr  pc   nos  ex   ops  -b
var cmdOpts = map[Op][numOpts]byte{
	OpAddService:  {'x', 'x', '+', ' ', ' ', ' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', ' ', ' '},
	OpEditService: {'x', 'x', '+', ' ', ' ', ' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', ' ', ' '},
	OpDelService:  {'x', 'x', '+', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpClear:       {'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpList:        {' ', '1', '1', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', '1', '1', ' ', ' ', ' ', ' ', ' ', ' ', 'x', 'x'},
	OpAddDest:     {'x', 'x', '+', 'x', 'x', 'x', '+', ' ', ' ', ' ', ' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpDelDest:     {'x', 'x', '+', 'x', 'x', 'x', '+', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpEditDest:    {'x', 'x', '+', 'x', 'x', 'x', '+', ' ', ' ', ' ', ' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpSetTimeout:  {'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpRestore:     {'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpSave:        {' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
	OpZero:        {'x', 'x', ' ', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'},
}

// shortWithArg are the short options that take an argument (-p's is
// optional).
const shortWithArg = "tufsrwxyMpb"

// shortNoArg are the short options without one.
const shortNoArg = "AEDCRSaedLlZhnc6gmio"

// longNames maps long options to their short form (or keeps them long).
var longNames = map[string]string{
	"--tcp-service": "-t", "--udp-service": "-u", "--fwmark-service": "-f",
	"--scheduler": "-s", "--persistent": "-p", "--netmask": "-M",
	"--real-server": "-r", "--masquerading": "-m", "--ipip": "-i",
	"--gatewaying": "-g", "--weight": "-w", "--u-threshold": "-x",
	"--l-threshold": "-y", "--numeric": "-n", "--connection": "-c",
	"--ipv6": "-6", "--ops": "-o", "--sched-flags": "-b",
}

// Parse parses an ipvsadm command line (without the program name).
// Options may come in any order, short ones bundled (-Ln, -w3), long ones
// as --opt VALUE or --opt=VALUE.
func Parse(args []string) (Command, error) {
	args, err := splitJoined(args)
	if err != nil {
		return Command{}, err
	}
	p := parser{args: args}
	for ; p.i < len(p.args); p.i++ {
		if err := p.word(); err != nil {
			return p.c, err
		}
	}
	if p.c.Op == OpNone {
		return p.c, usagef("no command specified")
	}
	if err := p.resolve(); err != nil {
		return p.c, err
	}
	return p.c, p.c.check()
}

// parser is Parse's state: the command as far as it is known, the words
// and the position in them, and the arguments that are read only once
// every option is known (an address's meaning depends on -t or -u, a
// netmask's on the service's family, scheduler flags on -s).
type parser struct {
	c    Command
	args []string
	i    int // the word being parsed

	svcArg, destArg, maskArg, flagsArg string
	fwd                                string // -m, -g or -i as given
}

// set marks option o as given, refusing it a second time.
func (p *parser) set(o uint32) error {
	if p.c.opts&o != 0 {
		for i := range numOpts {
			if o == 1<<i {
				return usagef("multiple '%s' options specified", optNames[i])
			}
		}
	}
	p.c.opts |= o
	return nil
}

// next consumes the argument of the option being parsed.
func (p *parser) next() (string, error) {
	if p.i+1 >= len(p.args) {
		return "", usagef("option %s requires an argument", p.args[p.i])
	}
	p.i++
	return p.args[p.i], nil
}

// word parses the word at p.i (and the arguments it consumes): a command,
// a listing flag or an option.
func (p *parser) word() error {
	a := p.args[p.i]
	if s, ok := longNames[a]; ok {
		a = s
	}
	if op, ok := opNames[a]; ok {
		return p.command(op)
	}
	if lf, ok := listFlags[a]; ok {
		p.c.Format |= lf.f
		return p.set(lf.opt)
	}
	return p.option(a)
}

// command sets the operation; --set takes its three timeouts here.
func (p *parser) command(op Op) error {
	if p.c.Op != OpNone && p.c.Op != op {
		return usagef("multiple commands specified")
	}
	p.c.Op = op
	if op != OpSetTimeout {
		return nil
	}
	for j := range 3 {
		v, err := p.next()
		if err != nil {
			return usagef("--set requires tcp tcpfin udp")
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxTimeout {
			return usagef("illegal timeout value %q specified", v)
		}
		p.c.Timeouts[j] = n
	}
	return nil
}

// option parses an option a (its short form, if it has one) and its
// argument.
func (p *parser) option(a string) error {
	c := &p.c
	var err error
	switch a {
	case "--sort":
		// ipvsadm 1.31 sorts by default; --sort stays for old scripts.
	case "-6":
		// Only meaningful with -f, which tunvs refuses.
	case "-t", "-u":
		if err := p.set(optService); err != nil {
			return usagef("multiple service addresses specified")
		}
		c.Proto = nat.ProtoTCP
		if a == "-u" {
			c.Proto = nat.ProtoUDP
		}
		p.svcArg, err = p.next()
	case "-s":
		if err = p.set(optScheduler); err == nil {
			c.Scheduler, err = p.next()
		}
	case "-p":
		err = p.persistent()
	case "-M":
		if err = p.set(optNetmask); err == nil {
			p.maskArg, err = p.next()
		}
	case "-r":
		if err = p.set(optServer); err == nil {
			p.destArg, err = p.next()
		}
	case "-m", "-g", "-i":
		err = p.forward(a)
	case "-w":
		err = p.weight()
	case "-x", "-y":
		err = p.threshold(a)
	case "-o":
		c.OnePacket = true
		err = p.set(optOnePacket)
	case "-b":
		if err = p.set(optSchedFlags); err == nil {
			p.flagsArg, err = p.next()
		}
	default:
		if ok, err := p.daemonOption(a); ok {
			return err
		}
		return unsupported(a, p.args[p.i])
	}
	return err
}

// unsupported is the refusal of an option tunvs does not take (a, its
// short form) or does not know (as given).
func unsupported(a, given string) error {
	switch a {
	case "-f":
		return usagef("-f (firewall-mark services) is not supported: tunvs does not mark packets; use -t or -u")
	case "--pe":
		return usagef("--pe (persistence engines, e.g. sip) is not supported by tunvs")
	case "-v", "--version":
		return usagef("%s: tunvsadm speaks ipvsadm v1.31's command line", a)
	}
	return usagef("unknown option %q", given)
}

// persistent parses -p and its optional timeout.
func (p *parser) persistent() error {
	if err := p.set(optPersistent); err != nil {
		return err
	}
	p.c.Persistent, p.c.PersistTimeout = true, defaultPersistTimeout
	// The timeout is optional, as with popt: the next word is taken when
	// it is not an option.
	if p.i+1 < len(p.args) && !strings.HasPrefix(p.args[p.i+1], "-") {
		p.i++
		n, err := strconv.Atoi(p.args[p.i])
		if err != nil || n < 1 || n > maxTimeout {
			return usagef("illegal timeout for persistent service specified")
		}
		p.c.PersistTimeout = n
	}
	return nil
}

// forward parses the forwarding method: only masquerading (NAT) is.
func (p *parser) forward(a string) error {
	if p.fwd != "" && p.fwd != a {
		return usagef("multiple '%s' options specified", optNames[7])
	}
	p.fwd = a
	p.c.opts |= optForward
	switch a {
	case "-g":
		return usagef("-g (direct routing, gatewaying) is not supported: tunvs is a NAT director; use -m")
	case "-i":
		return usagef("-i (IP-IP tunnelling) is not supported: tunvs is a NAT director; use -m")
	}
	return nil
}

// weight parses -w.
func (p *parser) weight() error {
	if err := p.set(optWeight); err != nil {
		return err
	}
	v, err := p.next()
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > nat.MaxWeight {
		return usagef("illegal weight specified")
	}
	p.c.Weight, p.c.HasWeight = n, true
	return nil
}

// threshold parses -x (upper) or -y (lower connection threshold).
func (p *parser) threshold(a string) error {
	o, name := optUThreshold, "u_threshold"
	if a == "-y" {
		o, name = optLThreshold, "l_threshold"
	}
	if err := p.set(o); err != nil {
		return err
	}
	v, err := p.next()
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return usagef("illegal %s specified", name)
	}
	if a == "-x" {
		p.c.UThreshold, p.c.HasUThreshold = n, true
	} else {
		p.c.LThreshold, p.c.HasLThreshold = n, true
	}
	return nil
}

// resolve parses the arguments kept until every option was known.
func (p *parser) resolve() error {
	c := &p.c
	if p.svcArg != "" {
		ap, err := parseAddrPort(p.svcArg, c.Proto)
		if err != nil {
			return usagef("illegal virtual server address[:port] specified")
		}
		c.Addr, c.Port, c.HasService = ap.Addr(), ap.Port(), true
	}
	if p.destArg != "" {
		ap, err := parseAddrPort(p.destArg, c.Proto)
		if err != nil {
			return usagef("illegal real server address[:port] specified")
		}
		c.DestAddr, c.DestPort, c.HasDest = ap.Addr(), ap.Port(), true
	}
	if p.maskArg != "" {
		bits, err := parseNetmask(p.maskArg, !c.HasService || c.Addr.Is4())
		if err != nil {
			return err
		}
		c.PersistMaskBits = bits
	}
	if p.flagsArg != "" {
		f, err := parseSchedFlags(schedName(c.Scheduler), p.flagsArg)
		if err != nil {
			return err
		}
		c.SchedFlags = f
	}
	return nil
}

// maxTimeout is ipvsadm's MAX_TIMEOUT (31 days).
const maxTimeout = 86400 * 31

// defaultPersistTimeout is IPVS_SVC_PERSISTENT_TIMEOUT, -p without a value.
const defaultPersistTimeout = 300

// parseNetmask reads -M: a dotted IPv4 netmask, or an IPv6 prefix length.
// tunvs keeps masks as prefix lengths, so a non-contiguous IPv4 mask (which
// the kernel would AND blindly) is refused.
func parseNetmask(s string, v4 bool) (int, error) {
	if !v4 {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 128 {
			return 0, usagef("illegal ipv6 netmask specified")
		}
		return n, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, usagef("illegal virtual server persistent mask specified")
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	bits := 0
	for bits < 32 && m&(1<<(31-bits)) != 0 {
		bits++
	}
	if bits < 32 && m<<bits != 0 {
		return 0, usagef("illegal virtual server persistent mask specified: %s is not contiguous (tunvs keeps masks as prefixes)", s)
	}
	return bits, nil
}

// parseSchedFlags is ipvsadm's parse_sched_flags.
func parseSchedFlags(schedName, arg string) (sched.Flags, error) {
	var f sched.Flags
	for _, fl := range strings.Split(arg, ",") {
		need := ""
		switch {
		case strings.HasPrefix(fl, "flag-1"):
			f |= sched.FlagSched1
		case strings.HasPrefix(fl, "flag-2"):
			f |= sched.FlagSched2
		case strings.HasPrefix(fl, "flag-3"):
			f |= sched.FlagSched3
		case strings.HasPrefix(fl, "sh-fallback"):
			f, need = f|sched.FlagSched1, "sh"
		case strings.HasPrefix(fl, "sh-port"):
			f, need = f|sched.FlagSched2, "sh"
		case strings.HasPrefix(fl, "mh-fallback"):
			f, need = f|sched.FlagSched1, "mh"
		case strings.HasPrefix(fl, "mh-port"):
			f, need = f|sched.FlagSched2, "mh"
		default:
			return 0, usagef("invalid scheduler flag `%s'", fl)
		}
		if need != "" && need != schedName {
			return 0, usagef("incompatible scheduler flag `%s'", fl)
		}
	}
	return f, nil
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

// splitJoined splits "-Ln" style bundles of short options, "-w3" and
// "--weight=3".
func splitJoined(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if strings.HasPrefix(a, "--") {
			if k, v, ok := strings.Cut(a, "="); ok {
				out = append(out, k, v)
				continue
			}
			out = append(out, a)
			continue
		}
		if len(a) <= 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		// A bundle: short options without arguments, the last one may
		// take the rest of the word as its argument (getopt's rule).
		for j := 1; j < len(a); j++ {
			ch := a[j]
			switch {
			case strings.IndexByte(shortWithArg, ch) >= 0:
				out = append(out, "-"+string(ch))
				if j+1 < len(a) {
					out = append(out, a[j+1:])
				}
				j = len(a)
			case strings.IndexByte(shortNoArg, ch) >= 0:
				out = append(out, "-"+string(ch))
			default:
				return nil, usagef("invalid option -- '%c'", ch)
			}
		}
	}
	return out, nil
}

// check applies ipvsadm's rules on which options go with which command
// (generic_opt_check) and its checks after parsing.
func (c *Command) check() error {
	if err := c.checkDaemon(); err != nil {
		return err
	}
	if tbl, ok := cmdOpts[c.Op]; ok {
		name := cmdNames[c.Op]
		last := -1
		for j := range numOpts {
			given := c.opts&(1<<j) != 0
			switch {
			case !given && tbl[j] == '+':
				return usagef("You need to supply the '%s' option for the '%s' command", optNames[j], name)
			case given && tbl[j] == 'x':
				return usagef("Illegal '%s' option with the '%s' command", optNames[j], name)
			case given && tbl[j] == '1':
				if last >= 0 {
					return usagef("The option '%s' conflicts with the '%s' option in the '%s' command", optNames[j], optNames[last], name)
				}
				last = j
			}
		}
	}
	switch c.Op {
	case OpAddService, OpEditService:
		if c.Port == 0 && !c.Persistent {
			return usagef("Zero port specified for non-persistent service")
		}
		if c.OnePacket && c.Proto != nat.ProtoUDP {
			return usagef("One-Packet Scheduling is only applicable to UDP virtual services")
		}
	case OpAddDest, OpEditDest, OpDelDest:
		if c.DestPort == 0 {
			c.DestPort = c.Port
		}
		if c.Op == OpAddDest && !c.HasWeight {
			c.Weight = 1
		}
	}
	return nil
}

// parseAddrPort reads ipvsadm's address[:port] and [v6addr]:port. Without
// -n ipvsadm also takes host and service names: tunvs reads hosts from
// /etc/hosts and services from /etc/services only (no DNS).
func parseAddrPort(s string, proto uint8) (netip.AddrPort, error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.AddrPort{}, fmt.Errorf("missing ] in %q", s)
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("bad IPv6 address in %q", s)
		}
		rest := s[end+1:]
		if rest == "" {
			return netip.AddrPortFrom(a, 0), nil
		}
		if rest[0] != ':' {
			return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
		}
		p, err := parsePort(rest[1:], proto)
		return netip.AddrPortFrom(a, p), err
	}
	host, port, found := strings.Cut(s, ":")
	a, err := netip.ParseAddr(host)
	if err != nil {
		var ok bool
		if a, ok = lookupHost(host); !ok {
			return netip.AddrPort{}, fmt.Errorf("bad address %q", host)
		}
	}
	if !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("bad IPv4 address %q (IPv6 goes in brackets)", host)
	}
	if !found {
		return netip.AddrPortFrom(a, 0), nil
	}
	p, err := parsePort(port, proto)
	return netip.AddrPortFrom(a, p), err
}

func parsePort(s string, proto uint8) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		if p, ok := lookupService(s, proto); ok {
			return p, nil
		}
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}
