//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// The lab's addresses (LAB.md). On the TUN topology there is no router:
// the client routes the real servers' network via the director. On the
// article's topology the router stands between them, with these addresses.
const (
	vip          = "172.16.1.100"
	dip          = "172.16.1.3"
	client       = "10.0.0.10"
	routerPublic = "10.0.0.200"
	routerLab    = "172.16.1.200"
)

var rsAddrs = []string{"172.16.1.5", "172.16.1.6"}

// laddr is tunvs-fullnat's local address, on the real servers' network.
const laddr = "172.16.1.250"

// The topologies a director can be measured on (-topology).
const (
	// topoTUN is one point-to-point link per host, the director the
	// router between them: what tunvs on TUN devices needs.
	topoTUN = "tun"
	// topoArticle is the classic LVS-NAT article's (LAB.md): the director
	// one-armed on the real servers' segment, a bridge, with the VIP as
	// an alias beside the DIP, and a router in front of it.
	topoArticle = "article"
)

var topologyNames = []string{topoTUN, topoArticle}

// topologyTitle describes a topology for the table.
var topologyTitle = map[string]string{
	topoTUN: "TUN topology: client and real servers each on a point-to-point link to the director (tunvs: one TUN device per host)",
	topoArticle: "Article topology (LAB.md): client -> router -> director one-armed on the real servers' bridge, VIP an alias beside the DIP, " +
		"real servers' gateway the VIP (tunvs: one TAP device on the bridge)",
}

// bed is one director's test bed: the hosts, and what must be stopped.
type bed struct {
	// kind is topoTUN or topoArticle.
	kind   string
	topo   *netns.Topology
	client *netns.Host
	dir    *netns.Host
	rs     []*netns.Host
	// router and lan (the host of the bridge) exist on the article's
	// topology only.
	router, lan *netns.Host
	procs       []*exec.Cmd
	outs        map[*exec.Cmd]*strings.Builder
	dirProc     *exec.Cmd // the director's own process, for RSS and CPU
	// dirEnv and dirExtra are added to tunvs's environment and command
	// line (the flows workload: GOGC, --max-conns, --metrics).
	dirEnv, dirExtra []string
	// clientDev is the client's interface towards the director.
	clientDev string
	// pprof says the director serves its profiles on pprofAddr.
	pprof bool
	// tunvs says the director is tunvs, serving its metrics on
	// flowsMetrics.
	tunvs bool
	// fullNAT: tunvs's real servers are --fullnat, with laddr (owned by
	// the director on the real servers' side) as the local address.
	fullNAT bool
}

// output is what a started process printed so far.
func (b *bed) output(p *exec.Cmd) string {
	if o := b.outs[p]; o != nil {
		return o.String()
	}
	return ""
}

func newBed(kind string) (*bed, error) {
	t, err := netns.New()
	if err != nil {
		return nil, err
	}
	b := &bed{kind: kind, topo: t}
	if b.client, err = t.AddHost("client"); err != nil {
		return nil, b.fail(err)
	}
	if kind == topoArticle {
		if b.router, err = t.AddHost("router"); err != nil {
			return nil, b.fail(err)
		}
		if b.lan, err = t.AddHost("lan"); err != nil {
			return nil, b.fail(err)
		}
	}
	if b.dir, err = t.AddHost("director"); err != nil {
		return nil, b.fail(err)
	}
	for i := range rsAddrs {
		h, err := t.AddHost(fmt.Sprintf("rs%d", i+1))
		if err != nil {
			return nil, b.fail(err)
		}
		b.rs = append(b.rs, h)
	}
	return b, nil
}

func (b *bed) fail(err error) error {
	b.close()
	return err
}

func (b *bed) close() {
	for _, p := range b.procs {
		if p.Process != nil {
			p.Process.Signal(os.Interrupt)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range b.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			p.Process.Kill()
			<-done
		}
	}
	b.topo.Close()
}

