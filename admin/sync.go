package admin

import (
	"errors"
	"fmt"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/rules"
)

// The sync daemon's commands (ipvsadm --start-daemon, --stop-daemon and
// their options, ipvsadm.c's TAG_START_DAEMON ... TAG_MCAST_TTL).

// DaemonArgs are a --start-daemon or --stop-daemon command's arguments.
// Parse reads them with the other options (parse.go), as ipvsadm does.
type DaemonArgs struct {
	Role   ipvssync.Role
	Config rules.SyncDaemon
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
