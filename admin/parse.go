package admin

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// Parse reads an ipvsadm command line (without the program name) the way
// ipvsadm 1.31 does (ipvsadm.c: parse_options and process_options, with
// popt 1.19's option scanning), so that a command line is accepted or
// refused with ipvsadm's message and exit status; parity's cli_*
// scenarios check this against the real ipvsadm. In short: the first
// option must be the command; options are checked in the order given;
// popt's errors end with status 255, ipvsadm's with 2. Then tunvs refuses
// what it does not do (-g, -i, -f, --sctp-service, --pe, non-contiguous
// IPv4 masks) with its own message.
func Parse(args []string) (Command, error) {
	p := &ipvsadmParser{po: popt{args: args}}
	return p.parse()
}

// Forwarding methods (-m, -g, -i).
const (
	fwdNone = iota // not given: ipvsadm's default, -g; tunvs takes it as -m
	fwdMasq
	fwdRoute
	fwdTunnel
	fwdFullNAT // DPVS's --fullnat
)

// ipvsadm's OPT_* bits, in the order of its optnames table.
const (
	optNumeric = iota
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
	optMcast
	optTimeout
	optDaemon
	optStats
	optRate
	optThresholds
	optPersistentConn
	optNoSort
	optSyncID
	optExact
	optOnePacket
	optPE
	optSchedFlags
	optMcastGroup
	optMcastPort
	optMcastTTL
	optSyncMaxlen
	optTunInfo
	optTunType
	optTunPort
	optTunNoCsum
	optTunCsum
	optTunRemCsum
	// optLocalAddr is DPVS's -z/--laddr (OPT_LOCAL_ADDRESS), after
	// ipvsadm 1.31's own.
	optLocalAddr
	// optSynProxy is DPVS's -j/--synproxy (OPT_SYNPROXY).
	optSynProxy
	numOpts
)

var optNames = [numOpts]string{
	"numeric", "connection", "service-address", "scheduler", "persistent",
	"netmask", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "mcast-interface", "timeout", "daemon", "stats", "rate",
	"thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
	"sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen",
	"tun-info", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
	"laddr", "synproxy",
}

// ipvsadm's commands (CMD_*), in the order of its cmdnames table.
const (
	cmdAdd = iota
	cmdEdit
	cmdDel
	cmdFlush
	cmdList
	cmdAddDest
	cmdDelDest
	cmdEditDest
	cmdTimeout
	cmdStartDaemon
	cmdStopDaemon
	cmdRestore
	cmdSave
	cmdZero
	// DPVS's local-address commands (CMD_ADDLADDR, CMD_DELLADDR,
	// CMD_GETLADDR), after ipvsadm 1.31's own.
	cmdAddLaddr
	cmdDelLaddr
	cmdGetLaddr
	numCmds
)

var cmdNames = [numCmds]string{
	"add-service", "edit-service", "delete-service", "flush", "list",
	"add-server", "delete-server", "edit-server", "set", "start-daemon",
	"stop-daemon", "restore", "save", "zero", "add-laddr", "del-laddr", "get-laddr",
}

var cmdOps = [numCmds]Op{
	cmdAdd: OpAddService, cmdEdit: OpEditService, cmdDel: OpDelService, cmdFlush: OpClear,
	cmdList: OpList, cmdAddDest: OpAddDest, cmdDelDest: OpDelDest, cmdEditDest: OpEditDest,
	cmdTimeout: OpSetTimeout, cmdStartDaemon: OpStartDaemon, cmdStopDaemon: OpStopDaemon,
	cmdRestore: OpRestore, cmdSave: OpSave, cmdZero: OpZero,
	cmdAddLaddr: OpAddLocalAddr, cmdDelLaddr: OpDelLocalAddr, cmdGetLaddr: OpGetLocalAddr,
}

