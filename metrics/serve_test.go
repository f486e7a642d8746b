package metrics_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
)

// The metrics listener exports its own counters, and refuses a request
// with a body (a scrape has none) or a header over MaxHeaderBytes as too
// large.
func TestServeListenerCounters(t *testing.T) {
	ln, err := metrics.Serve("127.0.0.1:0", metrics.Source{NAT: nat.New(nat.Config{})}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	url := "http://" + ln.Addr().String() + "/metrics"
	resp, err := http.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST with a body: %s", resp.Status)
	}
	// A header over MaxHeaderBytes: net/http refuses it (431) before
	// any handler runs; it counts as too large all the same.
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("x", 2*metrics.MaxHeaderBytes))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET with a %d-byte header: %s", 2*metrics.MaxHeaderBytes, resp.Status)
	}
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`tunvs_listener_too_large_total{listener="metrics"} 2`,
		`tunvs_listener_accept_errors_total{listener="metrics"} 0`,
		`tunvs_listener_open_connections{listener="metrics"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %q in:\n%s", want, b)
		}
	}
}
