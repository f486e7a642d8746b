//go:build linux

package e2e

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestTAPOneArmed is the article's topology with real kernels around a
// director on TAP devices: the client behind a router, the router and the
// real server on a bridge, and the director one-armed on that bridge with
// its VIP beside its DIP, so that every packet comes in and goes out of
// the same TAP (hairpin). In the second case the client has a TAP of the
// director's to itself (two TAPs). The kernels' TSO streams, 8 MiB up and
// 4 MiB down, must cross whole: the metrics show super-packets NATed as
// one, none cut up, and the established flows on the bypass.
//
// hairpin-2queues is the one-armed director with two queues on its TAP
// (--tun-queues 2), where each direction of a connection goes back out
// by the other queue than it came in on and has a reader of its own.
//
// hairpin-ring and two-taps-ring read on io_uring (--tun-read=ring): the
// readers' writes, back to the device they read from or to the other,
// go out with their next round of reads, through the ring
// (tunvs_host_ring_writes_total). Where io_uring cannot be set up they
// are skipped, the director falling back to the poller.
//
// hairpin-standby has the TAP's second queue on standby (the default,
// --tun-standby) with a rate of 40 Mbit/s to pass: four downloads at once
// must attach it, and after a quiet spell the next requests detach it
// again, with every response whole and no read or write error.
func TestTAPOneArmed(t *testing.T) {
	for _, c := range []struct {
		name    string
		hairpin bool
		queues  int
		read    string
	}{{"hairpin", true, 1, ""}, {"two-taps", false, 1, ""}, {"hairpin-2queues", true, 2, ""},
		{"hairpin-ring", true, 1, "ring"}, {"two-taps-ring", false, 1, "ring"}, {"hairpin-standby", true, 1, "standby"}} {
		t.Run(c.name, func(t *testing.T) {
			inSandboxes(t, func(t *testing.T) { runTAPOneArmed(t, c.hairpin, c.queues, c.read) })
		})
	}
}

// oneArmed lays the hosts every one-armed TAP test starts from: client,
// lan (the real server's segment) and rs1 (rsV4, the one real server),
// and the daemon's control socket in a temporary directory named from
// prefix. must fails the test with the director's log.
func (e *env) oneArmed(t *testing.T, prefix string) (must func(error), lan *netns.Host, r *rs) {
	must = func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\ndirector log:\n%s", err, e.log)
		}
	}
	add := func(name string) *netns.Host {
		h, err := e.topo.AddHost(name)
		must(err)
		return h
	}
	e.client = add("client")
	lan = add("lan")
	r = &rs{name: "RS1", host: add("rs1"), v4: rsV4, clients: map[netip.Addr]int{}}
	e.rss = []*rs{r}
	dir, err := os.MkdirTemp("", prefix)
	must(err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "ctl.sock")
	return must, lan, r
}

// rsV4 is the real server of TestTAPOneArmed.
var rsV4 = netip.MustParseAddr("172.16.1.5")

func runTAPOneArmed(t *testing.T, hairpin bool, queues int, read string) {
	e := newEnv(t)
	topo := e.topo
	must, lan, r := e.oneArmed(t, "tunvs-e2e-tap-")
	args := []string{"run", "--socket", e.sock, "--log-level", "info", "--metrics=127.0.0.1:0",
		fmt.Sprintf("--tun-queues=%d", queues),
		"--rule", fmt.Sprintf("-A -t %s:80 -s rr", vip4),
		"--rule", fmt.Sprintf("-a -t %s:80 -r %s:8080 -m", vip4, rsV4)}
	switch read {
	case "standby":
		args = append(args, "--tun-standby-rate=40M")
	case "":
	default:
		args = append(args, "--tun-read="+read)
	}
	devs := []string{"tvlan"}
	if hairpin {
		args = append(args,
			fmt.Sprintf("--link=name=tvlan,kind=tap,addr=172.16.1.3/24,addr=%s/32", vip4),
			"--route=default,via=172.16.1.200")
	} else {
		devs = append(devs, "tvc")
		args = append(args,
			"--link=name=tvlan,kind=tap,addr=172.16.1.3/24",
			fmt.Sprintf("--link=name=tvc,kind=tap,addr=10.0.0.1/24,addr=%s/32", vip4))
	}
	e.startDaemon(args, devs...)

	// The segment: a bridge in "lan" with the real server, the
	// director's TAP and, hairpin, the router.
	ports := []string{"rs1", "tvlan"}
	must(topo.Veth(r.host, "eth0", lan, "rs1", 0))
	must(r.host.AddAddr("eth0", rsV4.String()+"/24"))
	// The real server's gateway is the director: the VIP, as in the
	// article, where it is on this segment; else the DIP.
	gw := "172.16.1.3"
	if hairpin {
		gw = vip4.String()
	}
	must(r.host.AddRoute("default", "via", gw))
	must(topo.Root().MoveLink("tvlan", lan))
	if hairpin {
		ports = append(ports, e.addRouter(lan, must))
	} else {
		must(topo.Root().MoveLink("tvc", e.client))
		must(e.client.LinkUp("tvc"))
		must(e.client.AddAddr("tvc", cip4.String()+"/24"))
		must(e.client.AddRoute("172.16.1.0/24", "via", "10.0.0.1"))
	}
	must(lan.Bridge("br0", ports...))
	e.startServers(r)

	m := e.streamsWhole("TAP")
	fast, delivered := metric(t, m, "tunvs_host_fast_path_total"), metric(t, m, "tunvs_host_delivered_total")
	werr, rerr, drops := metric(t, m, "tunvs_host_write_errors_total"), metric(t, m, "tunvs_host_read_errors_total"), metric(t, m, "tunvs_host_link_drops_total")
	t.Logf("bypassed: %d, through the stack: %d; write errors %d, read errors %d, link drops %d", fast, delivered, werr, rerr, drops)
	if werr+rerr+drops != 0 {
		t.Errorf("write errors %d, read errors %d, link drops %d: want none", werr, rerr, drops)
	}
	// Through the stack go ARP and each connection's first packets in
	// each direction while the next hop is being resolved; everything
	// else of 5 connections and 12 MiB takes the bypass.
	if fast == 0 || delivered > fast/10 {
		t.Errorf("%d packets bypassed and %d through the stack: want the established flows on the bypass", fast, delivered)
	}
	if read == "standby" {
		e.standbyAttaches()
	}
	if read == "ring" {
		enters, writes := metric(t, m, "tunvs_host_ring_enters_total"), metric(t, m, "tunvs_host_ring_writes_total")
		t.Logf("io_uring: %d enters, %d packets written through the ring", enters, writes)
		if enters == 0 {
			t.Skipf("io_uring unavailable here: the director fell back to the poller\n%s", e.log)
		}
		if writes < fast/2 {
			t.Errorf("on io_uring, but %d of %d bypassed packets written through the ring", writes, fast)
		}
	}
}

