package director

import (
	"errors"
	"fmt"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/rules"
)

// syncFromFile makes the running sync daemons what a rules file's
// --start-daemon lines say (want nil: none): a daemon whose line is gone
// is stopped (--stop-daemon), a new or changed one (re)started, one
// unchanged left alone. Not while VRRP drives the daemons
// (lvs_sync_daemon): the routers own them then.
func (d *Director) syncFromFile(want *rules.Sync) error {
	if d.Sync == nil || d.vrrpDrivesSync {
		return nil
	}
	var errs []error
	for _, role := range []ipvssync.Role{ipvssync.Master, ipvssync.Backup} {
		var w *rules.SyncDaemon
		if want != nil {
			w = want.Master
			if role == ipvssync.Backup {
				w = want.Backup
			}
		}
		cur, running := d.Sync.Running(role)
		if running && w != nil && sameDaemon(cur, *w) {
			continue
		}
		if running {
			if err := d.Sync.Stop(role); err != nil && !errors.Is(err, ipvssync.ErrStopped) {
				errs = append(errs, fmt.Errorf("stop the %s sync daemon: %w", role, err))
				continue
			}
			d.log.Info().Str(admin.FieldEvent, "sync_daemon_stopped").Stringer("role", role).Msg("rules file: sync daemon stopped")
		}
		if w != nil {
			if err := d.Sync.Start(role, *w); err != nil {
				errs = append(errs, fmt.Errorf("start the %s sync daemon: %w", role, err))
				continue
			}
			d.log.Info().Str(admin.FieldEvent, "sync_daemon_started").Stringer("role", role).Str("interface", w.Interface).Msg("rules file: sync daemon started")
		}
	}
	return errors.Join(errs...)
}

// sameDaemon compares a running daemon's configuration (its defaults
// filled in) with a rules file's (zero: the default).
func sameDaemon(run, file rules.SyncDaemon) bool {
	eq := func(a, b, def uint64) bool { return a == b || (b == 0 && a == def) }
	return run.Interface == file.Interface && run.SyncID == file.SyncID &&
		(run.Group == file.Group || !file.Group.IsValid() && run.Group == ipvssync.DefaultGroup) &&
		eq(uint64(run.Port), uint64(file.Port), ipvssync.DefaultPort) &&
		eq(uint64(run.TTL), uint64(file.TTL), ipvssync.DefaultTTL) &&
		(file.MaxLen == 0 || run.MaxLen == file.MaxLen)
}
