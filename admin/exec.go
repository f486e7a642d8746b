package admin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

// LineError names the line of a rules file that was refused.
type LineError struct {
	Line int
	Text string
	Err  error
}

func (e *LineError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: %v: %q", e.Line, e.Err, e.Text)
}

func (e *LineError) Unwrap() error { return e.Err }

// Error is a command the table refused, with ipvsadm's message (libipvs's
// ipvs_strerror) and exit status. It wraps the nat error, if any.
type Error struct {
	Msg  string
	Exit int
	Err  error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// ipvsadm ends with the kernel's -1 (status 255) when a command fails, and
// with 1 when a listing finds no service.
const (
	exitFailed   = 255
	exitNoListed = 1
)

func ipvsErr(msg string, err error) error { return &Error{Msg: msg, Exit: exitFailed, Err: err} }

// ExitCode is the status tunvsadm ends with for err: 2 for a bad command
// line, ipvsadm's status for a refused command.
func ExitCode(err error) int {
	var e *Error
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		var u *usageError
		if errors.As(err, &u) && u.exit != 0 {
			return u.exit
		}
		return 2
	case errors.As(err, &e):
		return e.Exit
	}
	return 1
}

// ParseRules reads an ipvsadm-save file (the output of `ipvsadm -S`, one
// command per line; blank lines and # comments are skipped). Only commands
// that change the table are allowed. The first bad line is returned as a
// *LineError.
func ParseRules(r io.Reader) ([]Command, error) {
	cmds, _, err := ParseRulesLines(r)
	return cmds, err
}

// ParseRulesLines is ParseRules that also returns each command's line
// number, for Apply's errors.
func ParseRulesLines(r io.Reader) ([]Command, []int, error) {
	var cmds []Command
	var lines []int
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		c, err := Parse(strings.Fields(text))
		if err != nil {
			return nil, nil, &LineError{Line: n, Text: text, Err: err}
		}
		switch c.Op {
		case OpAddService, OpEditService, OpDelService, OpAddDest, OpEditDest, OpDelDest, OpClear, OpSetTimeout, OpZero, OpSetSysctl,
			OpAddLocalAddr, OpDelLocalAddr, OpStartDaemon:
			// A rules file may start the sync daemons as
			// ipvsadm --start-daemon lines do (rules.Rules.Sync);
			// --stop-daemon is what a line taken out does.
			if c.Op == OpStartDaemon && c.Daemon.Role == 0 {
				return nil, nil, &LineError{Line: n, Text: text, Err: usagef("--start-daemon needs master or backup")}
			}
		default:
			return nil, nil, &LineError{Line: n, Text: text, Err: usagef("not a command a rules file may hold")}
		}
		cmds = append(cmds, c)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read rules: %w", err)
	}
	return cmds, lines, nil
}

const msgInvalid = "Invalid operation.  Possibly wrong module version, address not unicast, ..."

func schedName(s string) string {
	if s == "" {
		return nat.DefaultScheduler
	}
	return s
}

// Apply validates cmds as a whole and then applies them; a refused batch
// changes nothing. Listing commands write their output to w.
func Apply(t *nat.Table, cmds []Command, lines []int, w io.Writer) error {
	return ApplyWith(Env{Table: t}, cmds, lines, w)
}

// Env is what commands run against: the table, and for --rate the
// daemon's estimator (nil: rates are 0), and the clock for -Lc.
type Env struct {
	Table *nat.Table
	Est   *Estimator
	Now   func() time.Time
	// OnChange, if set, is told of every command applied that changes
	// the table (for the daemon's event log).
	OnChange func(Command)
	// Mu, if set, is the lock the control socket holds while it runs a
	// request, so that a request and a reload do not interleave. The
	// table's own writer lock (nat.Table.Update) is what keeps every
	// change whole; Mu is taken before it.
	Mu *sync.Mutex
	// Sync, if set, are the connection sync daemons --start-daemon and
	// --stop-daemon run (nil: they are refused).
	Sync *ipvssync.Daemons
}

