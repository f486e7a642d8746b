//go:build linux

package lab

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The namespace labs' directors are `tunvs run` with the daemon's device
// defaults (directorflags.go): these check, from the director's own
// counters (its metrics, served in host director), that a lab's director
// has what `tunvs run` gives a user.

// directorCounters scrapes director i's metrics in the lab in sd and
// returns the host counters (tunvs_host_NAME_total) by NAME.
func directorCounters(t *testing.T, u labUser, tunvs, sd string, i int) map[string]uint64 {
	t.Helper()
	out, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, HostDir, "--",
		"curl", "-sS", "-m", "10", "http://"+MetricsAddr(i).String()+"/metrics")
	if err != nil {
		t.Fatalf("the director's metrics: %v\n%s", err, out)
	}
	c := map[string]uint64{}
	for _, l := range strings.Split(out, "\n") {
		name, v, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(name, "tunvs_host_") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		c[strings.TrimSuffix(strings.TrimPrefix(name, "tunvs_host_"), "_total")] = n
	}
	if len(c) == 0 {
		t.Fatalf("no host counters in the director's metrics:\n%s", out)
	}
	return c
}

// checkDirectorPath checks, after the lab in sd carried some connections,
// that director i (logging to log in sd) opened its device with offloads
// (its readers wait on an offload device: read_waits; no "offloads
// refused" warning) and that established flows took the bypass. It
// returns the counters.
func checkDirectorPath(t *testing.T, u labUser, tunvs, sd string, i int, log string) map[string]uint64 {
	t.Helper()
	c := directorCounters(t, u, tunvs, sd, i)
	t.Logf("director %d: bypassed %d, through the stack %d, reader waits %d, super-packets %d, cut up %d",
		i, c["fast_path"], c["delivered"], c["read_waits"], c["gso_packets"], c["gso_split"])
	if c["read_waits"] == 0 {
		t.Errorf("director %d: no reader waits on an offload device: its device was opened without offloads", i)
	}
	if l := readFile(sd, log); strings.Contains(l, "offloads refused") {
		t.Errorf("director %d: %s", i, l)
	}
	if c["fast_path"] == 0 {
		t.Errorf("director %d: no packet took the bypass (%d through the stack)", i, c["delivered"])
	}
	return c
}

// checkWhole checks in director i's counters c, taken after a download
// through the lab, that it read super-packets whole and cut none up: its
// device has the offloads, and the bypass carries them whole.
func checkWhole(t *testing.T, c map[string]uint64, i int) {
	t.Helper()
	if c["gso_packets"] == 0 || c["gso_split"] != 0 {
		t.Errorf("director %d: %d super-packets read whole and %d cut up: want them whole", i, c["gso_packets"], c["gso_split"])
	}
}

// `tunvs lab --netns --bypass=false` reaches the director (through the
// lab's inner process): every packet goes through its stack.
func TestNetnsLabNoBypass(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	tunvs := filepath.Join(bin, "tunvs")
	u := users[0] // the unprivileged user; the default lab runs as both
	sd := labStateDir(t)
	out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--bypass=false", "--state-dir", sd)
	if err != nil {
		t.Fatalf("tunvs lab --netns --bypass=false: %v\n%s", err, out)
	}
	defer labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd)
	for range 2 {
		if got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
			"curl", "-sS", "-m", "10", "http://10.0.0.200/"); err != nil || !strings.HasSuffix(strings.TrimSpace(got), "Real Server") {
			t.Fatalf("curl from the client: %q (%v)\ndirector log:\n%s", got, err, readFile(sd, "director.log"))
		}
	}
	c := directorCounters(t, u, tunvs, sd, 0)
	if c["fast_path"] != 0 || c["delivered"] == 0 {
		t.Errorf("with --bypass=false: bypassed %d, through the stack %d; want none bypassed", c["fast_path"], c["delivered"])
	}
}
