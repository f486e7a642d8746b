//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// prober keeps requesting through the VIP, one new connection at a time,
// and records who answered and what failed, with times.
type prober struct {
	mu    sync.Mutex
	log   []probe
	stop  chan struct{}
	done  chan struct{}
	start time.Time
}

type probe struct {
	at   time.Time
	from string // the body ("RS1"), or "" for a failure
	err  string
}

func startProber(c *http.Client, url string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			pr := probe{at: time.Now()}
			resp, err := c.Get(url)
			if err != nil {
				pr.err = err.Error()
			} else {
				var b strings.Builder
				fmt.Fprint(&b, readAll(resp))
				if resp.StatusCode != 200 {
					pr.err = resp.Status
				} else {
					pr.from = b.String()
				}
			}
			p.mu.Lock()
			p.log = append(p.log, pr)
			p.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return p
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// since returns the probes from t on.
func (p *prober) since(t time.Time) []probe {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []probe
	for _, pr := range p.log {
		if !pr.at.Before(t) {
			out = append(out, pr)
		}
	}
	return out
}

func (p *prober) halt() {
	close(p.stop)
	<-p.done
}

// The director checks its real servers with HTTP from its own stack: a
// server that stops listening, or answers 500, leaves the pool within fall
// × interval (weight 0, as keepalived's inhibit_on_failure leaves it), no
// request fails after that, and it comes back after rise × interval.
func runHealth(t *testing.T) {
	// Margins for a loaded 2-core CI machine: a check times out only after
	// 400 ms, and the waits below are in units of the interval.
	const interval, fall, rise = 500 * time.Millisecond, 2, 2
	e := setup(t, opts{extra: []string{fmt.Sprintf(
		"--check=-t 172.16.1.100:80 http path=/ status=200-299 interval=%v timeout=400ms fall=%d rise=%d on-fail=inhibit",
		interval, fall, rise)}})
	c := e.httpClient()
	c.Timeout = 3 * time.Second
	p := startProber(c, "http://172.16.1.100/")
	defer p.halt()
	time.Sleep(500 * time.Millisecond)
	// Detection takes fall × interval; allow for a check in flight and
	// for the requests already sent to the server when it went away.
	settle := time.Duration(fall+2)*interval + time.Second
	weight := func(rsAddr string) string {
		out := e.adm("-L", "-n")
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "-> "+rsAddr+":8080") {
				return strings.Fields(l)[3]
			}
		}
		return "?"
	}
	waitWeight := func(rsAddr, want string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for weight(rsAddr) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s weight %s, want %s within %v:\n%s", rsAddr, weight(rsAddr), want, within, e.adm("-L", "-n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	checkOnly := func(from time.Time, want string) {
		t.Helper()
		ps := p.since(from)
		if len(ps) < 5 {
			t.Fatalf("only %d requests since %v", len(ps), from)
		}
		for _, pr := range ps {
			if pr.from != want {
				t.Errorf("request at +%v: from %q err %q; want every request answered by %s", pr.at.Sub(p.start), pr.from, pr.err, want)
				return
			}
		}
	}

	// RS1 stops listening on IPv4.
	rs1 := e.rss[0]
	rs1.httpSrvs[0].Close()
	down := time.Now()
	waitWeight("172.16.1.5", "0", settle)
	t.Logf("RS1 inhibited %v after it stopped", time.Since(down))
	time.Sleep(settle)
	after := time.Now()
	time.Sleep(time.Second)
	checkOnly(after, "RS2")

	// It comes back.
	e.serveHTTP(rs1, "tcp4")
	waitWeight("172.16.1.5", "1", time.Duration(rise+2)*interval+time.Second)
	back := time.Now()
	time.Sleep(2 * time.Second)
	seen := map[string]int{}
	for _, pr := range p.since(back) {
		seen[pr.from]++
	}
	if seen["RS1"] == 0 || seen["RS2"] == 0 || seen[""] != 0 {
		t.Errorf("after RS1 came back: %v, want both servers and no failures", seen)
	}

	// RS2 answers 500: the HTTP check fails it.
	e.rss[1].fail.Store(true)
	waitWeight("172.16.1.6", "0", settle)
	time.Sleep(settle)
	after = time.Now()
	time.Sleep(time.Second)
	checkOnly(after, "RS1")
	e.rss[1].fail.Store(false)
	waitWeight("172.16.1.6", "1", time.Duration(rise+2)*interval+time.Second)
}

func TestHealth(t *testing.T) {
	inSandboxes(t, runHealth)
}