// ApplyWith is Apply in env. The commands that change the table are one
// rules.Diff, which the table checks as a whole against what it has and
// applies under its writer lock (nat.Table.Apply): nothing, the health
// checks included, can change the table between the check and the
// change. Listing commands run where they stand.
func ApplyWith(env Env, cmds []Command, lines []int, w io.Writer) error {
	for start := 0; start < len(cmds); {
		if !cmds[start].changes() {
			if err := query(env, cmds[start], w); err != nil {
				return err
			}
			start++
			continue
		}
		end := start
		var d rules.Diff
		for ; end < len(cmds) && cmds[end].changes(); end++ {
			ch := cmds[end].Change()
			if lines != nil && end < len(lines) {
				ch.Line = lines[end]
			}
			d = append(d, ch)
		}
		if err := env.Table.Apply(d); err != nil {
			var ce *rules.ChangeError
			if !errors.As(err, &ce) {
				return err
			}
			i := start + ce.Index
			err := natErr(cmds[i].Op, ce.Err)
			switch {
			case lines != nil && i < len(lines):
				return &LineError{Line: lines[i], Err: err}
			case len(cmds) > 1:
				return fmt.Errorf("command %d: %w", i+1, err)
			}
			return err
		}
		for _, c := range cmds[start:end] {
			if c.Op == OpZero {
				zeroRates(env, c)
			}
			if env.OnChange != nil {
				env.OnChange(c)
			}
		}
		start = end
	}
	return nil
}

func (c Command) changes() bool {
	switch c.Op {
	case OpList, OpSave, OpHelp, OpVersion, OpNone, OpRestore, OpStartDaemon, OpStopDaemon, OpGetLocalAddr:
		// The daemons are not in the table: their commands run on
		// their own (daemonCommand).
		return false
	}
	return true
}

// Change is the change to the rules c makes; c must change them (not a
// listing). ipvsadm -e sends a whole destination: what is not given is
// its default (weight 1, no thresholds), as ipvsadm does.
func (c Command) Change() rules.Change {
	k := rules.Service{ServiceKey: nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}}
	srv := rules.Server{Addr: netip.AddrPortFrom(c.DestAddr, c.DestPort), Weight: c.Weight, Method: c.Method, Tun: c.Tun,
		UThreshold: c.UThreshold, LThreshold: c.LThreshold, ProxyProtocol: c.ProxyProtocol}
	if c.FullNAT {
		srv.Method = rules.FullNAT
	}
	switch c.Op {
	case OpAddService, OpEditService:
		kind := rules.AddService
		if c.Op == OpEditService {
			kind = rules.EditService
		}
		s := k
		s.Scheduler, s.SchedFlags, s.Persistent, s.OnePacket = c.Scheduler, c.SchedFlags, c.Persistent, c.OnePacket
		s.ProxyProtocol = c.ProxyProtocol
		s.SynProxy = c.SynProxy
		if c.Persistent {
			s.PersistTimeout = time.Duration(c.PersistTimeout) * time.Second
			s.PersistMaskBits = c.PersistMaskBits
		}
		return rules.Change{Kind: kind, Service: s}
	case OpDelService:
		return rules.Change{Kind: rules.DelService, Service: k}
	case OpClear:
		return rules.Change{Kind: rules.Clear}
	case OpAddDest:
		return rules.Change{Kind: rules.AddServer, Service: k, Server: srv}
	case OpEditDest:
		if !c.HasWeight {
			srv.Weight = 1
		}
		return rules.Change{Kind: rules.EditServer, Service: k, Server: srv}
	case OpDelDest:
		return rules.Change{Kind: rules.DelServer, Service: k, Server: srv}
	case OpZero:
		if !c.HasService {
			k = rules.Service{}
		}
		return rules.Change{Kind: rules.Zero, Service: k}
	case OpSetTimeout:
		to := rules.Timeouts{}
		for i, st := range []string{rules.TimeoutTCP, rules.TimeoutTCPFin, rules.TimeoutUDP} {
			if c.Timeouts[i] > 0 {
				to[st] = time.Duration(c.Timeouts[i]) * time.Second
			}
		}
		return rules.Change{Kind: rules.SetTimeouts, Timeouts: to}
	case OpSetSysctl:
		return rules.Change{Kind: rules.SetSysctl, Sysctl: c.Sysctl, Value: c.SysctlValue}
	case OpAddLocalAddr:
		return rules.Change{Kind: rules.AddLocalAddr, Service: k, LocalAddr: c.LocalAddr}
	case OpDelLocalAddr:
		return rules.Change{Kind: rules.DelLocalAddr, Service: k, LocalAddr: c.LocalAddr}
	}
	return rules.Change{}
}

