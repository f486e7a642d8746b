package metrics_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/metrics"
)

// The exposition of a lab director with a health check: the NAT's series,
// and the health series once a check has run.
func TestWrite(t *testing.T) {
	var hp health.Parser
	if err := hp.Line("-t 172.16.1.100:80 tcp interval=100ms timeout=100ms fall=2 rise=1"); err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(lab.Config{Health: hp.Config()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := l.Director
	src := metrics.Source{NAT: d.NAT, Host: d.Host, Health: d.Health.Snapshot}
	var out bytes.Buffer
	for deadline := time.Now().Add(5 * time.Second); ; {
		out.Reset()
		metrics.Write(&out, src)
		if strings.Contains(out.String(), `tunvs_health_up{service="TCP 172.16.1.100:80",server="172.16.1.5:80",check="tcp"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health series:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := out.String()
	for _, want := range []string{
		"# TYPE tunvs_service_connections_total counter\n",
		`tunvs_server_weight{protocol="tcp",service="172.16.1.100:80",server="172.16.1.6:80"} 1`,
		`tunvs_drops_total{reason="table_full"} 0`,
		"# TYPE tunvs_health_checks_total counter\n",
		`tunvs_health_quorum_up{service="TCP 172.16.1.100:80"} 1`,
		"tunvs_connections_max 1048576\n",
		`tunvs_service_half_open_connections{protocol="tcp",service="172.16.1.100:80"} 0`,
		"tunvs_synproxy_backlog 4096\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q", want)
		}
	}
	// Every sample line is a name, optional labels and a number.
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Errorf("bad sample line %q", line)
		}
	}
}
