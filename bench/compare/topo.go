package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tunvs/tunvs/lab/netns"
)

// The lab's addresses (LAB.md, without the router): the client routes the
// real servers' network via the director.
const (
	vip    = "172.16.1.100"
	client = "10.0.0.10"
)

var rsAddrs = []string{"172.16.1.5", "172.16.1.6"}

// bed is one director's test bed: the hosts, and what must be stopped.
type bed struct {
	topo    *netns.Topology
	client  *netns.Host
	dir     *netns.Host
	rs      []*netns.Host
	procs   []*exec.Cmd
	outs    map[*exec.Cmd]*strings.Builder
	dirProc *exec.Cmd // the director's own process, for RSS and CPU
	// dirEnv and dirExtra are added to tunvs's environment and command
	// line (the flows workload: GOGC, --max-conns, --metrics).
	dirEnv, dirExtra []string
	// clientDev is the client's interface towards the director.
	clientDev string
}

// output is what a started process printed so far.
func (b *bed) output(p *exec.Cmd) string {
	if o := b.outs[p]; o != nil {
		return o.String()
	}
	return ""
}

func newBed() (*bed, error) {
	t, err := netns.New()
	if err != nil {
		return nil, err
	}
	b := &bed{topo: t}
	if b.client, err = t.AddHost("client"); err != nil {
		return nil, b.fail(err)
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

// kernelWiring joins the hosts with veths and a bridge, the director
// being a kernel router with the VIP on the servers' segment; a kernel
// director (nftables, IPVS, HAProxy) is then configured on top.
func (b *bed) kernelWiring() error {
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
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// tunvsWiring starts tunvs in the director host with one TUN per host and
// moves each TUN into its host, so tunvs is the only router (as in the
// end-to-end tests).
func (b *bed) tunvsWiring(bin string, extra ...string) error {
	args := []string{bin, "run", "--socket", "", "--log-level", "warn",
		"--link=name=tvc,addr=10.0.0.1/24,addr=" + vip + "/32",
		"--rule", "-A -t " + vip + ":80 -s rr",
		"--rule", "-A -t " + vip + ":5201 -s rr",
		"--rule", fmt.Sprintf("-A -u %s:%d -s rr", vip, udpPort),
		"--rule", "-a -t " + vip + ":5201 -r " + rsAddrs[0] + " -m",
	}
	for i, a := range rsAddrs {
		dev := fmt.Sprintf("tvr%d", i+1)
		args = append(args,
			"--link=name="+dev+",addr=172.16.1.3/32",
			"--route="+a+"/32,dev="+dev,
			"--rule", "-a -t "+vip+":80 -r "+a+" -m",
			"--rule", fmt.Sprintf("-a -u %s:%d -r %s -m", vip, udpPort, a))
	}
	args = append(args, extra...)
	args = append(args, b.dirExtra...)
	p, err := b.start(b.dir, b.dirEnv, args...)
	if err != nil {
		return err
	}
	b.dirProc = p
	devs := []string{"tvc", "tvr1", "tvr2"}
	hosts := append([]*netns.Host{b.client}, b.rs...)
	for i, dev := range devs {
		if err := netns.WaitLink(b.dir, dev, 10*time.Second); err != nil {
			return fmt.Errorf("tunvs did not create %s: %w", dev, err)
		}
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
	// Wait until the client reaches both through the director.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := b.client.Run(context.Background(), "curl", "-s", "-m", "2", "http://"+vip+"/")
		if err == nil && strings.HasPrefix(out, "RS") {
			return nil
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