// commandsVOptions is ipvsadm's commands_v_options table: '+'
// compulsory, 'x' illegal, '1' exclusive, ' ' optional.
var commandsVOptions = [numCmds]string{
	// -n -c svc -s -p -M -r fwd -w -x -y -mc tot dmn -st -rt thr -pc srt
	// sid -ex ops -pe -b grp port ttl size tinf type tprt nocs csum remc
	// laddr (DPVS's column, and its rows for the laddr commands) -j
	// (DPVS's synproxy)
	cmdAdd:         "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx ",
	cmdEdit:        "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx ",
	cmdDel:         "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdFlush:       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdList:        " 11xxxxxxxxx11       xxxxxxx xxxxxxx",
	cmdAddDest:     "xx+xxx+    xxxxxxxxxxxxxxxxxx     xx",
	cmdDelDest:     "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdEditDest:    "xx+xxx+    xxxxxxxxxxxxxxxxxx     xx",
	cmdTimeout:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdStartDaemon: "xxxxxxxxxxx xxxxxxx xxxx    xxxxxxxx",
	cmdStopDaemon:  "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxxx",
	cmdRestore:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdSave:        " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdZero:        "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdAddLaddr:    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+x",
	cmdDelLaddr:    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+x",
	cmdGetLaddr:    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

// The tunnel types and their options (tunnel_types_v_options).
var tunNames = []string{"ipip", "gue", "gre"}

var tunOpts = [4]int{optTunPort, optTunNoCsum, optTunCsum, optTunRemCsum}

var tunnelTypesVOptions = [3]string{
	"xxxx", // ipip
	"+111", // gue
	"x11x", // gre
}

// popt's argument kinds.
const (
	argNone = iota
	argRequired
	argOptional
)

// poptOption is a line of ipvsadm's options_table.
type poptOption struct {
	long  string
	short byte
	arg   int
}

var poptTable = []poptOption{
	{"add-service", 'A', argNone}, {"edit-service", 'E', argNone}, {"delete-service", 'D', argNone},
	{"clear", 'C', argNone}, {"list", 'L', argNone}, {"list", 'l', argNone}, {"zero", 'Z', argNone},
	{"add-server", 'a', argNone}, {"edit-server", 'e', argNone}, {"delete-server", 'd', argNone},
	{"set", 0, argNone}, {"help", 'h', argNone}, {"version", 'v', argNone},
	{"restore", 'R', argNone}, {"save", 'S', argNone},
	{"start-daemon", 0, argRequired}, {"stop-daemon", 0, argRequired},
	{"tcp-service", 't', argRequired}, {"udp-service", 'u', argRequired},
	{"sctp-service", 0, argRequired}, {"fwmark-service", 'f', argRequired},
	{"scheduler", 's', argRequired}, {"persistent", 'p', argOptional},
	{"netmask", 'M', argRequired}, {"real-server", 'r', argRequired},
	{"masquerading", 'm', argNone}, {"ipip", 'i', argNone}, {"gatewaying", 'g', argNone},
	{"weight", 'w', argRequired}, {"u-threshold", 'x', argRequired}, {"l-threshold", 'y', argRequired},
	{"numeric", 'n', argNone}, {"connection", 'c', argNone},
	{"mcast-interface", 0, argRequired}, {"syncid", 0, argRequired},
	{"timeout", 0, argNone}, {"daemon", 0, argNone}, {"stats", 0, argNone}, {"rate", 0, argNone},
	{"thresholds", 0, argNone}, {"persistent-conn", 0, argNone}, {"nosort", 0, argNone},
	{"sort", 0, argNone}, {"exact", 'X', argNone}, {"ipv6", '6', argNone}, {"ops", 'o', argNone},
	{"pe", 0, argRequired}, {"sched-flags", 'b', argRequired},
	{"mcast-group", 0, argRequired}, {"mcast-port", 0, argRequired}, {"mcast-ttl", 0, argRequired},
	{"sync-maxlen", 0, argRequired}, {"tun-info", 0, argNone}, {"tun-type", 0, argRequired},
	{"tun-port", 0, argRequired}, {"tun-nocsum", 0, argNone}, {"tun-csum", 0, argNone},
	{"tun-remcsum", 0, argNone},
	// DPVS's ipvsadm: --fullnat is its -b, which is ipvsadm 1.31's
	// --sched-flags, so it is long only here.
	{"add-laddr", 'P', argNone}, {"del-laddr", 'Q', argNone}, {"get-laddr", 'G', argNone},
	{"fullnat", 0, argNone}, {"laddr", 'z', argRequired}, {"proxy-protocol", 0, argRequired},
	// DPVS's -j/--synproxy enable|disable (ipvsadm 1.31 has no -j).
	{"synproxy", 'j', argRequired},
	// tunvs's own, not ipvsadm's.
	{"sysctl", 0, argOptional},
}

// popt's errors (poptStrerror).
const (
	poptNoArg       = "missing argument"
	poptBadOpt      = "unknown option"
	poptUnwantedArg = "option does not take an argument"
)

// popt scans a command line as popt 1.19's poptGetNextOpt does with
// ipvsadm's table: words that are not options (or "-", or everything
// after "--") are kept for poptGetArg; "-abc" is a bundle of short
// options, where one that takes an argument takes the rest of the word
// (after one '=') or the next word; "--name=value" gives a long option
// its argument; an optional argument (-p) is taken from the next word
// only when it does not start with '-'.
type popt struct {
	args     []string
	next     int      // next word
	charArg  string   // the rest of a bundle of short options
	leftover []string // words that are not options
	rest     bool     // after "--"
}

// opt is one option found.
type opt struct {
	o      *poptOption
	arg    string
	hasArg bool
}

// nextOpt returns the next option; ok false at the end; err is popt's
// message ("WORD: unknown option").
func (p *popt) nextOpt() (o opt, ok bool, err error) {
	for {
		if p.charArg == "" {
			if p.next >= len(p.args) {
				return o, false, nil
			}
			w := p.args[p.next]
			p.next++
			if p.rest || !strings.HasPrefix(w, "-") || w == "-" {
				p.leftover = append(p.leftover, w)
				continue
			}
			if w == "--" {
				p.rest = true
				continue
			}
			if strings.HasPrefix(w, "--") {
				name, val, hasVal := strings.Cut(w[2:], "=")
				var found *poptOption
				for i := range poptTable {
					if poptTable[i].long == name {
						found = &poptTable[i]
						break
					}
				}
				if found == nil {
					return o, false, p.bad(poptBadOpt)
				}
				if hasVal && found.arg == argNone {
					return o, false, p.bad(poptUnwantedArg)
				}
				if hasVal {
					return opt{o: found, arg: val, hasArg: true}, true, nil
				}
				return p.takeArg(found)
			}
			p.charArg = w[1:]
		}
		c := p.charArg[0]
		var found *poptOption
		for i := range poptTable {
			if poptTable[i].short == c && c != 0 {
				found = &poptTable[i]
				break
			}
		}
		rest := p.charArg[1:]
		p.charArg = ""
		if found == nil {
			return o, false, p.bad(poptBadOpt)
		}
		if rest != "" {
			p.charArg = strings.TrimPrefix(rest, "=")
			if p.charArg == "" {
				// "-p=": an empty argument.
				if found.arg != argNone {
					return opt{o: found, arg: "", hasArg: true}, true, nil
				}
			}
		}
		if found.arg != argNone && p.charArg != "" {
			a := p.charArg
			p.charArg = ""
			return opt{o: found, arg: a, hasArg: true}, true, nil
		}
		return p.takeArg(found)
	}
}

// takeArg takes an option's argument from the next word.
func (p *popt) takeArg(o *poptOption) (opt, bool, error) {
	if o.arg == argNone {
		return opt{o: o}, true, nil
	}
	if p.next >= len(p.args) {
		if o.arg == argOptional {
			return opt{o: o}, true, nil
		}
		return opt{}, false, p.bad(poptNoArg)
	}
	if o.arg == argOptional && strings.HasPrefix(p.args[p.next], "-") {
		return opt{o: o}, true, nil
	}
	p.next++
	return opt{o: o, arg: p.args[p.next-1], hasArg: true}, true, nil
}

// badOption is poptBadOption: the word popt was reading.
func (p *popt) badOption() string {
	if p.next == 0 {
		return ""
	}
	return p.args[p.next-1]
}

func (p *popt) bad(msg string) error {
	return &usageError{msg: p.badOption() + ": " + msg, exit: 255}
}

// firstCommands are the commands parse_options's first switch takes, by
// long name ("list" is both -L and -l).
var firstCommands = map[string]int{
	"add-service": cmdAdd, "edit-service": cmdEdit, "delete-service": cmdDel,
	"add-server": cmdAddDest, "edit-server": cmdEditDest, "delete-server": cmdDelDest,
	"clear": cmdFlush, "list": cmdList, "zero": cmdZero, "set": cmdTimeout,
	"restore": cmdRestore, "save": cmdSave,
	"add-laddr": cmdAddLaddr, "del-laddr": cmdDelLaddr, "get-laddr": cmdGetLaddr,
}

// ipvsadmParser holds ipvsadm's parse state (struct ipvs_command_entry,
// options, format).
type ipvsadmParser struct {
	po      popt
	c       Command
	cmd     int
	opts    uint64
	svcV6   bool
	destV6  bool
	fwmark  bool
	fwd     int
	mask    netip.Addr // -M for IPv4 (from inet_aton)
	mask6   int        // -M for IPv6
	flags   string     // -b's argument
	tunType int
	tunnel  bool // a tunnel option was given
	pe      bool
	sctp    bool
}

// fail is ipvsadm's fail(2, ...).
func fail(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), exit: 2}
}

