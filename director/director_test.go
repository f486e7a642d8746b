package director

import (
	"bytes"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/tun"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newDirector(t *testing.T, rules string, cfg Config) (*Director, tun.Device, *syncBuf) {
	t.Helper()
	a, b := tun.NewPair(tun.KindTUN, 1500)
	cmds, lines, err := admin.ParseRulesLines(strings.NewReader(rules))
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuf
	cfg.Links = []Link{{Name: "c", Dev: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.100/32")}}}
	cfg.Rules, cfg.RuleLines = cmds, lines
	cfg.Log = zerolog.New(&log)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, b, &log
}

const testRules = "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.5 -m\n-a -t 10.0.0.100:80 -r 10.0.0.6 -m -w 2\n"

// SIGHUP's reload: the difference applied and logged; a bad file refused
// with its line, nothing changed.
func TestReload(t *testing.T) {
	d, _, log := newDirector(t, testRules, Config{})
	path := filepath.Join(t.TempDir(), "rules")
	svc := d.NAT.Services()[0]
	os.WriteFile(path, []byte("-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.5 -m -w 0\n"), 0o644)
	cmds, err := d.Reload(path)
	if err != nil || len(cmds) != 2 {
		t.Fatalf("reload: %v %v", cmds, err)
	}
	if d.NAT.Services()[0] != svc {
		t.Error("the unchanged service was replaced")
	}
	for _, ev := range []string{`"event":"server_removed"`, `"server":"10.0.0.6:80"`, `"event":"server_quiesced"`} {
		if !strings.Contains(log.String(), ev) {
			t.Errorf("log lacks %s:\n%s", ev, log.String())
		}
	}
	before := save(d)
	os.WriteFile(path, []byte("-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.7 -m -x 1 -y 2\n"), 0o644)
	_, err = d.Reload(path)
	var le *admin.LineError
	if err == nil || !asLine(err, &le) || le.Line != 2 {
		t.Errorf("bad file: %v", err)
	}
	if save(d) != before {
		t.Error("a refused reload changed the table")
	}
}

func asLine(err error, le **admin.LineError) bool {
	for err != nil {
		if l, ok := err.(*admin.LineError); ok {
			*le = l
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func save(d *Director) string {
	var b bytes.Buffer
	admin.List(&b, d.NAT, admin.FmtNumeric|admin.FmtRule)
	return b.String()
}

// Drops are logged once per interval and reason, with the count.
func TestDropLog(t *testing.T) {
	d, peer, log := newDirector(t, testRules, Config{DropLogInterval: 200 * time.Millisecond})
	for range 50 {
		f := make([]byte, 40)
		f[0] = 0x15 // IP version 1
		peer.Write([][]byte{f}, 0)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(log.String(), `"event":"drops"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	l := log.String()
	if n := strings.Count(l, `"event":"drops"`); n != 1 || !strings.Contains(l, `"count":50`) {
		t.Errorf("%d drop lines, want 1 with count 50:\n%s", n, l)
	}
	_ = d
}

// The metrics listener serves the Prometheus text format.
func TestMetrics(t *testing.T) {
	d, _, _ := newDirector(t, testRules, Config{Metrics: "127.0.0.1:0"})
	resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"# TYPE tunvs_service_connections_total counter\n",
		`tunvs_service_in_packets_total{protocol="tcp",service="10.0.0.100:80"} 0`,
		`tunvs_server_active_connections{protocol="tcp",service="10.0.0.100:80",server="10.0.0.6:80"} 0`,
		`tunvs_server_weight{protocol="tcp",service="10.0.0.100:80",server="10.0.0.6:80"} 2`,
		`tunvs_drops_total{reason="truncated"} 0`,
		"tunvs_connections 0\n",
		"tunvs_host_fast_path_total 0\n",
		"go_goroutines ",
		"go_memstats_heap_alloc_bytes ",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type %q", ct)
	}
}
