//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestExecAlias: the banners' d1..dN (scale-out lab) and backup (HA lab)
// name host "director" with that director's control socket; other names
// and other labs are left alone.
func TestExecAlias(t *testing.T) {
	sockOf := func(env []string) string {
		i := slices.IndexFunc(env, func(kv string) bool { return len(kv) > 13 && kv[:13] == "TUNVS_SOCKET=" })
		if i < 0 {
			return ""
		}
		return env[i][13:]
	}
	touch := func(p string) {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TUNVS_SOCKET", "/elsewhere.sock")

	cluster := t.TempDir()
	touch(filepath.Join(cluster, clusterMarker))
	touch(DirectorSocket(cluster, 0))
	touch(DirectorSocket(cluster, 1))
	s := &State{Dir: cluster}
	if h, env := s.ExecAlias("d2"); h != HostDir || sockOf(env) != DirectorSocket(cluster, 1) {
		t.Errorf("d2 in the scale-out lab: %s, %s", h, sockOf(env))
	}
	if h, _ := s.ExecAlias("d3"); h != "d3" {
		t.Errorf("d3 of a two-director lab became %s", h)
	}
	if h, env := s.ExecAlias("rs1"); h != "rs1" || sockOf(env) != SocketPath(cluster) {
		t.Errorf("rs1 in the scale-out lab: %s, %s", h, sockOf(env))
	}

	ha := t.TempDir()
	touch(BackupSocketPath(ha))
	s = &State{Dir: ha}
	if h, env := s.ExecAlias("backup"); h != HostDir || sockOf(env) != BackupSocketPath(ha) {
		t.Errorf("backup in the HA lab: %s, %s", h, sockOf(env))
	}
	if h, _ := s.ExecAlias("d1"); h != "d1" {
		t.Errorf("d1 in the HA lab became %s", h)
	}
}
