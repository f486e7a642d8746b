package admin

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strings"
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
	return fmt.Sprintf("line %d: %v: %q", e.Line, e.Err, e.Text)
}

func (e *LineError) Unwrap() error { return e.Err }

// ParseRules reads an ipvsadm-save file (the output of `ipvsadm -S`, one
// command per line; blank lines and # comments are skipped). Only commands
// that change the table are allowed. The first bad line is returned as a
// *LineError.
func ParseRules(r io.Reader) ([]Command, error) {
	var cmds []Command
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
			return nil, &LineError{Line: n, Text: text, Err: err}
		}
		switch c.Op {
		case OpAddService, OpEditService, OpDelService, OpAddDest, OpEditDest, OpDelDest, OpClear, OpSetTimeout, OpZero:
		default:
			return nil, &LineError{Line: n, Text: text, Err: usagef("not a command a rules file may hold")}
		}
		cmds = append(cmds, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return cmds, nil
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
		svcText := fmt.Sprintf("%s %s", nat.ProtoName(c.Proto), addrPortString(c.Addr, c.Port))
		switch c.Op {
		case OpAddService:
			if exists {
				return fail(i, fmt.Errorf("%w: %s", nat.ErrServiceExists, svcText))
			}
			if _, err := sched.New(schedName(c.Scheduler)); err != nil {
				return fail(i, err)
			}
			svcs[id] = map[netip.AddrPort]bool{}
		case OpEditService:
			if !exists {
				return fail(i, fmt.Errorf("%w: %s", nat.ErrNoService, svcText))
			}
			if _, err := sched.New(schedName(c.Scheduler)); err != nil {
				return fail(i, err)
			}
		case OpDelService:
			if !exists {
				return fail(i, fmt.Errorf("%w: %s", nat.ErrNoService, svcText))
			}
			delete(svcs, id)
		case OpClear:
			clear(svcs)
		case OpAddDest, OpEditDest, OpDelDest:
			if !exists {
				return fail(i, fmt.Errorf("%w: %s", nat.ErrNoService, svcText))
			}
			if c.DestAddr.Is4() != c.Addr.Is4() {
				return fail(i, fmt.Errorf("%w: real server %v is not of the service's address family", nat.ErrInvalid, c.DestAddr))
			}
			dk := netip.AddrPortFrom(c.DestAddr, c.DestPort)
			switch {
			case c.Op == OpAddDest && ds[dk]:
				return fail(i, fmt.Errorf("%w: %v", nat.ErrDestExists, dk))
			case c.Op != OpAddDest && !ds[dk]:
				return fail(i, fmt.Errorf("%w: %v", nat.ErrNoDest, dk))
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

func schedName(s string) string {
	if s == "" {
		return nat.DefaultScheduler
	}
	return s
}

// Apply validates cmds as a whole and then applies them; a refused batch
// changes nothing. Listing commands write their output to w.
func Apply(t *nat.Table, cmds []Command, lines []int, w io.Writer) error {
	if err := Validate(t, cmds, lines); err != nil {
		return err
	}
	for i, c := range cmds {
		if err := apply(t, c, w); err != nil {
			// Validation passed, so this is a change made meanwhile by
			// another client; say which command it hit.
			return fmt.Errorf("command %d: %w", i+1, err)
		}
	}
	return nil
}

func apply(t *nat.Table, c Command, w io.Writer) error {
	sc := nat.ServiceConfig{Proto: c.Proto, Addr: c.Addr, Port: c.Port, Scheduler: c.Scheduler}
	dc := nat.DestConfig{Addr: c.DestAddr, Port: c.DestPort, Weight: c.Weight}
	switch c.Op {
	case OpAddService:
		_, err := t.AddService(sc)
		return err
	case OpEditService:
		return t.EditService(sc)
	case OpDelService:
		return t.DelService(c.Proto, c.Addr, c.Port)
	case OpClear:
		t.Clear()
	case OpAddDest:
		_, err := t.AddDest(c.Proto, c.Addr, c.Port, dc)
		return err
	case OpEditDest:
		if !c.HasWeight {
			// ipvsadm -e without -w keeps the weight.
			if s := t.Service(c.Proto, c.Addr, c.Port); s != nil {
				for _, d := range s.Dests() {
					if d.Addr == c.DestAddr && d.Port == c.DestPort {
						dc.Weight = d.Weight()
					}
				}
			}
		}
		return t.EditDest(c.Proto, c.Addr, c.Port, dc)
	case OpDelDest:
		return t.DelDest(c.Proto, c.Addr, c.Port, c.DestAddr, c.DestPort)
	case OpZero:
		t.Zero()
	case OpSetTimeout:
		t.SetTimeouts(time.Duration(c.Timeouts[0])*time.Second, time.Duration(c.Timeouts[1])*time.Second,
			time.Duration(c.Timeouts[2])*time.Second)
	case OpSave:
		List(w, t, c.Format|FmtRule)
	case OpList:
		switch {
		case c.Format&FmtTimeout != 0:
			ListTimeout(w, t)
		case c.Format&FmtConn != 0:
			ListConns(w, t, time.Now())
		case c.HasService:
			s := t.Service(c.Proto, c.Addr, c.Port)
			if s == nil {
				return fmt.Errorf("%w: %s %s", nat.ErrNoService, nat.ProtoName(c.Proto), addrPortString(c.Addr, c.Port))
			}
			ListService(w, s, c.Format)
		default:
			List(w, t, c.Format)
		}
	case OpHelp:
		io.WriteString(w, Usage)
	case OpRestore:
		return usagef("-R reads rules from standard input; send them with the request")
	}
	return nil
}

// Execute runs one command line against t, as the daemon does for
// tunvsadm. For -R, rules holds what tunvsadm read from its standard input.
func Execute(t *nat.Table, args []string, rules string) (string, error) {
	c, err := Parse(args)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if c.Op == OpRestore {
		cmds, err := ParseRules(strings.NewReader(rules))
		if err != nil {
			return "", err
		}
		return "", Apply(t, cmds, nil, &out)
	}
	err = Apply(t, []Command{c}, nil, &out)
	return out.String(), err
}

// Usage is tunvsadm's help text.
const Usage = `tunvsadm: ipvsadm's commands for the tunvs userspace director
Usage:
  tunvsadm -A|E -t|u service-address [-s scheduler]
  tunvsadm -D -t|u service-address
  tunvsadm -C
  tunvsadm -R
  tunvsadm -S [-n]
  tunvsadm -a|e -t|u service-address -r server-address [-m] [-w weight]
  tunvsadm -d -t|u service-address -r server-address
  tunvsadm -L|l [-t|u service-address] [options]
  tunvsadm -Z [-t|u service-address]
  tunvsadm --set tcp tcpfin udp
  tunvsadm -h

Options: -n --numeric, -c --connection, --stats, --timeout, --exact, --nosort
tunvs is a NAT director: -m is the only forwarding method (-g and -i are refused).
Schedulers: ` + "rr, wrr, wlc (default)" + `
`
