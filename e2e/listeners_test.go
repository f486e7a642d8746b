//go:build linux

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Descriptor exhaustion through the daemon's own listeners, with the
// daemon's descriptors bounded (prlimit --nofile 256):
//
//   - 2,000 idle TCP connections to the metrics server (it keeps at most
//     64): the process never runs out of descriptors, and the control
//     socket and a scrape answer meanwhile;
//   - 200 idle connections to the control socket (it keeps at most 16):
//     tunvsadm answers meanwhile.
//
// At the limit a new connection takes the place of one that has sent
// nothing (internal/guard), so idle clients cannot keep anyone out.
// Figures are printed (requests answered, descriptors open, the
// listeners' counters).
func TestListenerExhaustion(t *testing.T) {
	if os.Getenv(envReliability) == "" {
		t.Skip("set " + envReliability + "=1 (make reliability)")
	}
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	inSandboxes(t, runListenerExhaustion)
}

func runListenerExhaustion(t *testing.T) {
	e := setup(t, opts{extra: []string{"--metrics=127.0.0.1:0"}, nofile: 256})
	pid := e.daemon.Process.Pid
	fds := func() int {
		d, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(d)
	}
	mm := metricsAddr.FindStringSubmatch(e.log.String())
	if mm == nil {
		t.Fatalf("no metrics address in the log:\n%s", e.log)
	}
	fdBefore := fds()

	// The metrics server: 2,000 idle connections.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	ctlOK, ctlFail := 0, 0
	for i := range 2000 {
		c, err := net.DialTimeout("tcp", mm[1], 2*time.Second)
		if err == nil {
			idle = append(idle, c)
		}
		if i%100 == 0 {
			if e.admOK("-L", "-n") {
				ctlOK++
			} else {
				ctlFail++
			}
		}
	}
	time.Sleep(time.Second)
	fdDuring := fds()
	scrapes := 0
	for range 10 {
		if e.admOK("-L", "-n") {
			ctlOK++
		} else {
			ctlFail++
		}
		if e.metricsMaybe() != "" {
			scrapes++
		}
	}
	for _, c := range idle {
		c.Close()
	}
	idle = idle[:0]
	// A scrape answers as soon as the idle ones are gone.
	var m string
	deadline := time.Now().Add(10 * time.Second)
	for m == "" && time.Now().Before(deadline) {
		m = e.metricsMaybe()
		if m == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if m == "" {
		t.Fatal("the metrics server did not answer after the idle connections closed")
	}
	t.Logf("FIGURES metrics: 2000 idle connections, fds before=%d during=%d (limit 256), evicted=%s over_limit=%s, control answered %d/%d, scrapes answered %d/10",
		fdBefore, fdDuring, metricLine(m, `tunvs_listener_evicted_total{listener="metrics"}`),
		metricLine(m, `tunvs_listener_over_limit_total{listener="metrics"}`), ctlOK, ctlOK+ctlFail, scrapes)
	if scrapes != 10 {
		t.Errorf("%d of 10 scrapes answered while idle clients held the metrics server", scrapes)
	}
	if ctlFail != 0 {
		t.Errorf("the control socket failed %d of %d requests while the metrics server was flooded", ctlFail, ctlOK+ctlFail)
	}
	if fdDuring > fdBefore+64+8 {
		t.Errorf("%d descriptors open during the flood, %d before: the metrics server's limit did not hold", fdDuring, fdBefore)
	}

	// The control socket: 200 idle connections.
	for range 200 {
		c, err := net.DialTimeout("unix", e.sock, 2*time.Second)
		if err == nil {
			idle = append(idle, c)
		}
	}
	time.Sleep(time.Second)
	fdCtl := fds()
	ctlOK, ctlFail = 0, 0
	for range 10 {
		if e.admOK("-L", "-n") {
			ctlOK++
		} else {
			ctlFail++
		}
	}
	m = e.metrics()
	t.Logf("FIGURES control: 200 idle connections, fds during=%d, tunvsadm answered %d/%d, evicted=%s over_limit=%s",
		fdCtl, ctlOK, ctlOK+ctlFail, metricLine(m, `tunvs_listener_evicted_total{listener="control"}`),
		metricLine(m, `tunvs_listener_over_limit_total{listener="control"}`))
	if ctlFail != 0 {
		t.Errorf("the control socket failed %d of 10 requests while idle clients held it", ctlFail)
	}
	if fdCtl > fdBefore+16+8 {
		t.Errorf("%d descriptors open with idle control clients, %d before: the limit did not hold", fdCtl, fdBefore)
	}
	if e.daemon.ProcessState != nil {
		t.Fatalf("the director exited:\n%s", e.log)
	}
}

// metricsMaybe is a scrape, or "" if the server does not answer in 2 s.
func (e *env) metricsMaybe() string {
	mm := metricsAddr.FindStringSubmatch(e.log.String())
	if mm == nil {
		return ""
	}
	c := &http2Client{addr: mm[1]}
	return c.get()
}

// metricLine is a sample's value as written, "?" if absent.
func metricLine(scrape, name string) string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	if m := re.FindStringSubmatch(scrape); m != nil {
		return m[1]
	}
	return "?"
}

// http2Client is a bare HTTP/1.0 GET of /metrics with a 2 s deadline (no
// keep-alive, no pooled connections left behind).
type http2Client struct{ addr string }

func (h *http2Client) get() string {
	c, err := net.DialTimeout("tcp", h.addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\n\r\n")
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	s := b.String()
	if !strings.HasPrefix(s, "HTTP/1.0 200") && !strings.HasPrefix(s, "HTTP/1.1 200") {
		return ""
	}
	return s
}
