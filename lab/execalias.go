//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"strings"
)

// ExecAlias maps the names the banners give the directors that share host
// "director" to that host and the control socket of the one named (while
// its socket is there), so that `tunvs lab exec d2 -- ipvsadm -L -n`
// shows d2's table, as `tunvs lab exec director` does the single
// director's: "d1".."dN" in the scale-out lab, "backup" in the HA lab.
// Any other name is returned as it is, with ExecEnv's environment.
func (s *State) ExecAlias(host string) (string, []string) {
	env := s.ExecEnv()
	sock := ""
	if _, err := os.Stat(filepath.Join(s.Dir, clusterMarker)); err == nil {
		for i := range MaxDirectors {
			if _, err := os.Stat(DirectorSocket(s.Dir, i)); err == nil && host == DirectorName(i) {
				sock = DirectorSocket(s.Dir, i)
			}
		}
	} else if _, err := os.Stat(BackupSocketPath(s.Dir)); err == nil && host == "backup" {
		sock = BackupSocketPath(s.Dir)
	}
	if sock == "" {
		return host, env
	}
	// Replaced, not appended: getenv (libc's, Go's) takes the first.
	for i, kv := range env {
		if strings.HasPrefix(kv, "TUNVS_SOCKET=") {
			env[i] = "TUNVS_SOCKET=" + sock
		}
	}
	return HostDir, env
}