func tryHelp() error { return &usageError{tryHelp: true, exit: 255} }

func (p *ipvsadmParser) set(o int) error {
	if p.opts&(1<<o) != 0 {
		return fail("multiple '%s' options specified", optNames[o])
	}
	p.opts |= 1 << o
	return nil
}

func (p *ipvsadmParser) parse() (Command, error) {
	c := &p.c
	c.Weight = 1
	// The first option is the command.
	o, ok, err := p.po.nextOpt()
	if err != nil || !ok {
		return *c, tryHelp()
	}
	cmd, isCmd := firstCommands[o.o.long]
	switch {
	case isCmd:
		p.cmd = cmd
	case o.o.long == "start-daemon", o.o.long == "stop-daemon":
		p.cmd = cmdStartDaemon
		if o.o.long == "stop-daemon" {
			p.cmd = cmdStopDaemon
		}
		role, err := ipvssync.ParseRole(o.arg)
		if err != nil {
			// Both are ipvsadm's words, the second one's too.
			if p.cmd == cmdStartDaemon {
				return *c, fail("illegal start-daemon parameter specified")
			}
			return *c, fail("illegal start_daemon specified")
		}
		c.Daemon.Role = role
	case o.o.short == 'h':
		c.Op = OpHelp
		return *c, nil
	case o.o.short == 'v':
		c.Op = OpVersion
		return *c, nil
	case o.o.long == "sysctl":
		return p.sysctlCommand(o)
	default:
		return *c, tryHelp()
	}
	c.Op = cmdOps[p.cmd]
	for {
		o, ok, err := p.po.nextOpt()
		if err != nil {
			return *c, err
		}
		if !ok {
			break
		}
		if err := p.option(o); err != nil {
			return *c, err
		}
	}
	args := p.po.leftover
	if p.cmd == cmdTimeout {
		if len(args) < 3 {
			return *c, fail("--set option requires 3 timeout values")
		}
		for i := range 3 {
			n, err := parseTimeout(args[i], 0)
			if err != nil {
				return *c, err
			}
			c.Timeouts[i] = n
		}
		args = args[3:]
	}
	if len(args) > 0 {
		return *c, fail("unexpected argument %s", args[0])
	}
	if p.flags != "" {
		f, err := parseSchedFlags(schedName(c.Scheduler), p.flags)
		if err != nil {
			return *c, err
		}
		c.SchedFlags = f
	}
	if err := p.check(); err != nil {
		return *c, err
	}
	return *c, p.tunvsRefuses()
}

