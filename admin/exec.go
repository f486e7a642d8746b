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

	"github.com/tunvs/tunvs/nat"
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
		case OpAddService, OpEditService, OpDelService, OpAddDest, OpEditDest, OpDelDest, OpClear, OpSetTimeout, OpZero:
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

// svcID identifies a service in the dry run.
type svcID struct {
	proto uint8
	addr  netip.Addr
	port  uint16
}

// Validate checks that cmds, applied in order to t's current services,
// would all succeed. Nothing changes. Errors carry the index of the
// command (and, through lines, its line number when given).
func Validate(t *nat.Table, cmds []Command, lines []int) error {
	svcs := map[svcID]map[netip.AddrPort]bool{}
	for _, s := range t.Services() {
		ds := map[netip.AddrPort]bool{}
		for _, d := range s.Dests() {
			ds[d.AddrPort()] = true
		}
		svcs[svcID{s.Proto, s.Addr, s.Port}] = ds
	}
	fail := func(i int, err error) error {
		if lines != nil && i < len(lines) {
			return &LineError{Line: lines[i], Err: err}
		}
		if len(cmds) > 1 {
			return fmt.Errorf("command %d: %w", i+1, err)
		}
		return err
	}
	for i, c := range cmds {
		id := svcID{c.Proto, c.Addr, c.Port}
		ds, exists := svcs[id]
		switch c.Op {
		case OpAddService, OpEditService:
			if c.Op == OpAddService && exists {
				return fail(i, ipvsErr("Service already exists", nat.ErrServiceExists))
			}
			if c.Op == OpEditService && !exists {
				return fail(i, ipvsErr("No such service", nat.ErrNoService))
			}
			if _, err := sched.NewWithFlags(schedName(c.Scheduler), c.SchedFlags); err != nil {
				return fail(i, ipvsErr("Scheduler or persistence engine not found", err))
			}
			if c.Addr.Zone() != "" || !c.Addr.IsValid() {
				return fail(i, ipvsErr(msgInvalid, nat.ErrInvalid))
			}
			if c.Op == OpAddService {
				svcs[id] = map[netip.AddrPort]bool{}
			}
		case OpDelService:
			if !exists {
				return fail(i, ipvsErr("No such service", nat.ErrNoService))
			}
			delete(svcs, id)
		case OpClear:
			clear(svcs)
		case OpZero:
			if c.HasService && !exists {
				return fail(i, ipvsErr("No such service", nat.ErrNoService))
			}
		case OpAddDest, OpEditDest, OpDelDest:
			if !exists {
				return fail(i, ipvsErr("Service not defined", nat.ErrNoService))
			}
			if c.DestAddr.Is4() != c.Addr.Is4() {
				return fail(i, ipvsErr(msgInvalid, fmt.Errorf("%w: real server %v is not of the service's address family", nat.ErrInvalid, c.DestAddr)))
			}
			dk := netip.AddrPortFrom(c.DestAddr, c.DestPort)
			switch {
			case c.Op == OpAddDest && ds[dk]:
				return fail(i, ipvsErr("Destination already exists", nat.ErrDestExists))
			case c.Op != OpAddDest && !ds[dk]:
				return fail(i, ipvsErr("No such destination", nat.ErrNoDest))
			}
			if c.Op != OpDelDest && c.LThreshold > c.UThreshold {
				// ip_vs_add_dest/ip_vs_edit_dest: -ERANGE.
				return fail(i, ipvsErr("Numerical result out of range", nat.ErrInvalid))
			}
			if c.Op == OpDelDest {
				delete(ds, dk)
			} else {
				ds[dk] = true
			}
		}
	}
	return nil
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
	// request; whoever else changes the table takes it too.
	Mu *sync.Mutex
}

// ApplyWith is Apply in env.
func ApplyWith(env Env, cmds []Command, lines []int, w io.Writer) error {
	if err := Validate(env.Table, cmds, lines); err != nil {
		return err
	}
	for i, c := range cmds {
		if err := apply(env, c, w); err != nil {
			// Validation passed, so this is a change made meanwhile by
			// another client; say which command it hit.
			if len(cmds) > 1 {
				return fmt.Errorf("command %d: %w", i+1, err)
			}
			return err
		}
		if env.OnChange != nil && c.changes() {
			env.OnChange(c)
		}
	}
	return nil
}

func (c Command) changes() bool {
	switch c.Op {
	case OpList, OpSave, OpHelp, OpNone:
		return false
	}
	return true
}

// ServiceConfig is the nat configuration -A/-E asks for.
func (c Command) ServiceConfig() nat.ServiceConfig {
	sc := nat.ServiceConfig{Proto: c.Proto, Addr: c.Addr, Port: c.Port, Scheduler: c.Scheduler,
		SchedFlags: c.SchedFlags, Persistent: c.Persistent, OnePacket: c.OnePacket}
	if c.Persistent {
		sc.PersistTimeout = time.Duration(c.PersistTimeout) * time.Second
		sc.PersistMaskBits = c.PersistMaskBits
	}
	return sc
}

// DestConfig is the nat configuration -a/-e asks for.
func (c Command) DestConfig() nat.DestConfig {
	return nat.DestConfig{Addr: c.DestAddr, Port: c.DestPort, Weight: c.Weight,
		UThreshold: c.UThreshold, LThreshold: c.LThreshold}
}

