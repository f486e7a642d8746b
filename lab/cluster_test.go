//go:build linux

package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNetnsLabDirectors is `tunvs lab --netns --directors 2` as a user
// types it, as root and as uid 65534: the router's route to the VIP has a
// next hop per director, BIRD has a session with each, the client's
// requests are answered, the director's table is there through exec, and
// `lab down` removes it all.
func TestNetnsLabDirectors(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	if sbinTool("bird") == "" {
		t.Skip("bird (Debian package bird2) is not installed")
	}
	tunvs := filepath.Join(bin, "tunvs")
	for _, u := range users {
		t.Run(u.name, func(t *testing.T) {
			sd := labStateDir(t)
			out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--directors", "2", "-r", "3", "--state-dir", sd)
			if err != nil {
				t.Fatalf("tunvs lab --netns --directors 2: %v\n%s", err, out)
			}
			downed := false
			defer func() {
				if !downed {
					labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd)
				}
			}()
			logs := func() string {
				return "d1 log:\n" + readFile(sd, "d1.log") + "\nd2 log:\n" + readFile(sd, "d2.log") + "\nbird log:\n" + readFile(sd, "bird.log")
			}
			for _, want := range []string{"2 tunvs directors behind a BGP router", "d2        172.16.1.151/24"} {
				if !strings.Contains(out, want) {
					t.Errorf("the banner lacks %q:\n%s", want, out)
				}
			}
			route, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "router", "--", "ip", "route", "show", ClusterVIP.String())
			if err != nil || strings.Count(route, "nexthop via") != 2 {
				t.Fatalf("the router's route to the VIP: %v\n%s\n%s", err, route, logs())
			}
			protos, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "router", "--",
				sbinTool("birdc"), "-s", filepath.Join(sd, birdSock), "show", "protocols")
			if err != nil || strings.Count(protos, "Established") != 2 {
				t.Errorf("BIRD's sessions: %v\n%s", err, protos)
			}
			seen := map[string]bool{}
			for range 12 {
				got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
					"curl", "-sS", "-m", "5", "http://"+ClusterVIP.String()+"/")
				if err != nil || !strings.HasSuffix(strings.TrimSpace(got), "Real Server") {
					t.Fatalf("curl from the client: %q (%v)\n%s", got, err, logs())
				}
				seen[strings.TrimSpace(got)] = true
			}
			for i := range 2 {
				checkDirectorPath(t, u, tunvs, sd, i, DirectorName(i)+".log")
			}
			if len(seen) < 2 {
				t.Errorf("12 requests (new connections, new ports) all reached one real server: %v", seen)
			}
			tab, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "director", "--", "ipvsadm", "-L", "-n")
			if err != nil || !strings.Contains(tab, "mh (mh-port)") || !strings.Contains(tab, "Route") {
				t.Errorf("ipvsadm -L -n on the director: %v\n%s", err, tab)
			}
			if out, err := labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd); err != nil {
				t.Fatalf("tunvs lab down: %v\n%s", err, out)
			}
			downed = true
			if _, err := os.Stat(sd); !os.IsNotExist(err) {
				t.Errorf("lab down left the state directory %s: %v", sd, err)
			}
		})
	}
}