// listFormats are the listing options: each sets a format bit and is its
// ipvsadm option.
var listFormats = map[string]struct {
	f   Format
	opt int
}{
	"connection": {FmtConn, optConnection}, "numeric": {FmtNumeric, optNumeric},
	"timeout": {FmtTimeout, optTimeout}, "daemon": {FmtDaemon, optDaemon},
	"stats": {FmtStats, optStats}, "rate": {FmtRate, optRate},
	"thresholds": {FmtThresholds, optThresholds}, "persistent-conn": {FmtPersistentConn, optPersistentConn},
	"nosort": {FmtNoSort, optNoSort}, "exact": {FmtExact, optExact}, "tun-info": {FmtTunInfo, optTunInfo},
}

// option is one iteration of parse_options's loop: a listing flag, or an
// option of one of the groups below.
func (p *ipvsadmParser) option(o opt) error {
	if lf, ok := listFormats[o.o.long]; ok {
		p.c.Format |= lf.f
		return p.set(lf.opt)
	}
	for _, f := range []func(opt) (bool, error){p.serviceOption, p.serverOption, p.syncOption, p.tunnelOption, p.otherOption} {
		if handled, err := f(o); handled {
			return err
		}
	}
	// A command after the first, -h, -v: popt knows them, ipvsadm's
	// loop does not.
	return fail("invalid option `%s'", p.po.badOption())
}

// serviceOption parses an option about the virtual service (its address,
// scheduler, persistence, netmask) and reports whether o was one.
func (p *ipvsadmParser) serviceOption(o opt) (bool, error) {
	c := &p.c
	name := o.o.long
	switch name {
	case "tcp-service", "udp-service", "sctp-service":
		if err := p.set(optService); err != nil {
			return true, err
		}
		c.Proto = nat.ProtoTCP
		if name == "udp-service" {
			c.Proto = nat.ProtoUDP
		}
		p.sctp = name == "sctp-service"
		a, port, hasPort, ok := parseService(o.arg, c.Proto)
		if !ok {
			return true, fail("illegal virtual server address[:port] specified")
		}
		c.Addr, c.HasService, p.svcV6 = a, true, a.Is6()
		if hasPort {
			c.Port = port
		}
		if a.Is6() {
			p.mask6 = 128
		}
	case "fwmark-service":
		if err := p.set(optService); err != nil {
			return true, err
		}
		n, err := strconv.ParseInt(o.arg, 10, 64)
		if err != nil || n <= 0 || n > math.MaxUint32 {
			return true, fail("invalid fwmark value `%s' specified", o.arg)
		}
		p.fwmark, p.svcV6 = true, false
		c.Proto = nat.ProtoTCP
	case "scheduler":
		if err := p.set(optScheduler); err != nil {
			return true, err
		}
		c.Scheduler = truncate(o.arg, 15) // IP_VS_SCHEDNAME_MAXLEN - 1
	case "persistent":
		if err := p.set(optPersistent); err != nil {
			return true, err
		}
		c.Persistent, c.PersistTimeout = true, defaultPersistTimeout
		if o.hasArg {
			n, err := parseTimeout(o.arg, 1)
			if err != nil {
				return true, err
			}
			c.PersistTimeout = n
		}
	case "netmask":
		if err := p.set(optNetmask); err != nil {
			return true, err
		}
		if !p.svcV6 {
			m, ok := inetAton(o.arg)
			if !ok {
				if m, ok = lookupHost(o.arg); !ok || !m.Is4() {
					return true, fail("illegal virtual server persistent mask specified")
				}
			}
			p.mask = m
		} else {
			p.mask6 = atoi(o.arg)
			if p.mask6 < 1 || p.mask6 > 128 {
				return true, fail("illegal ipv6 netmask specified")
			}
		}
	default:
		return false, nil
	}
	return true, nil
}

// serverOption parses an option about a real server (its address,
// forwarding method, weight, thresholds) and reports whether o was one.
func (p *ipvsadmParser) serverOption(o opt) (bool, error) {
	c := &p.c
	name := o.o.long
	switch name {
	case "real-server":
		if err := p.set(optServer); err != nil {
			return true, err
		}
		a, port, hasPort, ok := parseService(o.arg, c.Proto)
		if !ok {
			return true, fail("illegal real server address[:port] specified")
		}
		c.DestAddr, c.HasDest, p.destV6 = a, true, a.Is6()
		c.DestPort = c.Port
		if hasPort {
			c.DestPort = port
		}
	case "masquerading", "gatewaying", "ipip", "fullnat":
		if err := p.set(optForward); err != nil {
			return true, err
		}
		p.fwd = map[string]int{"masquerading": fwdMasq, "gatewaying": fwdRoute, "ipip": fwdTunnel, "fullnat": fwdFullNAT}[name]
		c.FullNAT = p.fwd == fwdFullNAT
	case "weight":
		if err := p.set(optWeight); err != nil {
			return true, err
		}
		n, ok := stringToNumber(o.arg, 0, nat.MaxWeight)
		if !ok {
			return true, fail("illegal weight specified")
		}
		c.Weight, c.HasWeight = n, true
	case "u-threshold", "l-threshold":
		bit, what := optUThreshold, "u_threshold"
		if name == "l-threshold" {
			bit, what = optLThreshold, "l_threshold"
		}
		if err := p.set(bit); err != nil {
			return true, err
		}
		n, ok := stringToNumber(o.arg, 0, math.MaxInt32)
		if !ok {
			return true, fail("illegal %s specified", what)
		}
		if bit == optUThreshold {
			c.UThreshold, c.HasUThreshold = n, true
		} else {
			c.LThreshold, c.HasLThreshold = n, true
		}
	default:
		return false, nil
	}
	return true, nil
}