func natErr(op Op, err error) error {
	if err == nil {
		return nil
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
	case errors.Is(err, nat.ErrInvalid):
		return ipvsErr(msgInvalid, err)
	}
	return ipvsErr("Memory allocation problem", err)
}

func apply(env Env, c Command, w io.Writer) error {
	t := env.Table
	now := time.Now
	if env.Now != nil {
		now = env.Now
	}
	switch c.Op {
	case OpAddService:
		_, err := t.AddService(c.ServiceConfig())
		return natErr(c.Op, err)
	case OpEditService:
		return natErr(c.Op, t.EditService(c.ServiceConfig()))
	case OpDelService:
		return natErr(c.Op, t.DelService(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}))
	case OpClear:
		t.Clear()
	case OpAddDest:
		_, err := t.AddDest(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}, c.DestConfig())
		return natErr(c.Op, err)
	case OpEditDest:
		// ipvsadm -e sends a whole destination: what is not given is
		// its default (weight 1, no thresholds), as ipvsadm does.
		dc := c.DestConfig()
		if !c.HasWeight {
			dc.Weight = 1
		}
		return natErr(c.Op, t.EditDest(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}, dc))
	case OpDelDest:
		return natErr(c.Op, t.DelDest(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port}, netip.AddrPortFrom(c.DestAddr, c.DestPort)))
	case OpZero:
		if c.HasService {
			s := t.Service(nat.ServiceKey{Proto: c.Proto, Addr: c.Addr, Port: c.Port})
			if s == nil {
				return ipvsErr("No such service", nat.ErrNoService)
			}
			zeroStats(&s.Stats)
			for _, d := range s.Dests() {
				zeroStats(&d.Stats)
			}
			env.Est.ZeroService(s)
			return nil
		}
		t.Zero()
		env.Est.Zero()
	case OpSetTimeout:
		t.SetTimeouts(time.Duration(c.Timeouts[0])*time.Second, time.Duration(c.Timeouts[1])*time.Second,
			time.Duration(c.Timeouts[2])*time.Second)
	case OpSave:
		List(w, t, c.Format|FmtRule)
	case OpList:
		switch {
		case c.Format&FmtTimeout != 0:
			ListTimeout(w, t)
		case c.Format&FmtDaemon != 0:
			// No sync daemon runs: ipvsadm prints nothing.
		case c.Format&FmtConn != 0:
			ListConns(w, t, now(), c.Format)
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
	case OpRestore:
		return usagef("-R reads rules from standard input; send them with the request")
	}
	return nil
}

func zeroStats(s *nat.Stats) {
	s.Conns.Store(0)
	s.InPkts.Store(0)
	s.OutPkts.Store(0)
	s.InBytes.Store(0)
	s.OutBytes.Store(0)
}

// Execute runs one command line against t, as the daemon does for
// tunvsadm. For -R, rules holds what tunvsadm read from its standard input.
func Execute(t *nat.Table, args []string, rules string) (string, error) {
	return ExecuteWith(Env{Table: t}, args, rules)
}

// ExecuteWith is Execute in env.
func ExecuteWith(env Env, args []string, rules string) (string, error) {
	c, err := Parse(args)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if c.Op == OpRestore {
		cmds, lines, err := ParseRulesLines(strings.NewReader(rules))
		if err != nil {
			return "", err
		}
		return "", ApplyWith(env, cmds, lines, &out)
	}
	err = ApplyWith(env, []Command{c}, nil, &out)
	return out.String(), err
}

// Usage is tunvsadm's help text.
var Usage = `tunvsadm: ipvsadm v1.31's commands for the tunvs userspace director
Usage:
  tunvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags] [-o]
  tunvsadm -D virtual-service
  tunvsadm -C
  tunvsadm -R
  tunvsadm -S [-n]
  tunvsadm -a|e virtual-service -r server-address [-m] [-w weight] [-x upper-threshold] [-y lower-threshold]
  tunvsadm -d virtual-service -r server-address
  tunvsadm -L|l [virtual-service] [options]
  tunvsadm -Z [virtual-service]
  tunvsadm --set tcp tcpfin udp
  tunvsadm -h

virtual-service:
  --tcp-service|-t service-address   service-address is host[:port]
  --udp-service|-u service-address   service-address is host[:port]

Options:
  --scheduler    -s scheduler         one of ` + strings.Join(sched.Names(), "|") + `,
                                      the default scheduler is wlc.
  --persistent   -p [timeout]         persistent service (default 300 s)
  --netmask      -M netmask           persistent granularity mask
  --sched-flags  -b flags             scheduler flags (comma-separated: sh-fallback, sh-port, mh-fallback, mh-port, flag-1..3)
  --ops          -o                   one-packet scheduling (UDP)
  --real-server  -r server-address    server-address is host (and port)
  --masquerading -m                   masquerading (NAT), the only method tunvs has
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --numeric      -n                   numeric output of addresses and ports
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information (none: tunvs has no sync daemon)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility

Not supported: -g (gatewaying), -i (ipip), -f (fwmark services), --pe, the sync daemon.
Without -n, names come from /etc/hosts and /etc/services only (no DNS).
`