// start runs a long-lived command in a host.
func (b *bed) start(h *netns.Host, env []string, args ...string) (*exec.Cmd, error) {
	cmd := h.Command(context.Background(), args...)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", h.Name(), args, err)
	}
	b.procs = append(b.procs, cmd)
	if b.outs == nil {
		b.outs = map[*exec.Cmd]*strings.Builder{}
	}
	b.outs[cmd] = &out
	return cmd, nil
}

// inOrder runs steps in order up to the first error.
func inOrder(steps ...func() error) error {
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// kernelWiring joins the hosts with veths (and a bridge) for a kernel
// director (nftables, IPVS, HAProxy), configured on top of it.
func (b *bed) kernelWiring() error {
	if b.kind == topoArticle {
		return b.articleKernelWiring()
	}
	return b.tunKernelWiring()
}

// tunKernelWiring is the TUN topology's shape for a kernel director: a
// veth to the client, a bridge of veths to the real servers with the VIP
// on it; the director is a kernel router.
func (b *bed) tunKernelWiring() error {
	t := b.topo
	steps := []func() error{
		func() error { return t.Veth(b.client, "eth0", b.dir, "c0", 0) },
		func() error { return b.client.AddAddr("eth0", client+"/24") },
		func() error { return b.client.AddRoute("172.16.1.0/24", "via", "10.0.0.1") },
		func() error { return b.dir.AddAddr("c0", "10.0.0.1/24") },
		func() error { return b.dir.Forwarding(true) },
	}
	b.clientDev = "eth0"
	var members []string
	for i, h := range b.rs {
		dev := fmt.Sprintf("r%d", i)
		members = append(members, dev)
		steps = append(steps,
			func() error { return t.Veth(h, "eth0", b.dir, dev, 0) },
			func() error { return h.AddAddr("eth0", rsAddrs[i]+"/24") },
			func() error { return h.AddRoute("default", "via", vip) },
		)
	}
	steps = append(steps,
		func() error { return b.dir.Bridge("br0", members...) },
		func() error { return b.dir.AddAddr("br0", vip+"/24") },
	)
	return inOrder(steps...)
}

// articleSegment builds what the article's topology has whatever the
// director: the client, the router (a kernel router, no NAT: the client
// addresses the VIP through it, so that no second NAT weighs on either
// director), and the bridge "br0" in host "lan" with the router and the
// real servers on it, their gateway the VIP as in LAB.md.
func (b *bed) articleSegment() error {
	t := b.topo
	b.clientDev = "eth0"
	steps := []func() error{
		func() error { return t.Veth(b.client, "eth0", b.router, "eth0", 0) },
		func() error { return b.client.AddAddr("eth0", client+"/24") },
		func() error { return b.client.AddRoute("172.16.1.0/24", "via", routerPublic) },
		func() error { return b.router.AddAddr("eth0", routerPublic+"/24") },
		func() error { return t.Veth(b.router, "eth1", b.lan, "router", 0) },
		func() error { return b.router.AddAddr("eth1", routerLab+"/24") },
		func() error { return b.router.Forwarding(true) },
	}
	ports := []string{"router"}
	for i, h := range b.rs {
		port := fmt.Sprintf("rs%d", i+1)
		ports = append(ports, port)
		steps = append(steps,
			func() error { return t.Veth(h, "eth0", b.lan, port, 0) },
			func() error { return h.AddAddr("eth0", rsAddrs[i]+"/24") },
			func() error { return h.AddRoute("default", "via", vip) },
		)
	}
	steps = append(steps, func() error { return b.lan.Bridge("br0", ports...) })
	return inOrder(steps...)
}

// articleKernelWiring puts a kernel director one-armed on the bridge: one
// veth, the DIP and the VIP as an alias on it (the DIP first, so that it
// is the primary address HAProxy's connections leave from), its default
// route via the router. Forwarding out of the interface a packet came in
// by would make the kernel send ICMP redirects (ip_forward() in
// net/ipv4/ip_forward.c, RTCF_DOREDIRECT): the LVS-NAT one-armed setup
// turns send_redirects off, on "all" and the device, since the kernel
// ORs the two (IN_DEV_TX_REDIRECTS).
func (b *bed) articleKernelWiring() error {
	return inOrder(
		b.articleSegment,
		func() error { return b.topo.Veth(b.dir, "eth0", b.lan, "dir", 0) },
		func() error { return b.lan.IP("link", "set", "dev", "dir", "master", "br0") },
		func() error { return b.dir.AddAddr("eth0", dip+"/24") },
		func() error { return b.dir.AddAddr("eth0", vip+"/24") },
		func() error { return b.dir.AddRoute("default", "via", routerLab) },
		func() error { return b.dir.Forwarding(true) },
		func() error { return b.dir.Sysctl("net/ipv4/conf/all/send_redirects", "0") },
		func() error { return b.dir.Sysctl("net/ipv4/conf/eth0/send_redirects", "0") },
	)
}

// tunvsRules are the director's rules on either topology: HTTP over
// both real servers, iperf3 to the first, UDP over both; masqueraded, or
// full NAT from laddr.
func tunvsRules(fullNAT bool) []string {
	m := "-m"
	args := []string{
		"--rule", "-A -t " + vip + ":80 -s rr",
		"--rule", "-A -t " + vip + ":5201 -s rr",
		"--rule", fmt.Sprintf("-A -u %s:%d -s rr", vip, udpPort),
	}
	if fullNAT {
		m = "--fullnat"
		args = append(args,
			"--rule", "--add-laddr -t "+vip+":80 -z "+laddr,
			"--rule", "--add-laddr -t "+vip+":5201 -z "+laddr,
			"--rule", fmt.Sprintf("--add-laddr -u %s:%d -z %s", vip, udpPort, laddr))
	}
	args = append(args, "--rule", "-a -t "+vip+":5201 -r "+rsAddrs[0]+" "+m)
	for _, a := range rsAddrs {
		args = append(args,
			"--rule", "-a -t "+vip+":80 -r "+a+" "+m,
			"--rule", fmt.Sprintf("-a -u %s:%d -r %s %s", vip, udpPort, a, m))
	}
	return args
}

// laddrFlag is the link address tunvs-fullnat adds for laddr.
func (b *bed) laddrFlag() string {
	if b.fullNAT {
		return ",addr=" + laddr + "/32"
	}
	return ""
}

// tunvsWiring starts tunvs in the director host with extra on its command
// line, on the bed's topology.
func (b *bed) tunvsWiring(bin string, extra ...string) error {
	if b.kind == topoArticle {
		return b.articleTunvsWiring(bin, extra...)
	}
	return b.tunTunvsWiring(bin, extra...)
}

// startTunvs starts tunvs in the director host with links (its --link and
// --route flags) and waits for its devices devs.
func (b *bed) startTunvs(bin string, links, extra, devs []string) error {
	args := append([]string{bin, "run", "--socket", "", "--log-level", "warn"}, links...)
	args = append(args, tunvsRules(b.fullNAT)...)
	args = append(args, extra...)
	args = append(args, b.dirExtra...)
	if b.pprof {
		args = append(args, "--pprof="+pprofAddr)
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--metrics") }) {
		args = append(args, "--metrics="+flowsMetrics)
	}
	p, err := b.start(b.dir, b.dirEnv, args...)
	if err != nil {
		return err
	}
	b.dirProc, b.tunvs = p, true
	for _, dev := range devs {
		if err := netns.WaitLink(b.dir, dev, 10*time.Second); err != nil {
			return fmt.Errorf("tunvs did not create %s: %w; it said: %s", dev, err, b.output(p))
		}
	}
	// A device appears with its first queue; tunvs opens the others
	// (--tun-queues) by its name, in its own namespace, so the devices
	// move only once tunvs has them all: when it serves its metrics.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err := scrapeMetrics(b)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tunvs not serving its metrics on %s: %w; it said: %s", flowsMetrics, err, b.output(p))
		}
	}
}