// syncOption parses an option of the connection synchronisation daemon
// and reports whether o was one.
func (p *ipvsadmParser) syncOption(o opt) (bool, error) {
	c := &p.c
	name := o.o.long
	switch name {
	case "mcast-interface":
		c.Daemon.Config.Interface = truncate(o.arg, 15) // IP_VS_IFNAME_MAXLEN - 1
		return true, p.set(optMcast)
	case "syncid":
		if err := p.set(optSyncID); err != nil {
			return true, err
		}
		n, ok := stringToNumber(o.arg, 0, 255)
		if !ok {
			return true, fail("illegal syncid specified")
		}
		c.Daemon.Config.SyncID = uint8(n)
	case "mcast-group":
		if err := p.set(optMcastGroup); err != nil {
			return true, err
		}
		// inet_pton of the family a ':' picks, then IN6_IS_ADDR_MULTICAST
		// or IN_MULTICAST.
		a, err := netip.ParseAddr(o.arg)
		if strings.Contains(o.arg, ":") {
			if err != nil || !a.Is6() || a.Zone() != "" || !a.IsMulticast() {
				return true, fail("invalid IPv6 mcast-group `%s'", o.arg)
			}
		} else if err != nil || !a.Is4() || !a.IsMulticast() {
			return true, fail("invalid IPv4 mcast-group `%s'", o.arg)
		}
		c.Daemon.Config.Group = a
	case "mcast-port", "mcast-ttl", "sync-maxlen", "tun-port":
		lim := map[string]struct {
			bit, max int
			msg      string
		}{
			"mcast-port":  {optMcastPort, 65535, "illegal mcast-port specified"},
			"mcast-ttl":   {optMcastTTL, 255, "illegal mcast-ttl specified"},
			"sync-maxlen": {optSyncMaxlen, rules.MaxSyncMaxLen, "illegal sync-maxlen specified"},
			"tun-port":    {optTunPort, 65535, "illegal tunnel port specified"},
		}[name]
		if err := p.set(lim.bit); err != nil {
			return true, err
		}
		n, ok := stringToNumber(o.arg, 1, lim.max)
		if !ok {
			return true, fail("%s", lim.msg)
		}
		switch name {
		case "mcast-port":
			c.Daemon.Config.Port = uint16(n)
		case "mcast-ttl":
			c.Daemon.Config.TTL = uint8(n)
		case "sync-maxlen":
			c.Daemon.Config.MaxLen = n
		case "tun-port":
			p.c.Tun.Port = uint16(n)
			p.tunnel = true
		}
	default:
		return false, nil
	}
	return true, nil
}

// tunnelOption parses an option of a real server's IP-IP tunnel and
// reports whether o was one.
func (p *ipvsadmParser) tunnelOption(o opt) (bool, error) {
	name := o.o.long
	switch name {
	case "tun-type":
		if err := p.set(optTunType); err != nil {
			return true, err
		}
		p.tunType = -1
		for i, n := range tunNames {
			if n == o.arg {
				p.tunType = i
			}
		}
		if p.tunType < 0 {
			return true, fail("illegal tunnel type specified")
		}
		p.c.Tun.Type = rules.TunType(p.tunType)
		p.tunnel = true
	case "tun-nocsum", "tun-csum", "tun-remcsum":
		p.tunnel = true
		// ipvsadm ORs IP_VS_TUNNEL_ENCAP_FLAG_* into tun_flags
		// (nocsum is 0); tunnel_opt_check allows one of them.
		p.c.Tun.Flags |= map[string]rules.TunFlags{"tun-csum": rules.TunCsum, "tun-remcsum": rules.TunRemCsum}[name]
		return true, p.set(map[string]int{"tun-nocsum": optTunNoCsum, "tun-csum": optTunCsum, "tun-remcsum": optTunRemCsum}[name])
	default:
		return false, nil
	}
	return true, nil
}