// CommandOf is the ipvsadm command that makes ch (for Reload's result and
// the event log).
func CommandOf(ch rules.Change) Command {
	s := ch.Service
	c := Command{HasService: true, Proto: s.Proto, Addr: s.Addr, Port: s.Port}
	switch ch.Kind {
	case rules.AddService, rules.EditService, rules.DelService:
		c.Op = map[rules.ChangeKind]Op{rules.AddService: OpAddService, rules.EditService: OpEditService,
			rules.DelService: OpDelService}[ch.Kind]
		c.Scheduler, c.SchedFlags, c.Persistent, c.OnePacket = s.SchedulerName(), s.SchedFlags, s.Persistent, s.OnePacket
		c.ProxyProtocol = s.ProxyProtocol
		c.SynProxy = s.SynProxy
		if s.Persistent {
			c.PersistTimeout = persistSeconds(s.PersistTimeout)
			c.PersistMaskBits = s.PersistMaskBits
			if c.PersistMaskBits == s.Addr.BitLen() {
				c.PersistMaskBits = 0
			}
		}
	case rules.AddServer, rules.EditServer, rules.DelServer:
		c.Op = map[rules.ChangeKind]Op{rules.AddServer: OpAddDest, rules.EditServer: OpEditDest,
			rules.DelServer: OpDelDest}[ch.Kind]
		d := ch.Server
		c.HasDest, c.DestAddr, c.DestPort = true, d.Addr.Addr(), d.Addr.Port()
		c.Weight, c.HasWeight = d.Weight, true
		c.Method, c.Tun = d.Method, d.Tun
		c.UThreshold, c.LThreshold = d.UThreshold, d.LThreshold
		c.HasUThreshold, c.HasLThreshold = d.UThreshold != 0, d.LThreshold != 0
		c.FullNAT = d.Method == rules.FullNAT
		c.ProxyProtocol = d.ProxyProtocol
	case rules.AddLocalAddr, rules.DelLocalAddr:
		c.Op = map[rules.ChangeKind]Op{rules.AddLocalAddr: OpAddLocalAddr, rules.DelLocalAddr: OpDelLocalAddr}[ch.Kind]
		c.LocalAddr = ch.LocalAddr
	case rules.Clear:
		c = Command{Op: OpClear}
	case rules.Zero:
		c.Op, c.HasService = OpZero, s.Addr.IsValid()
	case rules.SetTimeouts:
		c = Command{Op: OpSetTimeout}
		for i, st := range []string{rules.TimeoutTCP, rules.TimeoutTCPFin, rules.TimeoutUDP} {
			c.Timeouts[i] = int(ch.Timeouts[st] / time.Second)
		}
	case rules.SetSysctl:
		c = Command{Op: OpSetSysctl, Sysctl: ch.Sysctl, SysctlValue: ch.Value}
	}
	return c
}