// articleTunvsWiring is the article's segment with tunvs one-armed on it:
// one TAP device with the DIP and the VIP, which moves into the bridge's
// host and joins the bridge (tunvs keeps its descriptor), as `tunvs lab
// --netns` does by default.
func (b *bed) articleTunvsWiring(bin string, extra ...string) error {
	const dev = "tvd"
	if err := b.articleSegment(); err != nil {
		return err
	}
	links := []string{
		fmt.Sprintf("--link=name=%s,kind=tap,addr=%s/24,addr=%s/32%s", dev, dip, vip, b.laddrFlag()),
		"--route=default,via=" + routerLab,
	}
	if err := b.startTunvs(bin, links, extra, []string{dev}); err != nil {
		return err
	}
	return inOrder(
		func() error { return b.dir.MoveLink(dev, b.lan) },
		func() error { return b.lan.IP("link", "set", "dev", dev, "master", "br0") },
		func() error { return b.lan.LinkUp(dev) },
	)
}

// tunTunvsWiring starts tunvs in the director host with one TUN per host
// and moves each TUN into its host, so tunvs is the only router (as in the
// end-to-end tests).
func (b *bed) tunTunvsWiring(bin string, extra ...string) error {
	links := []string{"--link=name=tvc,addr=10.0.0.1/24,addr=" + vip + "/32"}
	for i, a := range rsAddrs {
		dev := fmt.Sprintf("tvr%d", i+1)
		links = append(links,
			"--link=name="+dev+",addr="+dip+"/32"+b.laddrFlag(),
			"--route="+a+"/32,dev="+dev)
	}
	devs := []string{"tvc", "tvr1", "tvr2"}
	if err := b.startTunvs(bin, links, extra, devs); err != nil {
		return err
	}
	hosts := append([]*netns.Host{b.client}, b.rs...)
	for i, dev := range devs {
		if err := b.dir.MoveLink(dev, hosts[i]); err != nil {
			return err
		}
		if err := hosts[i].LinkUp(dev); err != nil {
			return err
		}
	}
	b.clientDev = "tvc"
	if err := b.client.AddAddr("tvc", client+"/24"); err != nil {
		return err
	}
	if err := b.client.AddRoute("172.16.1.0/24", "dev", "tvc"); err != nil {
		return err
	}
	for i, h := range b.rs {
		dev := devs[i+1]
		if err := h.AddAddr(dev, rsAddrs[i]+"/24"); err != nil {
			return err
		}
		if err := h.AddRoute("default", "dev", dev); err != nil {
			return err
		}
	}
	return nil
}

