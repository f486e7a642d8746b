//go:build linux

package lab

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tunvs lab --netns --ha: the client's requests reach the real servers
// through the master; the backup's table holds the master's connections
// (synced); the master killed as the banner says, the backup takes over
// and the client's requests go on; as root and as uid 65534.
func TestNetnsLabHA(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	tunvs := filepath.Join(bin, "tunvs")
	for _, u := range users {
		t.Run(u.name, func(t *testing.T) {
			sd := labStateDir(t)
			out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--ha", "--state-dir", sd)
			if err != nil {
				t.Fatalf("tunvs lab --netns --ha: %v\n%s", err, out)
			}
			defer func() {
				if out, err := labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd); err != nil {
					t.Errorf("tunvs lab down: %v\n%s", err, out)
				}
			}()
			logs := func() string {
				return "director log:\n" + readFile(sd, "director.log") + "\nbackup log:\n" + readFile(sd, "backup.log")
			}
			kill := "kill -9 $(cat " + MasterPIDFile(sd) + ")"
			if !strings.Contains(out, "lab exec --state-dir "+sd+" backup -- ipvsadm -Lnc") {
				t.Errorf("the banner does not show the backup's table by lab exec backup:\n%s", out)
			}
			if !strings.Contains(out, kill) {
				t.Errorf("the banner does not say how to fail over (%q):\n%s", kill, out)
			}
			curl := func(within time.Duration) string {
				t.Helper()
				deadline := time.Now().Add(within)
				for {
					got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
						"curl", "-sS", "-m", "2", "http://10.0.0.200/")
					if err == nil && strings.HasSuffix(strings.TrimSpace(got), "Real Server") {
						return got
					}
					if time.Now().After(deadline) {
						t.Fatalf("curl from the client: %q (%v)\n%s", got, err, logs())
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			// The master takes the VIP after Master_Down_Interval.
			curl(20 * time.Second)
			curl(10 * time.Second)
			checkDirectorPath(t, u, tunvs, sd, 0, "director.log")
			// The backup learns the connections (TIME_WAIT is a state
			// change: sent at once, flushed within 2 s).
			deadline := time.Now().Add(10 * time.Second)
			for {
				tab, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "backup", "--", "ipvsadm", "-Lnc")
				if err == nil && strings.Contains(tab, "10.0.0.10:") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the backup's table has no synced connection: %q (%v)\n%s", tab, err, logs())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if out, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "director", "--", "sh", "-c", kill); err != nil {
				t.Fatalf("%s: %v\n%s", kill, err, out)
			}
			start := time.Now()
			curl(20 * time.Second)
			t.Logf("after the master's SIGKILL the client's requests worked again within %.1f s", time.Since(start).Seconds())
			if l := readFile(sd, "backup.log"); !strings.Contains(l, "to=MASTER") {
				t.Errorf("the backup did not log becoming master:\n%s", l)
			}
			// The walk follows the backup now; the dead master's device
			// is gone, and capturing on it says so.
			if out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "walk", "--auto", "--state-dir", sd); err != nil || !strings.Contains(out, "lan/"+BackupDev+" ") {
				t.Errorf("tunvs lab walk after the failover: %v\n%s", err, out)
			}
			if out, err := labRun(t, u, 30*time.Second, tunvs, "lab", "capture", "--state-dir", sd, HostLan, DirectorDev); err == nil || !strings.Contains(out, `no device "`+DirectorDev+`"`) {
				t.Errorf("tunvs lab capture on the dead master's device: %v\n%s", err, out)
			}
		})
	}
}

// tunvs lab walk in the scale-out lab says it follows the one-director lab
// and what to use instead, rather than failing on a device that is not there.
func TestWalkRefusesClusterLab(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, clusterMarker), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Walk(context.Background(), &State{Dir: dir}, WalkOptions{Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "--directors") || !strings.Contains(err.Error(), "capture "+HostLan+" "+DirectorTAP(0)) {
		t.Fatalf("walk in a scale-out lab: %v", err)
	}
}
