package admin

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/rules"
)

// The sync daemon's commands (ipvsadm --start-daemon, --stop-daemon and
// their options, ipvsadm.c's TAG_START_DAEMON ... TAG_MCAST_TTL).

// DaemonArgs are a --start-daemon or --stop-daemon command's arguments.
type DaemonArgs struct {
	Role   ipvssync.Role
	Config rules.SyncDaemon
	opts   uint8 // daemon options given (daemonOpt*)
}

const (
	daemonOptInterface uint8 = 1 << iota
	daemonOptSyncID
	daemonOptMaxLen
	daemonOptGroup
	daemonOptPort
	daemonOptTTL
	numDaemonOpts = iota
)

var daemonOptNames = [numDaemonOpts]string{"mcast-interface", "syncid", "sync-maxlen", "mcast-group", "mcast-port", "mcast-ttl"}

// daemonOption parses one of the daemon's words; the second result says
// whether a was one.
func (p *parser) daemonOption(a string) (bool, error) {
	num := func(lo, hi int, what string) (int, error) {
		v, err := p.next()
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, usagef("illegal %s specified", what)
		}
		return n, nil
	}
	set := func(o uint8) error {
		if p.c.Daemon.opts&o != 0 {
			for i := range numDaemonOpts {
				if o == 1<<i {
					return usagef("multiple '%s' options specified", daemonOptNames[i])
				}
			}
		}
		p.c.Daemon.opts |= o
		return nil
	}
	d := &p.c.Daemon
	var err error
	switch a {
	case "--start-daemon", "--stop-daemon":
		op := OpStartDaemon
		if a == "--stop-daemon" {
			op = OpStopDaemon
		}
		if err = p.command(op); err != nil {
			return true, err
		}
		var v string
		if v, err = p.next(); err != nil {
			return true, err
		}
		if d.Role, err = ipvssync.ParseRole(v); err != nil {
			if op == OpStartDaemon {
				return true, usagef("illegal start-daemon parameter specified")
			}
			return true, usagef("illegal stop_daemon specified")
		}
	case "--mcast-interface":
		if err = set(daemonOptInterface); err == nil {
			d.Config.Interface, err = p.next()
		}
	case "--syncid":
		var n int
		if err = set(daemonOptSyncID); err == nil {
			n, err = num(0, 255, "syncid")
			d.Config.SyncID = uint8(n)
		}
	case "--sync-maxlen":
		if err = set(daemonOptMaxLen); err == nil {
			d.Config.MaxLen, err = num(1, rules.MaxSyncMaxLen, "sync-maxlen")
		}
	case "--mcast-group":
		if err = set(daemonOptGroup); err != nil {
			break
		}
		var v string
		if v, err = p.next(); err != nil {
			break
		}
		g, perr := netip.ParseAddr(v)
		if perr != nil || !g.IsMulticast() || g.Zone() != "" {
			fam := "IPv4"
			if g.Is6() {
				fam = "IPv6"
			}
			return true, usagef("invalid %s mcast-group `%s'", fam, v)
		}
		d.Config.Group = g
	case "--mcast-port":
		var n int
		if err = set(daemonOptPort); err == nil {
			n, err = num(1, 65535, "mcast-port")
			d.Config.Port = uint16(n)
		}
	case "--mcast-ttl":
		var n int
		if err = set(daemonOptTTL); err == nil {
			n, err = num(1, 255, "mcast-ttl")
			d.Config.TTL = uint8(n)
		}
	default:
		return false, nil
	}
	return true, err
}

// checkDaemon is the daemon's part of ipvsadm's commands_v_options:
// --start-daemon needs --mcast-interface and takes the other daemon
// options, --stop-daemon takes only --syncid, other commands none of
// them; the daemon commands take no other option.
func (c *Command) checkDaemon() error {
	name := cmdNames[c.Op]
	if c.Op != OpStartDaemon && c.Op != OpStopDaemon {
		for i := range numDaemonOpts {
			if c.Daemon.opts&(1<<i) != 0 {
				return usagef("Illegal '%s' option with the '%s' command", daemonOptNames[i], name)
			}
		}
		return nil
	}
	for j := range numOpts {
		if c.opts&(1<<j) != 0 {
			return usagef("Illegal '%s' option with the '%s' command", optNames[j], name)
		}
	}
	if c.Op == OpStopDaemon {
		for i := range numDaemonOpts {
			if c.Daemon.opts&(1<<i) != 0 && uint8(1<<i) != daemonOptSyncID {
				return usagef("Illegal '%s' option with the '%s' command", daemonOptNames[i], name)
			}
		}
		return nil
	}
	if c.Daemon.opts&daemonOptInterface == 0 {
		return usagef("You need to supply the 'mcast-interface' option for the 'start-daemon' command")
	}
	return nil
}

// daemonCommand runs --start-daemon or --stop-daemon, with the kernel's
// answers as ipvsadm words them (libipvs ipvs_strerror).
func daemonCommand(env Env, c Command) error {
	if env.Sync == nil {
		return ipvsErr("Operation not supported: no sync daemons in this process", errors.New("no sync daemons"))
	}
	var err error
	if c.Op == OpStartDaemon {
		err = env.Sync.Start(c.Daemon.Role, c.Daemon.Config)
	} else {
		err = env.Sync.Stop(c.Daemon.Role)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipvssync.ErrRunning):
		return ipvsErr("Daemon has already run", err)
	case errors.Is(err, ipvssync.ErrStopped):
		return ipvsErr("No daemon is running", err)
	case errors.Is(err, ipvssync.ErrInvalid):
		return ipvsErr(fmt.Sprintf("Invalid argument (%v)", err), err)
	}
	return ipvsErr(err.Error(), err)
}
