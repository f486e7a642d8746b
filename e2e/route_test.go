//go:build linux

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRouteOneArmed is LVS-DR with real kernels: the client behind a
// router, the router, two real servers and a one-armed director (a TAP)
// on one bridge. The real servers hold the VIP on lo, answer no ARP for
// it (arp_ignore=1, arp_announce=2) and route to the client by the
// router, not the director: the director sees only the client's half of
// each connection, forwards it unchanged to the chosen real server's MAC,
// and rr still splits the requests evenly; the servers see the client's
// own address.
func TestRouteOneArmed(t *testing.T) {
	inSandboxes(t, runRouteOneArmed)
}

var rs2V4 = netip.MustParseAddr("172.16.1.6")

func runRouteOneArmed(t *testing.T) {
	e := newEnv(t)
	topo := e.topo
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\ndirector log:\n%s", err, e.log)
		}
	}
	dir, err := os.MkdirTemp("", "tunvs-e2e-dr-")
	must(err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "ctl.sock")
	// -g makes the real server's port the service's: the servers listen
	// on 8080, so the service does too.
	svc := fmt.Sprintf("%s:8080", vip4)
	e.startDaemon([]string{"run", "--socket", e.sock, "--log-level", "info", "--metrics=127.0.0.1:0",
		fmt.Sprintf("--link=name=tvlan,kind=tap,addr=172.16.1.3/24,addr=%s/32", vip4),
		"--route=default,via=172.16.1.200",
		"--rule", "-A -t " + svc + " -s rr",
		"--rule", fmt.Sprintf("-a -t %s -r %s -g", svc, rsV4),
		"--rule", fmt.Sprintf("-a -t %s -r %s -g", svc, rs2V4)}, "tvlan")

	e.client, err = topo.AddHost("client")
	must(err)
	lan, err := topo.AddHost("lan")
	must(err)
	ports := []string{"tvlan", "router"}
	for i, a := range []netip.Addr{rsV4, rs2V4} {
		h, err := topo.AddHost(fmt.Sprintf("rs%d", i+1))
		must(err)
		r := &rs{name: fmt.Sprintf("RS%d", i+1), host: h, v4: a, clients: map[netip.Addr]int{}}
		e.rss = append(e.rss, r)
		port := fmt.Sprintf("rs%d", i+1)
		must(topo.Veth(h, "eth0", lan, port, 0))
		ports = append(ports, port)
		// The LVS-DR real server: the VIP on lo, no ARP for it, its
		// own route to the clients.
		must(h.Sysctl("net.ipv4.conf.all.arp_ignore", "1"))
		must(h.Sysctl("net.ipv4.conf.all.arp_announce", "2"))
		must(h.AddAddr("lo", vip4.String()+"/32"))
		must(h.AddAddr("eth0", a.String()+"/24"))
		must(h.AddRoute("default", "via", "172.16.1.200"))
	}
	must(topo.Root().MoveLink("tvlan", lan))
	e.addRouter(lan, must)
	must(lan.Bridge("br0", ports...))
	for _, r := range e.rss {
		e.startServers(r)
	}

	c := e.httpClient()
	const n = 10
	e.requestSplit(c, "http://"+svc+"/", cip4, n)

	list := e.adm("-L", "-n")
	for _, a := range []netip.Addr{rsV4, rs2V4} {
		if !strings.Contains(list, fmt.Sprintf("  -> %-28s Route   1 ", a.String()+":8080")) {
			t.Errorf("-L -n does not list %v as Route:\n%s", a, list)
		}
	}
	// A -g real server off the TAP segment (behind the router) is
	// refused, with the reason, and nothing changes.
	out, err := exec.Command(bin("tunvsadm"), "--socket", e.sock, "-a", "-t", svc, "-r", cip4.String(), "-g").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "through a gateway") {
		t.Errorf("-g to a server behind the router: %v\n%s", err, out)
	}
	if after := e.adm("-L", "-n"); after != list {
		t.Errorf("a refused -g changed the table:\n%s", after)
	}
	m := e.metrics()
	fast, delivered, drops := metric(t, m, "tunvs_host_fast_path_total"), metric(t, m, "tunvs_host_delivered_total"), metric(t, m, "tunvs_host_route_drops_total")
	t.Logf("%s\nbypassed %d, delivered %d, route drops %d", list, fast, delivered, drops)
	if fast == 0 {
		t.Errorf("no packet sent by direct routing")
	}
}
