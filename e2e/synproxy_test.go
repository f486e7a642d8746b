//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestSynProxy runs real kernel TCP through the SYN proxy (synproxy=2:
// every SYN gets a cookie), masquerading and full NAT: new connections
// split between the servers, IPv6, a 1 MiB download and a 1 MiB upload
// (the sequence numbers, SACK blocks, timestamps and windows translated
// for the life of each), and the counters say that every connection went
// through a cookie. The client asks for ECN (tcp_ecn=1); RS1 refuses it
// (tcp_ecn=0), so the director takes the client's packets to it out of
// ECN, and RS2 agrees (Linux's default 2), so those are ECN end to end
// (nat/synecn.go).
func TestSynProxy(t *testing.T) {
	inSandboxes(t, func(t *testing.T) {
		for _, fn := range []bool{false, true} {
			name := "masq"
			if fn {
				name = "fullnat"
			}
			t.Run(name, func(t *testing.T) { runSynProxy(t, fn) })
		}
	})
}

func runSynProxy(t *testing.T, fullNAT bool) {
	e := setup(t, opts{fullNAT: fullNAT, extra: []string{"--metrics=127.0.0.1:0", "--sysctl", "synproxy=2"}})
	for h, v := range map[*netns.Host]string{e.client: "1", e.rss[0].host: "0"} {
		if err := h.Sysctl("net.ipv4.tcp_ecn", v); err != nil {
			t.Fatal(err)
		}
	}
	c := e.httpClient()
	const n = 200
	if fullNAT {
		// The servers see the local address: count the answers only.
		counts := map[string]int{}
		for range n {
			counts[get(t, c, "http://172.16.1.100/")]++
		}
		if counts["RS1"] != n/2 || counts["RS2"] != n/2 {
			t.Errorf("rr split %v", counts)
		}
	} else {
		e.requestSplit(c, "http://172.16.1.100/", cip4, n)
	}
	for range 10 {
		get(t, c, "http://[fd00:100::100]/")
	}
	for range 2 {
		if got := len(get(t, c, "http://172.16.1.100/big")); got != 1<<20 {
			t.Errorf("download got %d bytes", got)
		}
	}
	upload(t, c, bytes.Repeat([]byte("tunvs synproxy "), 70000))
	m := e.metrics()
	ev := func(name string) uint64 {
		return metric(t, m, fmt.Sprintf(`tunvs_synproxy_total{event="%s"}`, name))
	}
	conns := uint64(n + 10 + 2 + 1)
	t.Logf("cookies sent %d, cookie ACKs %d, bad %d, SYNs resent %d, data held %d, dropped %d, no room %d, out of ECN %d",
		ev("cookies_sent"), ev("cookie_acks"), ev("bad_cookie_acks"), ev("syn_resent"), ev("data_held"), ev("data_dropped"), ev("no_room"), ev("ecn_off"))
	if ev("cookie_acks") != conns || ev("cookies_sent") < conns {
		t.Errorf("%d connections, but %d cookies sent and %d cookie ACKs", conns, ev("cookies_sent"), ev("cookie_acks"))
	}
	// RS1's connections, about half, were taken out of ECN; RS2's not.
	if off := ev("ecn_off"); off < conns/4 || off > conns*3/4 {
		t.Errorf("%d of %d connections taken out of ECN: want about half (RS1's)", off, conns)
	}
	if ev("no_room") != 0 {
		t.Errorf("%d packets had no room to be rebuilt", ev("no_room"))
	}
}