func natErr(op Op, err error) error {
	if err == nil {
		return nil
	}
	if op == OpSetSysctl {
		// Not ipvsadm's: the kernel's sysctl answers EINVAL, and the
		// knob's range says more.
		return ipvsErr("--sysctl: "+err.Error(), err)
	}
	svcMissing := "No such service"
	if op == OpAddDest || op == OpEditDest || op == OpDelDest {
		svcMissing = "Service not defined"
	}
	switch {
	case errors.Is(err, nat.ErrServiceExists):
		return ipvsErr("Service already exists", err)
	case errors.Is(err, nat.ErrNoService):
		return ipvsErr(svcMissing, err)
	case errors.Is(err, nat.ErrDestExists):
		return ipvsErr("Destination already exists", err)
	case errors.Is(err, nat.ErrNoDest):
		return ipvsErr("No such destination", err)
	case errors.Is(err, sched.ErrUnknown):
		return ipvsErr("Scheduler or persistence engine not found", err)
	case errors.Is(err, rules.ErrLocalAddrExists):
		// DPVS's ipvs_strerror for --add-laddr's EDPVS_EXIST.
		return ipvsErr("local address already exists", err)
	case errors.Is(err, rules.ErrNoLocalAddr):
		return ipvsErr("local address does not exist", err)
	case errors.Is(err, rules.ErrNoDirectRoute):
		// Not ipvsadm's (the kernel takes any -g server and finds out
		// packet by packet): the host's reason.
		var ce *rules.ChangeError
		if errors.As(err, &ce) {
			return ipvsErr(ce.Err.Error(), err)
		}
		return ipvsErr(err.Error(), err)
	case errors.Is(err, rules.ErrRange):
		// ip_vs_add_dest/ip_vs_edit_dest: -ERANGE.
		return ipvsErr("Numerical result out of range", err)
	}
	// An IPv4-mapped address, which the kernel would take as IPv6: say
	// what to write instead.
	var me *rules.MappedError
	if errors.As(err, &me) {
		return ipvsErr(me.Error(), err)
	}
	if errors.Is(err, nat.ErrInvalid) {
		return ipvsErr(msgInvalid, err)
	}
	return ipvsErr("Memory allocation problem", err)
}

// zeroRates zeroes the estimator's rates with -Z's counters.
func zeroRates(env Env, c Command) {
	if !c.HasService {
		env.Est.Zero()
		return
	}
	if s := env.Table.Service(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}); s != nil {
		env.Est.ZeroService(s)
	}
}

// query runs a command that does not change the table.
func query(env Env, c Command, w io.Writer) error {
	t := env.Table
	now := time.Now
	if env.Now != nil {
		now = env.Now
	}
	switch c.Op {
	case OpStartDaemon, OpStopDaemon:
		return daemonCommand(env, c)
	case OpSave:
		List(w, t, c.Format|FmtRule)
	case OpGetLocalAddr:
		if !c.HasService {
			ListLocalAddrs(w, t.Services(), true)
			return nil
		}
		s := t.Service(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port})
		if s == nil {
			return &Error{Msg: "No such service", Exit: exitFailed, Err: nat.ErrNoService}
		}
		ListLocalAddrs(w, []*nat.Service{s}, true)
	case OpList:
		switch {
		case c.Format&FmtSysctl != 0:
			ListSysctls(w, t)
		case c.Format&FmtTimeout != 0:
			ListTimeout(w, t)
		case c.Format&FmtDaemon != 0:
			// Nothing when no sync daemon runs, as ipvsadm.
			if env.Sync != nil {
				env.Sync.List(w)
			}
		case c.Format&FmtConn != 0:
			return ListConns(w, t, now(), c.Format)
		case c.HasService:
			s := t.Service(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port})
			if s == nil {
				return &Error{Msg: "No such service", Exit: exitNoListed, Err: nat.ErrNoService}
			}
			listService(w, s, c.Format, env.Est)
		default:
			list(w, t, c.Format, env.Est)
		}
	case OpHelp:
		io.WriteString(w, Usage)
	case OpVersion:
		io.WriteString(w, Version)
	case OpRestore:
		return usagef("-R reads rules from standard input; send them with the request")
	}
	return nil
}

