//go:build linux

package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestSynProxySilentServer: services where the server speaks first (a
// banner on accept, as SMTP's), behind the SYN proxy, whose client sends
// nothing after its handshake with the director, so that only the
// director's own timer can resend a lost SYN (nat/synretry.go). The real
// servers' nftables drop the director's first SYN of each connection to
// port 2525: the banner still comes, after the timer's second SYN. On
// port 2526 they drop every SYN: after its three retries the director
// resets the client, which sees ECONNRESET. As root and as uid 65534.
func TestSynProxySilentServer(t *testing.T) {
	if _, err := lookTool("nft"); err != nil {
		netns.Unavailable(t, "the test needs nft (Debian's nftables): %v", err)
	}
	inSandboxes(t, runSynProxySilentServer)
}

func runSynProxySilentServer(t *testing.T) {
	e := setup(t, opts{extra: []string{"--metrics=127.0.0.1:0", "--sysctl", "synproxy=2"}})
	for _, port := range []int{2525, 2526} {
		e.adm("-A", "-t", fmt.Sprintf("%s:%d", vip4, port), "-s", "rr")
		for _, r := range e.rss {
			e.adm("-a", "-t", fmt.Sprintf("%s:%d", vip4, port), "-r", fmt.Sprintf("%s:%d", r.v4, port), "-m")
		}
	}
	for _, r := range e.rss {
		for _, port := range []int{2525, 2526} {
			var ln net.Listener
			if err := r.host.Do(func() (err error) {
				ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func(name string) {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "220 %s\r\n", name)
					c.Close()
				}
			}(r.name)
		}
		e.nft(r.host, `table inet pp {
	set seen {
		type ipv4_addr . inet_service
		flags dynamic,timeout
		timeout 1m
	}
	chain in {
		type filter hook input priority 0;
		tcp dport 2525 tcp flags & (syn|ack) == syn ip saddr . tcp sport != @seen add @seen { ip saddr . tcp sport } counter drop
		tcp dport 2526 tcp flags & (syn|ack) == syn counter drop
	}
}`)
	}
	dial := func(port int) net.Conn {
		var c net.Conn
		if err := e.client.Do(func() (err error) {
			// No keep-alive probes: each would resend the SYN too
			// (a client's segment, spClientPending).
			d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
			c, err = d.Dial("tcp4", netip.AddrPortFrom(vip4, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	const n = 4
	for i := range n {
		c := dial(2525)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(b) < 4 || string(b[:4]) != "220 " {
			t.Fatalf("connection %d: banner %q, %v", i, b, err)
		}
	}
	c := dial(2526)
	c.SetDeadline(time.Now().Add(40 * time.Second))
	start := time.Now()
	b, err := io.ReadAll(c)
	c.Close()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("unanswered server: read %q, %v; want a reset", b, err)
	}
	drops := 0
	for _, r := range e.rss {
		drops += nftDrops(t, r.host, "in")
	}
	m := e.metrics()
	ev := func(name string) uint64 {
		return metric(t, m, fmt.Sprintf(`tunvs_synproxy_total{event="%s"}`, name))
	}
	t.Logf("%d banners after a lost SYN each; the unanswered connection reset after %.1f s; real servers dropped %d SYNs; syn_resent %d, rs_timeout %d",
		n, time.Since(start).Seconds(), drops, ev("syn_resent"), ev("rs_timeout"))
	if ev("syn_resent") != n+3 || ev("rs_timeout") != 1 || drops != n+4 {
		t.Errorf("syn_resent %d (want %d), rs_timeout %d (want 1), SYNs dropped %d (want %d)", ev("syn_resent"), n+3, ev("rs_timeout"), drops, n+4)
	}
}
