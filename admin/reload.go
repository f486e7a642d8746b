package admin

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// ReadRulesFile reads a rules file: ipvsadm-save lines (see
// ParseRulesLines) and `--check` lines, which go to checks (the health
// rules). Both keep the file's line numbers for errors. `tunvs run
// --rules` and the reload read files here.
func ReadRulesFile(data string, checks *health.Parser) ([]Command, []int, error) {
	ipvs, checkText := health.SplitRules(data)
	cmds, lines, err := ParseRulesLines(strings.NewReader(ipvs))
	if err != nil {
		return nil, nil, err
	}
	for i, l := range strings.Split(checkText, "\n") {
		if err := checks.LineAt(i+1, l); err != nil {
			return nil, nil, &health.LineError{Line: i + 1, Text: l, Err: err}
		}
	}
	return cmds, lines, nil
}

// RulesOf is the configuration cmds make from nothing (a rules file
// describes a whole table), checked as a whole: the first refused command
// is returned with its line, and ipvsadm's message, as Apply would.
func RulesOf(cmds []Command, lines []int) (rules.Rules, error) {
	d := make(rules.Diff, 0, len(cmds))
	// at maps d's changes back to cmds, for the errors: --start-daemon
	// lines are no change to the table but the rules' Sync.
	at := make([]int, 0, len(cmds))
	var sync rules.Sync
	lineErr := func(i int, err error) error {
		if lines != nil && i < len(lines) {
			return &LineError{Line: lines[i], Err: err}
		}
		return fmt.Errorf("command %d: %w", i+1, err)
	}
	for i, c := range cmds {
		if c.Op == OpStartDaemon {
			cfg := c.Daemon.Config
			slot := &sync.Master
			if c.Daemon.Role == ipvssync.Backup {
				slot = &sync.Backup
			}
			if *slot != nil {
				return rules.Rules{}, lineErr(i, ipvsErr("Daemon has already run", ipvssync.ErrRunning))
			}
			if err := cfg.Validate(); err != nil {
				return rules.Rules{}, lineErr(i, ipvsErr(fmt.Sprintf("Invalid argument (%v)", err), err))
			}
			*slot = &cfg
			continue
		}
		ch := c.Change()
		if lines != nil && i < len(lines) {
			ch.Line = lines[i]
		}
		d = append(d, ch)
		at = append(at, i)
	}
	r, err := rules.Rules{}.Next(d)
	var ce *rules.ChangeError
	if errors.As(err, &ce) {
		i := at[ce.Index]
		return r, lineErr(i, natErr(cmds[i].Op, ce.Err))
	}
	if sync.Master != nil || sync.Backup != nil {
		r.Sync = &sync
	}
	return r, err
}

// ReadRules is the configuration a rules file describes, its checks
// included, validated whole (rules.Rules.Validate).
func ReadRules(data string) (rules.Rules, error) {
	var checks health.Parser
	cmds, lines, err := ReadRulesFile(data, &checks)
	if err != nil {
		return rules.Rules{}, err
	}
	r, err := RulesOf(cmds, lines)
	if err != nil {
		return r, err
	}
	r.Checks = checks.Config()
	return r, r.Validate()
}

// Reload reads a rules file and computes the commands that take t from its
// current services to the file's: services and real servers removed,
// added, or edited where their configuration differs (rules.Rules.Diff).
// Established connections are not touched (a removed server's connections
// keep flowing, as with -d). The file is checked as a whole first: a bad
// line is returned as a *LineError and nothing is computed.
func Reload(t *nat.Table, r io.Reader) ([]Command, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	want, err := ReadRules(string(data))
	if err != nil {
		return nil, err
	}
	return Commands(t.Rules().Diff(want)), nil
}

// Commands are the ipvsadm commands of a diff.
func Commands(d rules.Diff) []Command {
	out := make([]Command, len(d))
	for i, c := range d {
		out[i] = CommandOf(c)
	}
	return out
}

// String renders c as an ipvsadm command line (numeric), for logs.
func (c Command) String() string {
	s := ""
	switch c.Op {
	case OpAddService, OpEditService, OpDelService:
		s = map[Op]string{OpAddService: "-A", OpEditService: "-E", OpDelService: "-D"}[c.Op]
	case OpAddDest, OpEditDest, OpDelDest:
		s = map[Op]string{OpAddDest: "-a", OpEditDest: "-e", OpDelDest: "-d"}[c.Op]
	case OpSetTimeout:
		return fmt.Sprintf("--set %d %d %d", c.Timeouts[0], c.Timeouts[1], c.Timeouts[2])
	case OpClear:
		return "-C"
	case OpSetSysctl:
		return fmt.Sprintf("--sysctl %s=%d", c.Sysctl, c.SysctlValue)
	case OpZero:
		return "-Z"
	case OpAddLocalAddr, OpDelLocalAddr:
		s = map[Op]string{OpAddLocalAddr: "--add-laddr", OpDelLocalAddr: "--del-laddr"}[c.Op]
	default:
		return fmt.Sprintf("op %d", c.Op)
	}
	p := "-t"
	if c.Proto == nat.ProtoUDP {
		p = "-u"
	}
	s += " " + p + " " + addrPortString(c.Addr, c.Port)
	if c.Op == OpAddService || c.Op == OpEditService {
		s += " -s " + schedName(c.Scheduler)
		if c.Persistent {
			s += fmt.Sprintf(" -p %d", c.PersistTimeout)
		}
		s += proxyFlag(c.ProxyProtocol)
	}
	if c.HasDest {
		s += " -r " + addrPortString(c.DestAddr, c.DestPort)
		if c.Op != OpDelDest {
			srv := c.Change().Server
			s += fmt.Sprintf(" %s -w %d", methodFlag(srv.Method), c.Weight)
			if srv.Method == rules.Tunnel {
				s += encapOptions(srv.Tun)
			}
			s += proxyFlag(c.ProxyProtocol)
		}
	}
	if c.LocalAddr.IsValid() {
		s += " -z " + c.LocalAddr.String()
	}
	return s
}