// servers starts iperf3 on the first real server and the HTTP server on
// every real server.
func (b *bed) servers(self string) error {
	if _, err := b.start(b.rs[0], nil, "iperf3", "-s", "-p", "5201"); err != nil {
		return err
	}
	for i, h := range b.rs {
		if _, err := b.start(h, []string{envRole + "=http", fmt.Sprintf("TUNVS_COMPARE_NAME=RS%d", i+1)}, self); err != nil {
			return err
		}
	}
	// Wait until the client reaches both through the director, and
	// iperf3 listens: started in the background like the HTTP servers,
	// on a loaded machine it was not always listening yet when the
	// first workload (iperf3's) began.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := b.client.Run(context.Background(), "curl", "-s", "-m", "2", "http://"+vip+"/")
		if err == nil && strings.HasPrefix(out, "RS") {
			ls, lerr := b.rs[0].Run(context.Background(), "ss", "-Hltn", "sport = :5201")
			if lerr == nil && strings.Contains(ls, "5201") {
				return nil
			}
			err, out = lerr, "iperf3 not listening yet: "+ls
		}
		if time.Now().After(deadline) {
			msg := ""
			if b.dirProc != nil {
				msg = "; director said: " + b.output(b.dirProc)
			}
			return fmt.Errorf("director does not answer on %s:80: %v %s%s", vip, err, out, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