// addRouter puts a router between the client (cip4 on eth0) and the
// bridge host lan (172.16.1.200 on eth1, the router's end of a veth
// whose other end, "router", it returns for the bridge), as in the
// article's one-armed topology.
func (e *env) addRouter(lan *netns.Host, must func(error)) string {
	router, err := e.topo.AddHost("router")
	must(err)
	must(e.topo.Veth(e.client, "eth0", router, "eth0", 0))
	must(e.client.AddAddr("eth0", cip4.String()+"/24"))
	must(e.client.AddRoute("172.16.1.0/24", "via", "10.0.0.200"))
	must(router.AddAddr("eth0", "10.0.0.200/24"))
	must(e.topo.Veth(router, "eth1", lan, "router", 0))
	must(router.AddAddr("eth1", "172.16.1.200/24"))
	must(router.Forwarding(true))
	return "router"
}

// standbyAttaches makes four downloads at once, four times, which must
// attach the director's queue on standby (run with
// --tun-standby-rate=40M), then after five quiet seconds two more, which
// must detach it again, every
// response whole and no read or write error on the way.
func (e *env) standbyAttaches() {
	t := e.t
	t.Helper()
	c := e.httpClient()
	errs := make(chan error, 8)
	for range 4 {
		for range 4 {
			go func() {
				resp, err := c.Get("http://172.16.1.100/big")
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && len(b) != 1<<20 {
						err = fmt.Errorf("download got %d bytes", len(b))
					}
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	m := e.metrics()
	if a := metric(t, m, "tunvs_host_queue_attaches_total"); a == 0 {
		t.Fatalf("four downloads at once did not attach the queue on standby\n%s", e.log)
	}
	// The policy runs when the first queue's reader reads, on what was
	// read since it last did: the first read after the quiet spell also
	// counts the tail of the downloads, averaged over the spell, which
	// must stay under 40% of the rate (2 MB/s: at most the 8 MiB of the
	// last four downloads over 5 s). That read retires the queue and,
	// after a quiet second, detaches it; the next download, after the
	// drain, finds it detached if it was not yet.
	time.Sleep(5 * time.Second)
	for range 2 {
		if n := len(get(t, c, "http://172.16.1.100/big")); n != 1<<20 {
			t.Errorf("download after the quiet spell got %d bytes", n)
		}
		time.Sleep(300 * time.Millisecond)
	}
	m = e.metrics()
	a, d := metric(t, m, "tunvs_host_queue_attaches_total"), metric(t, m, "tunvs_host_queue_detaches_total")
	werr, rerr := metric(t, m, "tunvs_host_write_errors_total"), metric(t, m, "tunvs_host_read_errors_total")
	t.Logf("queue on standby: attached %d times, detached %d; write errors %d, read errors %d", a, d, werr, rerr)
	if d == 0 {
		t.Errorf("the queue on standby stayed attached after a quiet spell")
	}
	if werr+rerr != 0 {
		t.Errorf("write errors %d, read errors %d: want none", werr, rerr)
	}
}
