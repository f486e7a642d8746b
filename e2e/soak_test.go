//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// envSoak is how long the soak runs (a Go duration; default 2m).
const envSoak = "TUNVS_SOAK"

// A soak: for TUNVS_SOAK (2 minutes by default) the director carries new
// connections, a keep-alive connection, IPv6, 1 MiB downloads and a weight
// change every 2 s, and the control socket is asked every second. Every
// 10 s the table's size, the daemon's RSS and its descriptors are
// sampled and printed. Targets: no request lost, the control socket
// answering throughout, and RSS and descriptors at the end within 20% (and
// 16 descriptors) of the first sample after warm-up: nothing grows without
// bound.
func TestSoak(t *testing.T) {
	if os.Getenv(envReliability) == "" {
		t.Skip("set " + envReliability + "=1 (make reliability)")
	}
	inSandboxes(t, runSoak)
}

func runSoak(t *testing.T) {
	d := 2 * time.Minute
	if s := os.Getenv(envSoak); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("%s=%q: %v", envSoak, s, err)
		}
	}
	e := setup(t, opts{})
	pid := e.daemon.Process.Pid
	fds := func() int {
		dd, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(dd)
	}
	c := e.httpClient()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var ok, fail, ctlOK, ctlFail, edits atomic.Int64
	fetch := func(cl *http.Client, url string, want int) func() bool {
		return func() bool {
			resp, err := cl.Get(url)
			if err != nil {
				return ctx.Err() != nil // cut short by the end
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			return err == nil && (want == 0 || n == int64(want))
		}
	}
	for range 2 {
		until(ctx, &wg, 0, &ok, &fail, fetch(c, "http://172.16.1.100/", 0))
	}
	until(ctx, &wg, 200*time.Millisecond, &ok, &fail, fetch(c, "http://[fd00:100::100]/", 0))
	until(ctx, &wg, 5*time.Second, &ok, &fail, fetch(c, "http://172.16.1.100/big", 1<<20))
	keep := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1,
		DialContext: c.Transport.(*http.Transport).DialContext}}
	until(ctx, &wg, 100*time.Millisecond, &ok, &fail, fetch(keep, "http://172.16.1.100/", 0))
	var noEdit atomic.Int64
	i := 0
	until(ctx, &wg, 2*time.Second, &edits, &noEdit, func() bool {
		i++
		return e.admOK("-e", "-t", "172.16.1.100:80", "-r", "172.16.1.5:8080", "-m", "-w", fmt.Sprint(1+i%3))
	})
	until(ctx, &wg, time.Second, &ctlOK, &ctlFail, func() bool { return e.admOK("-L", "-n") })
	type sample struct {
		at           time.Duration
		conns, rssKB int
		fds          int
	}
	var samples []sample
	start := time.Now()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
sampling:
	for {
		select {
		case <-ctx.Done():
			break sampling
		case <-tick.C:
			samples = append(samples, sample{time.Since(start).Round(time.Second), e.conns(), rssKB(pid), fds()})
		}
	}
	wg.Wait()
	var sb strings.Builder
	for _, s := range samples {
		fmt.Fprintf(&sb, " t=%v conns=%d rss_kb=%d fds=%d;", s.at, s.conns, s.rssKB, s.fds)
	}
	total := ok.Load() + fail.Load()
	t.Logf("FIGURES soak=%v requests ok=%d/%d weight_edits=%d control ok=%d fail=%d samples:%s",
		d, ok.Load(), total, edits.Load(), ctlOK.Load(), ctlFail.Load(), sb.String())
	if fail.Load() != 0 {
		t.Errorf("%d of %d requests failed", fail.Load(), total)
	}
	if ctlFail.Load() != 0 {
		t.Errorf("the control socket failed %d times", ctlFail.Load())
	}
	if len(samples) >= 3 {
		first, last := samples[1], samples[len(samples)-1]
		if last.rssKB > first.rssKB*12/10 {
			t.Errorf("RSS grew from %d kB to %d kB", first.rssKB, last.rssKB)
		}
		if last.fds > first.fds+16 {
			t.Errorf("descriptors grew from %d to %d", first.fds, last.fds)
		}
	}
}
