//go:build linux

package e2e

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestGSOWhole moves 8 MiB up and 4 MiB down through the VIP between
// real kernels whose TUN links have TSO (the director turns the offloads
// on), and checks, from the daemon's metrics, that the kernels' super-
// packets went through whole: NATed in place, never cut up in software.
func TestGSOWhole(t *testing.T) {
	inSandboxes(t, runGSOWhole)
}

func runGSOWhole(t *testing.T) {
	e := setup(t, opts{extra: []string{"--metrics=127.0.0.1:0"}})
	e.streamsWhole("TUN")
}

// streamsWhole moves 8 MiB up and 4 MiB down through the VIP and checks,
// from the daemon's metrics (--metrics=127.0.0.1:0), that super-packets
// went through whole and none was cut up (the director's devices, of
// kind, have offloads). It returns the scrape.
func (e *env) streamsWhole(kind string) string {
	t := e.t
	t.Helper()
	c := e.httpClient()
	upload(t, c, bytes.Repeat([]byte("tunvs gso "), 800<<10))
	for range 4 {
		if n := len(get(t, c, "http://172.16.1.100/big")); n != 1<<20 {
			t.Errorf("download got %d bytes", n)
		}
	}
	m := e.metrics()
	gso, split := metric(t, m, "tunvs_host_gso_packets_total"), metric(t, m, "tunvs_host_gso_split_total")
	t.Logf("super-packets NATed whole: %d, cut up in software: %d", gso, split)
	if gso == 0 {
		t.Error("no super-packet went through whole")
	}
	if split != 0 {
		t.Errorf("%d super-packets cut up in software, want none between %s devices with offloads", split, kind)
	}
	return m
}

var metricsAddr = regexp.MustCompile(`metrics listening.*?(127\.0\.0\.1:[0-9]+)`)

// metrics scrapes the daemon's Prometheus endpoint (--metrics=127.0.0.1:0,
// whose address the log tells).
func (e *env) metrics() string {
	e.t.Helper()
	return scrapeMetrics(e.t, e.log.String())
}

// scrapeMetrics scrapes the metrics of the daemon whose log is log.
func scrapeMetrics(t *testing.T, log string) string {
	t.Helper()
	mm := metricsAddr.FindStringSubmatch(log)
	if mm == nil {
		t.Fatalf("no metrics address in the log:\n%s", log)
	}
	resp, err := http.Get("http://" + mm[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metric is the value of an unlabelled counter in a scrape.
func metric(t *testing.T, scrape, name string) uint64 {
	t.Helper()
	for _, l := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}