// otherOption parses the other options (service flags, -6, the listing's
// --sysctl) and reports whether o was one.
func (p *ipvsadmParser) otherOption(o opt) (bool, error) {
	c := &p.c
	name := o.o.long
	switch name {
	case "sort":
		// The default; kept for old scripts.
	case "laddr":
		if err := p.set(optLocalAddr); err != nil {
			return true, err
		}
		// DPVS parses it as a service address (a port is ignored).
		a, _, _, ok := parseService(o.arg, nat.ProtoTCP)
		if !ok {
			return true, fail("illegal local address")
		}
		c.LocalAddr = a
	case "ipv6":
		if !p.fwmark {
			// fail(2, "-6 used before -f\n"): fail adds another.
			return true, fail("-6 used before -f\n")
		}
		p.svcV6 = true
	case "ops":
		c.OnePacket = true
		return true, p.set(optOnePacket)
	case "proxy-protocol":
		// DPVS's TAG_PROXY_PROTOCOL has no OPT_ bit, so its table
		// checks nothing; tunvs takes it where it means something and
		// refuses a word DPVS would read as "disable".
		switch p.cmd {
		case cmdAdd, cmdEdit, cmdAddDest, cmdEditDest:
		default:
			return true, fail("Illegal 'proxy-protocol' option with the '%s' command", cmdNames[p.cmd])
		}
		pp, err := rules.ParseProxyProtocol(o.arg)
		if err != nil {
			return true, fail("illegal proxy protocol %q (disable, v1, v2, v1-insecure or v2-insecure)", o.arg)
		}
		c.ProxyProtocol = pp
	case "synproxy":
		if err := p.set(optSynProxy); err != nil {
			return true, err
		}
		// DPVS compares the argument's first len("enable") or
		// len("disable") bytes.
		switch {
		case strings.HasPrefix(o.arg, "enable"):
			c.SynProxy = true
		case strings.HasPrefix(o.arg, "disable"):
			c.SynProxy = false
		default:
			return true, fail("synproxy switch must be enable or disable\n")
		}
	case "pe":
		p.pe = true
		return true, p.set(optPE)
	case "sched-flags":
		if err := p.set(optSchedFlags); err != nil {
			return true, err
		}
		p.flags = truncate(o.arg, 127) // sched_flags_arg's size - 1
	case "sysctl":
		// tunvs's -L --sysctl; outside -L it is a command of its own.
		if p.cmd != cmdList {
			return true, fail("invalid option `%s'", p.po.badOption())
		}
		if o.hasArg {
			return true, fail("-L --sysctl lists the sysctls; set one with --sysctl NAME=VALUE")
		}
		c.Format |= FmtSysctl
	default:
		return false, nil
	}
	return true, nil
}

// legal is generic_opt_check (and tunnel_opt_check, its copy for tunnel
// types): tbl's j-th character says whether option optAt(j) is
// compulsory ('+'), illegal ('x'), exclusive ('1') or optional for the
// command (or tunnel type) name.
func (p *ipvsadmParser) legal(tbl string, optAt func(int) int, name, kind string) error {
	last, count := 0, 0
	for j := range len(tbl) {
		k := optAt(j)
		given := p.opts&(1<<k) != 0
		switch {
		case !given && tbl[j] == '+':
			return fail("You need to supply the '%s' option for the '%s' %s", optNames[k], name, kind)
		case given && tbl[j] == 'x':
			return fail("Illegal '%s' option with the '%s' %s", optNames[k], name, kind)
		case given && tbl[j] == '1':
			count++
			if count == 1 {
				last = k
				continue
			}
			return fail("The option '%s' conflicts with the '%s' option in the '%s' %s", optNames[k], optNames[last], name, kind)
		}
	}
	return nil
}

// check is process_options's checks after parsing: generic_opt_check,
// then the command's own.
func (p *ipvsadmParser) check() error {
	c := &p.c
	if err := p.legal(commandsVOptions[p.cmd], func(j int) int { return j }, cmdNames[p.cmd], "command"); err != nil {
		return err
	}
	has := func(bits ...int) bool {
		for _, b := range bits {
			if p.opts&(1<<b) != 0 {
				return true
			}
		}
		return false
	}
	switch p.cmd {
	case cmdAdd, cmdEdit:
		if !p.fwmark && c.Port == 0 && !c.Persistent {
			return fail("Zero port specified for non-persistent service")
		}
		if c.OnePacket && !p.fwmark && c.Proto != nat.ProtoUDP {
			return fail("One-Packet Scheduling is only for UDP virtual services")
		}
		if c.ProxyProtocol.Version() != 0 && c.Proto != nat.ProtoTCP {
			return fail("the PROXY protocol is for TCP services")
		}
		if c.SynProxy && c.Proto != nat.ProtoTCP {
			// Not ipvsadm's (it has no -j): said here, as the PROXY
			// protocol's is, rather than as the table's EINVAL.
			return fail("the SYN proxy (-j) is for TCP services")
		}
	case cmdAddDest, cmdEditDest:
		if c.ProxyProtocol.Version() != 0 && p.fwd != fwdFullNAT {
			return fail("the PROXY protocol needs --fullnat")
		}
		// ipvsadm's default method is -g, whose real server port is
		// the service's; tunvs takes no method as -m (see tunvsRefuses).
		if !p.fwmark && (p.fwd == fwdRoute || p.fwd == fwdTunnel) {
			c.DestPort = c.Port
		}
		if p.destV6 != p.svcV6 && p.fwd != fwdTunnel {
			return fail("Different address family is allowed only for tunneling servers")
		}
		if p.tunnel && p.fwd != fwdTunnel {
			return fail("Tunnel options conflict with forward method")
		}
		if err := p.legal(tunnelTypesVOptions[p.tunType], func(j int) int { return tunOpts[j] }, tunNames[p.tunType], "tunnel type"); err != nil {
			return err
		}
	case cmdStartDaemon:
		// DEF_MCAST_IFN.
		if p.c.Daemon.Config.Interface == "" {
			p.c.Daemon.Config.Interface = "eth0"
		}
	case cmdList:
		if (has(optConnection, optTimeout, optDaemon) && has(optStats, optRate, optThresholds)) ||
			(has(optTimeout, optDaemon) && has(optPersistentConn)) {
			return fail("options conflicts in the list command")
		}
		if c.Format&FmtSysctl != 0 && p.opts&^(1<<optNumeric) != 0 {
			return fail("options conflicts in the list command")
		}
	}
	return nil
}