// Execute runs one command line against t, as the daemon does for
// tunvsadm. For -R, rules holds what tunvsadm read from its standard input.
func Execute(t *nat.Table, args []string, rules string) (string, error) {
	return ExecuteWith(Env{Table: t}, args, rules)
}

// ExecuteWith is Execute in env.
func ExecuteWith(env Env, args []string, rules string) (string, error) {
	var out bytes.Buffer
	err := ExecuteTo(env, args, rules, &out)
	return out.String(), err
}

// ExecuteTo is ExecuteWith writing the output to w as it is made.
func ExecuteTo(env Env, args []string, rules string, w io.Writer) error {
	c, err := Parse(args)
	if err != nil {
		return err
	}
	if c.Op == OpRestore {
		cmds, lines, err := ParseRulesLines(strings.NewReader(rules))
		if err != nil {
			return err
		}
		return ApplyWith(env, cmds, lines, w)
	}
	return ApplyWith(env, []Command{c}, nil, w)
}

// Usage is tunvsadm's help text.
var Usage = `tunvsadm: ipvsadm v1.31's commands for the tunvs userspace director
Usage:
  tunvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o] [-j enable|disable] [--proxy-protocol P]
  tunvsadm -D virtual-service
  tunvsadm -C
  tunvsadm -R
  tunvsadm -S [-n]
  tunvsadm -a|e virtual-service -r server-address [-g|-i|-m|--fullnat] [-w weight] [-x upper-threshold] [-y lower-threshold] [--proxy-protocol P]
  tunvsadm -d virtual-service -r server-address
  tunvsadm -L|l [virtual-service] [options]
  tunvsadm -Z [virtual-service]
  tunvsadm --set tcp tcpfin udp
  tunvsadm --start-daemon {master|backup} [daemon-options]
  tunvsadm --stop-daemon {master|backup}
  tunvsadm --add-laddr|-P virtual-service -z local-address      (DPVS's) a full-NAT local address
  tunvsadm --del-laddr|-Q virtual-service -z local-address
  tunvsadm --get-laddr|-G [virtual-service]
  tunvsadm --sysctl [NAME=VALUE]       (tunvs's) set or list the net.ipv4.vs sysctls
  tunvsadm -h

virtual-service:
  --tcp-service|-t service-address   service-address is host[:port]
  --udp-service|-u service-address   service-address is host[:port]

Options:
  --scheduler    -s scheduler         one of ` + strings.Join(sched.Names(), "|") + `,
                                      the default scheduler is wlc.
  --persistent   -p [timeout]         persistent service (default 360 s)
  --netmask      -M netmask           persistent granularity mask
  --sched-flags  -b flags             scheduler flags (comma-separated: sh-fallback, sh-port, mh-fallback, mh-port, flag-1..3)
  --ops          -o                   one-packet scheduling (UDP)
  --synproxy     -j enable|disable    (DPVS's) SYN proxy: the director answers SYNs with SYN cookies (TCP)
  --real-server  -r server-address    server-address is host (and port)
  --fullnat                           full NAT (DPVS's): the server sees a local address, not the client
  --proxy-protocol P                  (DPVS's) PROXY protocol header for full-NAT servers, TCP:
                                      disable|v1|v2|v1-insecure|v2-insecure (on -a/-e: this server's)
  --gatewaying   -g                   gatewaying (direct routing), on TAP links
  --ipip         -i                   ipip encapsulation (tunneling), on any link
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is ipip.
  --tun-port      port                tunnel destination port
  --tun-nocsum                        tunnel encapsulation without checksum
  --tun-csum                          tunnel encapsulation with checksum
  --tun-remcsum                       tunnel encapsulation with remote checksum
  --masquerading -m                   masquerading (NAT), the default in tunvs
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --numeric      -n                   numeric output of addresses and ports
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --sysctl                            (tunvs's, with -L) the net.ipv4.vs sysctls

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync (a link of the director; default eth0)
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)

Not supported: -f (fwmark services), SCTP services, --pe.
Without -n, names come from /etc/hosts and /etc/services only (no DNS).
`
