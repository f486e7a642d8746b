//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/sched"
)

// Every scheduler through the real daemon, switched live with tunvsadm -E:
// every request answered through the VIP, and the director's counters
// agree with what the client saw.
func runEverySchedulers(t *testing.T) {
	e := setup(t, opts{})
	c := e.httpClient()
	for _, name := range sched.Names() {
		e.adm("-Z")
		e.adm("-E", "-t", "172.16.1.100:80", "-s", name)
		seen := map[string]int{}
		for range 20 {
			seen[get(t, c, "http://172.16.1.100/")]++
		}
		stats := e.adm("-L", "-n", "-t", "172.16.1.100:80", "--stats", "--exact")
		if !strings.Contains(e.adm("-L", "-n", "-t", "172.16.1.100:80"), "TCP  172.16.1.100:80 "+name) {
			t.Errorf("%s: the service does not show the scheduler", name)
		}
		total := 0
		for _, r := range e.rss {
			total += seen[r.name]
			want := fmt.Sprintf("  -> %-28s%9d", r.v4.String()+":8080", seen[r.name])
			if !strings.Contains(stats, want) {
				t.Errorf("%s: client saw %d answers from %s; stats:\n%s", name, seen[r.name], r.name, stats)
			}
		}
		if total != 20 {
			t.Errorf("%s: %d of 20 requests answered: %v", name, total, seen)
		}
	}
}

func TestEveryScheduler(t *testing.T) {
	inSandboxes(t, runEverySchedulers)
}
