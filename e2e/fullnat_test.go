//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The full-NAT local addresses: on the real servers' network, so that
// their connected route is the only one they need.
var (
	lad4 = netip.MustParseAddr("172.16.1.250")
	lad6 = netip.MustParseAddr("fd00:2::250")
)

// TestFullNAT: real servers with no route to the client network, behind
// a director on TUN devices, as root and as uid 65534. 1000 HTTP requests
// split as rr says and each real server sees the local address, never the
// client; a UDP echo; IPv6; a 1 MiB download over a smaller client MTU.
func TestFullNAT(t *testing.T) {
	inSandboxes(t, func(t *testing.T) {
		t.Run("director", runFullNAT)
		t.Run("download", runFullNATDownload)
	})
}

func runFullNAT(t *testing.T) {
	e := setup(t, opts{fullNAT: true})
	for _, r := range e.rss {
		if out, err := r.host.Run(context.Background(), "ip", "route", "get", cip4.String()); err == nil {
			t.Fatalf("%s has a route to the client: %s", r.name, out)
		}
	}
	c := e.httpClient()
	e.requestSplit(c, "http://172.16.1.100/", lad4, 1000)
	for _, r := range e.rss {
		r.mu.Lock()
		if n := r.clients[cip4]; n != 0 {
			t.Errorf("%s saw the client's address %d times", r.name, n)
		}
		r.mu.Unlock()
	}
	list := e.adm("-L", "-n")
	if !strings.Contains(list, "FullNat") {
		t.Errorf("-L -n does not show FullNat:\n%s", list)
	}
	laddr := e.adm("--get-laddr", "-t", "172.16.1.100:80")
	if !strings.Contains(laddr, lad4.String()) {
		t.Errorf("--get-laddr:\n%s", laddr)
	}
	e.drain(20 * time.Second)

	// UDP echo: 10 datagrams from 10 client sockets; the real server
	// answers the local address, the client hears the VIP.
	ucounts := e.udpEcho(10, 21000)
	if ucounts["RS1"] != 5 || ucounts["RS2"] != 5 {
		t.Errorf("UDP rr split %v, want 5/5", ucounts)
	}
	e.drain(20 * time.Second)

	// IPv6.
	e.requestSplit(c, "http://[fd00:100::100]/", lad6, 100)
	e.drain(20 * time.Second)
}

// A 1 MiB download to a client on a 1280-byte link that advertises a
// larger MSS: the director answers the servers' full-size segments with
// "fragmentation needed" quoting server -> local address, so each server
// lowers its path MTU to the local address (the only peer it knows).
func runFullNATDownload(t *testing.T) {
	e := setup(t, opts{fullNAT: true, clientMTU: 1280, clientAdvmss: true})
	c := e.httpClient()
	for range 2 {
		if n := len(get(t, c, "http://172.16.1.100/big")); n != 1<<20 {
			t.Errorf("download got %d bytes", n)
		}
	}
	for _, r := range e.rss {
		out, err := r.host.Run(context.Background(), "ip", "route", "get", lad4.String())
		if err != nil || !strings.Contains(out, "mtu 1280") {
			t.Errorf("%s learnt no path MTU for the local address (%v):\n%s", r.name, err, out)
		}
	}
}

// fullNATOneArmed starts the director one-armed on a TAP with the VIP
// and the local address lad4, with rules, on the real server's segment
// beside a router to the client; the real server has no route beyond its
// segment, none to the client's network nor via the director.
func (e *env) fullNATOneArmed(t *testing.T, prefix string, rules ...string) *rs {
	topo := e.topo
	must, lan, r := e.oneArmed(t, prefix)
	e.startDaemon(append([]string{"run", "--socket", e.sock, "--log-level", "info", "--metrics=127.0.0.1:0",
		fmt.Sprintf("--link=name=tvlan,kind=tap,addr=172.16.1.3/24,addr=%s/32,addr=%s/32", vip4, lad4),
		"--route=default,via=172.16.1.200"}, rules...), "tvlan")
	must(topo.Veth(r.host, "eth0", lan, "rs1", 0))
	must(r.host.AddAddr("eth0", rsV4.String()+"/24"))
	must(topo.Root().MoveLink("tvlan", lan))
	e.addRouter(lan, must)
	must(lan.Bridge("br0", "rs1", "tvlan", "router"))
	return r
}

// TestFullNATTAP: the director one-armed on a TAP, on the real server's
// segment beside a router to the client; the real server has no route
// beyond its segment, none to the client's network. The director owns
// the local address on the TAP (it answers ARP for it). Requests
// succeed, the server sees the local address, and the kernels' TSO
// streams cross whole through the full-NAT rewrite.
func TestFullNATTAP(t *testing.T) {
	inSandboxes(t, runFullNATTAP)
}

func runFullNATTAP(t *testing.T) {
	e := newEnv(t)
	r := e.fullNATOneArmed(t, "tunvs-e2e-fnat-",
		"--rule", fmt.Sprintf("-A -t %s:80 -s rr", vip4),
		"--rule", fmt.Sprintf("--add-laddr -t %s:80 -z %s", vip4, lad4),
		"--rule", fmt.Sprintf("-a -t %s:80 -r %s:8080 --fullnat", vip4, rsV4))
	e.startServers(r)
	if out, err := r.host.Run(context.Background(), "ip", "route", "get", cip4.String()); err == nil {
		t.Fatalf("the real server has a route to the client: %s", out)
	}

	c := e.httpClient()
	for range 100 {
		if got := get(t, c, "http://172.16.1.100/"); got != "RS1" {
			t.Fatalf("answer %q", got)
		}
	}
	r.mu.Lock()
	seen := r.clients[lad4]
	r.mu.Unlock()
	if seen != 100 {
		t.Errorf("the real server saw %v, want 100 requests from %v", r.clients, lad4)
	}
	m := e.streamsWhole("TAP")
	// The established full-NAT flows take the bypass, as masqueraded
	// ones do (TestTAPOneArmed).
	fast, delivered := metric(t, m, "tunvs_host_fast_path_total"), metric(t, m, "tunvs_host_delivered_total")
	t.Logf("bypassed: %d, through the stack: %d", fast, delivered)
	if fast == 0 || delivered > fast/10 {
		t.Errorf("%d packets bypassed and %d through the stack: want the established flows on the bypass", fast, delivered)
	}
}