// sysctlCommand is tunvs's --sysctl as the command (not ipvsadm's):
// `--sysctl NAME=VALUE` sets a /proc/sys/net/ipv4/vs knob, `--sysctl`
// alone lists them. Nothing may follow.
func (p *ipvsadmParser) sysctlCommand(o opt) (Command, error) {
	c := &p.c
	c.Op, c.Format = OpList, FmtSysctl
	if o.hasArg {
		name, v, err := ParseSysctl(o.arg)
		if err != nil {
			return *c, err
		}
		c.Op, c.Format, c.Sysctl, c.SysctlValue = OpSetSysctl, 0, name, v
	}
	if _, ok, err := p.po.nextOpt(); err != nil {
		return *c, err
	} else if ok {
		return *c, fail("invalid option `%s'", p.po.badOption())
	}
	if len(p.po.leftover) > 0 {
		return *c, fail("unexpected argument %s", p.po.leftover[0])
	}
	return *c, nil
}

// sysctlPrefix is the knobs' name in sysctl(8)'s spelling.
const sysctlPrefix = "net.ipv4.vs."

// ParseSysctl reads NAME=VALUE for --sysctl: a knob of rules.SysctlTable
// (also as net.ipv4.vs.NAME) and a value in its range.
func ParseSysctl(arg string) (string, int, error) {
	name, val, ok := strings.Cut(arg, "=")
	name = strings.TrimPrefix(strings.TrimSpace(name), sysctlPrefix)
	if !ok {
		return "", 0, fail("--sysctl %s: want NAME=VALUE", arg)
	}
	if _, known := rules.LookupSysctl(name); !known {
		names := make([]string, len(rules.SysctlTable))
		for i, s := range rules.SysctlTable {
			names[i] = s.Name
		}
		return "", 0, fail("--sysctl %s: no such sysctl (tunvs has %s)", arg, strings.Join(names, ", "))
	}
	v, ok := stringToNumber(strings.TrimSpace(val), math.MinInt32, math.MaxInt32)
	if !ok {
		return "", 0, fail("--sysctl %s: %q is not a number", arg, val)
	}
	if err := rules.ValidSysctl(name, v); err != nil {
		return "", 0, fail("--sysctl %s: %v", arg, err)
	}
	return name, v, nil
}

// tunvsRefuses refuses, after every check of ipvsadm's has passed, what
// ipvsadm would take but tunvs does not do; and fills in what is left.
func (p *ipvsadmParser) tunvsRefuses() error {
	c := &p.c
	switch {
	case p.fwmark:
		return fail("-f (firewall-mark services) is not supported: tunvs does not mark packets; use -t or -u")
	case p.sctp:
		return fail("--sctp-service is not supported: tunvs balances TCP and UDP")
	case p.pe:
		return fail("--pe (persistence engines, e.g. sip) is not supported by tunvs")
	case p.fwd == fwdTunnel && p.c.HasDest && p.destV6 != p.svcV6:
		// IPVS tunnels between families (ip_vs_bind_xmit by the
		// dest's af); tunvs's encapsulation keeps the service's.
		return fail("-i between address families (IPv4 in IPv6, IPv6 in IPv4) is not supported: tunvs tunnels within one family")
	}
	switch p.fwd {
	case fwdRoute:
		c.Method = rules.Route
	case fwdTunnel:
		c.Method = rules.Tunnel
	}
	if p.opts&(1<<optNetmask) != 0 {
		if !p.svcV6 {
			b := p.mask.As4()
			m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			bits := 0
			for bits < 32 && m&(1<<(31-bits)) != 0 {
				bits++
			}
			if bits < 32 && m<<bits != 0 {
				return fail("illegal virtual server persistent mask specified: %s is not contiguous (tunvs keeps masks as prefixes)", p.mask)
			}
			c.PersistMaskBits = bits
		} else {
			c.PersistMaskBits = p.mask6
		}
	}
	if c.Op == OpAddDest && !c.HasWeight {
		c.Weight = 1
	}
	return nil
}

// truncate is what ipvsadm's strncpy into a fixed buffer keeps of s.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// maxTimeout is ipvsadm's MAX_TIMEOUT (31 days).
const maxTimeout = 86400 * 31

// defaultPersistTimeout is IPVS_SVC_PERSISTENT_TIMEOUT (6*60 in
// libipvs's ip_vs.h), -p without a value.
const defaultPersistTimeout = 360

// parseTimeout is ipvsadm's parse_timeout (with a value).
func parseTimeout(s string, min int) (int, error) {
	n, ok := stringToNumber(s, min, maxTimeout)
	if !ok {
		return 0, fail("invalid timeout value `%s' specified", s)
	}
	return n, nil
}

// stringToNumber is ipvsadm's string_to_number: strtol in base 10 (blanks
// and a sign allowed before the digits), the whole string used, within
// [min, max].
func stringToNumber(s string, min, max int) (int, bool) {
	n, rest, ok := strtol(s)
	if !ok || rest != "" || n < int64(min) || n > int64(max) {
		return 0, false
	}
	return int(n), true
}

// strtol is C's strtol in base 10: it skips leading white space, takes a
// sign and digits, and returns the rest; ok false when there are no
// digits or the value overflows a long.
func strtol(s string) (int64, string, bool) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var n uint64
	over := false
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		n = n*10 + uint64(s[i]-'0')
		if n > math.MaxInt64 {
			over = true
		}
		i++
	}
	if i == start {
		return 0, s, false
	}
	v := int64(n)
	if neg {
		v = -v
	}
	return v, s[i:], !over
}

func isSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }

// atoi is C's atoi: strtol, the rest ignored, 0 when there is no number.
func atoi(s string) int {
	n, _, ok := strtol(s)
	if !ok || n > math.MaxInt32 || n < math.MinInt32 {
		return 0
	}
	return int(n)
}

// inetAton is glibc's inet_aton: one to four parts, each decimal, octal
// (leading 0) or hexadecimal (0x), the last filling the remaining bytes;
// the address may be followed by white space and anything after it.
func inetAton(s string) (netip.Addr, bool) {
	var parts []uint64
	i := 0
	for {
		if i >= len(s) || !(s[i] >= '0' && s[i] <= '9') {
			return netip.Addr{}, false
		}
		base := uint64(10)
		if s[i] == '0' {
			base = 8
			i++
			if i < len(s) && (s[i] == 'x' || s[i] == 'X') {
				base = 16
				i++
			}
		}
		var v uint64
		for i < len(s) {
			d, ok := digitVal(s[i], base)
			if !ok {
				break
			}
			v = v*base + d
			if v > math.MaxUint32 {
				return netip.Addr{}, false
			}
			i++
		}
		parts = append(parts, v)
		if i < len(s) && s[i] == '.' {
			if len(parts) == 4 {
				return netip.Addr{}, false
			}
			i++
			continue
		}
		break
	}
	if i < len(s) && !isSpace(s[i]) {
		return netip.Addr{}, false
	}
	var v uint32
	switch n := len(parts); n {
	case 1:
		v = uint32(parts[0])
	default:
		rest := parts[n-1]
		if rest >= 1<<(8*(5-n)) {
			return netip.Addr{}, false
		}
		for _, x := range parts[:n-1] {
			if x > 0xff {
				return netip.Addr{}, false
			}
		}
		for k, x := range parts[:n-1] {
			v |= uint32(x) << (24 - 8*k)
		}
		v |= uint32(rest)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func digitVal(c byte, base uint64) (uint64, bool) {
	var d uint64
	switch {
	case c >= '0' && c <= '9':
		d = uint64(c - '0')
	case base == 16 && c >= 'a' && c <= 'f':
		d = uint64(c-'a') + 10
	case base == 16 && c >= 'A' && c <= 'F':
		d = uint64(c-'A') + 10
	default:
		return 0, false
	}
	return d, d < base
}

// parseService is ipvsadm's parse_service: "[v6]:port", a bare IPv6
// address (no port), or an IPv4 address (inet_aton) or host name with an
// optional ":port" (a number, or a service name for proto). Without -n
// ipvsadm also asks DNS for names; tunvs reads /etc/hosts and
// /etc/services only.
func parseService(buf string, proto uint8) (a netip.Addr, port uint16, hasPort bool, ok bool) {
	allDigits := true
	for i := 0; i < len(buf); i++ {
		if buf[i] < '0' || buf[i] > '9' {
			allDigits = false
		}
	}
	if allDigits {
		return a, 0, false, false
	}
	portStr, havePort := "", false
	if buf[0] == '[' {
		end := strings.IndexByte(buf, ']')
		if end < 0 {
			return a, 0, false, false
		}
		if end+1 >= len(buf) || buf[end+1] != ':' {
			return a, 0, false, false
		}
		portStr, havePort = buf[end+2:], true
		buf = buf[1:end]
	}
	if v6, err := netip.ParseAddr(buf); err == nil && v6.Is6() && v6.Zone() == "" {
		a = v6
	} else {
		// The bracket's port is forgotten here, as in ipvsadm: the last
		// ':' of what is left is the port's.
		havePort = false
		if i := strings.LastIndexByte(buf, ':'); i >= 0 {
			portStr, havePort = buf[i+1:], true
			buf = buf[:i]
		}
		var ok bool
		if a, ok = inetAton(buf); !ok {
			if a, ok = lookupHost(buf); !ok || !a.Is4() {
				return a, 0, false, false
			}
		}
	}
	if !havePort {
		return a, 0, false, true
	}
	if n, ok := stringToNumber(portStr, 0, 65535); ok {
		return a, uint16(n), true, true
	}
	if n, ok := lookupService(portStr, proto); ok {
		return a, n, true, true
	}
	return a, 0, false, false
}

// parseSchedFlags is ipvsadm's parse_sched_flags: comma-separated flags
// (empty ones skipped, as strtok does), each spelled out in full.
func parseSchedFlags(schedName, arg string) (sched.Flags, error) {
	var f sched.Flags
	for _, fl := range strings.Split(arg, ",") {
		if fl == "" {
			continue
		}
		need := ""
		switch fl {
		case "flag-1":
			f |= sched.FlagSched1
		case "flag-2":
			f |= sched.FlagSched2
		case "flag-3":
			f |= sched.FlagSched3
		case "sh-fallback":
			f, need = f|sched.FlagSched1, "sh"
		case "sh-port":
			f, need = f|sched.FlagSched2, "sh"
		case "mh-fallback":
			f, need = f|sched.FlagSched1, "mh"
		case "mh-port":
			f, need = f|sched.FlagSched2, "mh"
		default:
			return 0, fail("invalid scheduler flag `%s'", fl)
		}
		if need != "" && need != schedName {
			return 0, fail("incompatible scheduler flag `%s'", fl)
		}
	}
	return f, nil
}
