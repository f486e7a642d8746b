package admin

import (
	"fmt"
	"io"
	"slices"

	"github.com/tunvs/tunvs/nat"
)

// Reload reads a rules file and computes the commands that take t from its
// current services to the file's: services and real servers removed,
// added, or edited where their configuration differs. Established
// connections are not touched (a removed server's connections keep
// flowing, as with -d). The file is checked as a whole first: a bad line
// is returned as a *LineError and nothing is computed. The commands are
// returned for the caller to Apply (under the control socket's lock).
func Reload(t *nat.Table, r io.Reader) ([]Command, error) {
	cmds, lines, err := ParseRulesLines(r)
	if err != nil {
		return nil, err
	}
	// The file describes a whole table: run it on an empty scratch table,
	// which also validates it line by line.
	want := nat.New(nat.Config{MaxConns: 1})
	if err := Apply(want, cmds, lines, io.Discard); err != nil {
		return nil, err
	}
	diff := Diff(t, want)
	// --set lines in the file apply as well.
	for _, c := range cmds {
		if c.Op == OpSetTimeout {
			diff = append(diff, c)
		}
	}
	return diff, nil
}

// ServiceCommand is the -A command that makes s as it is configured.
func ServiceCommand(s *nat.Service) Command {
	cfg := s.Config()
	c := Command{Op: OpAddService, HasService: true, Proto: s.Proto, Addr: s.Addr, Port: s.Port,
		Scheduler: cfg.Scheduler, SchedFlags: cfg.SchedFlags, Persistent: cfg.Persistent, OnePacket: cfg.OnePacket}
	if cfg.Persistent {
		c.PersistTimeout = persistSeconds(cfg)
		c.PersistMaskBits = cfg.PersistMaskBits
		if c.PersistMaskBits == s.Addr.BitLen() {
			c.PersistMaskBits = 0
		}
	}
	return c
}

// DestCommand is the -a command that makes d as it is configured.
func DestCommand(s *nat.Service, d *nat.Dest) Command {
	return Command{Op: OpAddDest, HasService: true, Proto: s.Proto, Addr: s.Addr, Port: s.Port,
		HasDest: true, DestAddr: d.Addr, DestPort: d.Port, Weight: d.Weight(), HasWeight: true,
		UThreshold: d.UThreshold(), LThreshold: d.LThreshold(),
		HasUThreshold: d.UThreshold() != 0, HasLThreshold: d.LThreshold() != 0}
}

func sameService(a, b Command) bool {
	return a.Scheduler == b.Scheduler && a.SchedFlags == b.SchedFlags && a.Persistent == b.Persistent &&
		a.PersistTimeout == b.PersistTimeout && a.PersistMaskBits == b.PersistMaskBits && a.OnePacket == b.OnePacket
}

func sameDest(a, b Command) bool {
	return a.Weight == b.Weight && a.UThreshold == b.UThreshold && a.LThreshold == b.LThreshold
}

// Diff returns the commands that change have's services into want's.
// Servers new to a service are added oldest first, so that the list order
// (and with it the schedulers' choices) is the one the file gives.
func Diff(have, want *nat.Table) []Command {
	var out []Command
	key := func(s *nat.Service) svcID { return svcID{s.Proto, s.Addr, s.Port} }
	wantSvcs := map[svcID]*nat.Service{}
	for _, s := range want.Services() {
		wantSvcs[key(s)] = s
	}
	haveSvcs := map[svcID]*nat.Service{}
	for _, s := range have.Services() {
		haveSvcs[key(s)] = s
		if wantSvcs[key(s)] == nil {
			c := ServiceCommand(s)
			c.Op = OpDelService
			out = append(out, c)
		}
	}
	for _, ws := range want.Services() {
		wc := ServiceCommand(ws)
		hs := haveSvcs[key(ws)]
		wdests := ws.Dests()
		slices.Reverse(wdests) // oldest first
		if hs == nil {
			out = append(out, wc)
			for _, d := range wdests {
				out = append(out, DestCommand(ws, d))
			}
			continue
		}
		if !sameService(ServiceCommand(hs), wc) {
			wc.Op = OpEditService
			out = append(out, wc)
		}
		hd := map[[2]any]*nat.Dest{}
		for _, d := range hs.Dests() {
			hd[[2]any{d.Addr, d.Port}] = d
		}
		wd := map[[2]any]bool{}
		for _, d := range wdests {
			wd[[2]any{d.Addr, d.Port}] = true
		}
		for _, d := range hs.Dests() {
			if !wd[[2]any{d.Addr, d.Port}] {
				c := DestCommand(hs, d)
				c.Op = OpDelDest
				out = append(out, c)
			}
		}
		for _, d := range wdests {
			dc := DestCommand(ws, d)
			old := hd[[2]any{d.Addr, d.Port}]
			switch {
			case old == nil:
				out = append(out, dc)
			case !sameDest(DestCommand(hs, old), dc):
				dc.Op = OpEditDest
				out = append(out, dc)
			}
		}
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
	case OpZero:
		return "-Z"
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
	}
	if c.HasDest {
		s += " -r " + addrPortString(c.DestAddr, c.DestPort)
		if c.Op != OpDelDest {
			s += fmt.Sprintf(" -m -w %d", c.Weight)
		}
	}
	return s
}
