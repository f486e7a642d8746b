//go:build linux

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/admin"
)

// WalkOptions controls Walk.
type WalkOptions struct {
	Self    string    // the tunvs executable
	Pause   bool      // wait for Enter before each step
	In      io.Reader // where Enter comes from
	Out     io.Writer
	Servers int
}

// A capture point of the walk.
type capPoint struct {
	host, dev string
	what      string
	cmd       *exec.Cmd
	mu        sync.Mutex
	pkts      []walkPkt
	ready     chan struct{}
	done      chan struct{}
	errOut    strings.Builder
}

type walkPkt struct {
	line     string
	out      bool
	src, dst netip.AddrPort
	flags    string
}

var capLine = regexp.MustCompile(`^\S+ (In |Out) IP (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]+)\]`)

func parseCapLine(l string) (walkPkt, bool) {
	m := capLine.FindStringSubmatch(l)
	if m == nil {
		return walkPkt{}, false
	}
	sp, _ := strconv.Atoi(m[3])
	dp, _ := strconv.Atoi(m[5])
	s, err1 := netip.ParseAddr(m[2])
	d, err2 := netip.ParseAddr(m[4])
	if err1 != nil || err2 != nil {
		return walkPkt{}, false
	}
	return walkPkt{line: l, out: m[1] == "Out", src: netip.AddrPortFrom(s, uint16(sp)), dst: netip.AddrPortFrom(d, uint16(dp)), flags: m[6]}, true
}

// Walk follows one connection from the client through the router and the
// director to a real server and back, as the article's packet walk does:
// it captures the SYN and the SYN-ACK on the client's interface, on both of
// the router's, on the director's port of the lab segment (the TAP or TUN
// device, whose kernel side sees every packet the director reads, before
// its NAT, and every packet it writes, after) and on the real servers'
// interfaces, makes one request, then shows each step with the packet as
// captured there and the director's tables.
func Walk(ctx context.Context, s *State, o WalkOptions) error {
	if _, err := os.Stat(filepath.Join(s.Dir, clusterMarker)); err == nil {
		return fmt.Errorf("walk: the walk follows the one-director lab, not the scale-out one (--directors); watch a director there with `tunvs lab capture %s %s`", HostLan, DirectorTAP(0))
	}
	if !s.Alive() || !s.Ready {
		return fmt.Errorf("%w (state in %s)", ErrNoLab, s.Dir)
	}
	d := activeDirector(s)
	caps := walkPoints(o.Servers, d.dev)
	cctx, cancelCaps := context.WithCancel(ctx)
	defer cancelCaps()
	for _, p := range caps {
		if err := p.start(cctx, s, o.Self); err != nil {
			return err
		}
	}
	if err := caps.waitReady(); err != nil {
		return err
	}
	req, err := walkRequest(ctx, s, o.Self, d.socket)
	if err != nil {
		return err
	}
	cancelCaps()
	for _, p := range caps {
		<-p.done
	}

	// The client's SYN names the connection.
	syn, ok := caps.find(HostClient, "eth0", true, func(x netip.AddrPort) bool { return x.Addr() == ClientAddr.Addr() }, anyAddr, true)
	if !ok {
		return errors.New("walk: the client's SYN was not captured")
	}
	c := walkConn{cip: syn.src, dst0: syn.dst, vip: netip.AddrPortFrom(VIP, 80), dev: d.dev}
	// Which real server got it: the one whose interface saw the SYN.
	for i := 0; i < o.Servers; i++ {
		if pk, ok := caps.find(RealServerHost(i), "eth0", false, addrIs(c.cip), anyAddr, true); ok {
			c.rs, c.rip = RealServerHost(i), pk.dst
		}
	}
	return printWalk(o, caps, walkSteps(c, req), c, req)
}

// walkDirector is the director the walk follows: its device on the lab
// segment and its control socket.
type walkDirector struct{ dev, socket string }

// activeDirector is the director that holds the VIP: the only one, or in
// the HA lab (--ha) the master while it runs (its priority is the higher,
// and it preempts), else the backup, which took over when it died.
func activeDirector(s *State) walkDirector {
	d := walkDirector{DirectorDev, SocketPath(s.Dir)}
	if _, err := os.Stat(BackupSocketPath(s.Dir)); err != nil {
		return d
	}
	if _, err := admin.Call(d.socket, admin.Request{Args: []string{"-L", "-n"}}); err != nil {
		return walkDirector{BackupDev, BackupSocketPath(s.Dir)}
	}
	return d
}

// walkPoints are the walk's capture points: the client, both sides of the
// router, the director's port on the lab segment (dev) and every real
// server.
func walkPoints(servers int, dev string) walkCaps {
	points := walkCaps{
		{host: HostClient, dev: "eth0", what: "the client's interface"},
		{host: HostRouter, dev: "eth0", what: "the router's public interface"},
		{host: HostRouter, dev: "eth1", what: "the router's lab-side interface"},
		{host: HostLan, dev: dev, what: "the director's port on the lab segment"},
	}
	for i := 0; i < servers; i++ {
		points = append(points, &capPoint{host: RealServerHost(i), dev: "eth0", what: "real server " + RealServerHost(i)})
	}
	return points
}

// start runs `tunvs lab capture` on the point's host and device and
// collects the SYNs and SYN-ACKs it prints until ctx is cancelled; ready
// closes when the capture listens (or has ended), done when it has ended.
func (p *capPoint) start(ctx context.Context, s *State, self string) error {
	argv, err := s.ExecArgv(p.host, []string{self, "lab", "capture", "--syn", "--port", "80", "--timeout", "20s", p.host, p.dev})
	if err != nil {
		return err
	}
	p.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	p.cmd.Env = s.ExecEnv()
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(syscall.SIGTERM) }
	p.cmd.WaitDelay = 3 * time.Second
	p.cmd.Stderr = &p.errOut
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.ready, p.done = make(chan struct{}), make(chan struct{})
	go p.collect(stdout)
	return nil
}

// collect reads the capture's output.
func (p *capPoint) collect(stdout io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(stdout)
	readied := false
	for sc.Scan() {
		l := sc.Text()
		if !readied && strings.HasPrefix(l, "listening on") {
			readied = true
			close(p.ready)
			continue
		}
		if pk, ok := parseCapLine(l); ok {
			p.mu.Lock()
			p.pkts = append(p.pkts, pk)
			p.mu.Unlock()
		}
	}
	if !readied {
		close(p.ready)
	}
	p.cmd.Wait()
}

// walkCaps are the capture points of one walk.
type walkCaps []*capPoint

// waitReady waits until every capture listens, and fails if one did not
// start or has already ended.
func (caps walkCaps) waitReady() error {
	for _, p := range caps {
		select {
		case <-p.ready:
		case <-time.After(15 * time.Second):
			return fmt.Errorf("walk: the capture on %s/%s did not start: %s", p.host, p.dev, p.errOut.String())
		}
		select {
		case <-p.done:
			return fmt.Errorf("walk: the capture on %s/%s failed: %s", p.host, p.dev, strings.TrimSpace(p.errOut.String()))
		default:
		}
	}
	return nil
}

// find returns the first packet captured on host/dev in the direction out
// whose addresses match and which is a SYN (syn) or a SYN-ACK.
func (caps walkCaps) find(host, dev string, out bool, src, dst func(netip.AddrPort) bool, syn bool) (walkPkt, bool) {
	for _, p := range caps {
		if p.host != host || p.dev != dev {
			continue
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pk := range p.pkts {
			if pk.out == out && src(pk.src) && dst(pk.dst) && (pk.flags == "S") == syn {
				return pk, true
			}
		}
	}
	return walkPkt{}, false
}

func addrIs(ap netip.AddrPort) func(netip.AddrPort) bool {
	return func(x netip.AddrPort) bool { return x == ap }
}

func anyAddr(netip.AddrPort) bool { return true }

// walkReq is what the walk's request returned: the answer, and the
// director's tables while it was open and after it closed.
type walkReq struct {
	body, tablesEst, tablesAfter string
}

// walkRequest makes one request from the client, kept open for a moment
// so that the table shows it.
func walkRequest(ctx context.Context, s *State, self, socket string) (walkReq, error) {
	var r walkReq
	url := "http://" + RouterPublic.Addr().String() + "/"
	if _, err := os.Stat(s.Dir + "/nft-unavailable"); err == nil {
		url = "http://" + VIP.String() + "/"
	}
	argv, err := s.ExecArgv(HostClient, []string{self, "lab", "fetch", "--hold", "1500ms", url})
	if err != nil {
		return r, err
	}
	fetch := exec.CommandContext(ctx, argv[0], argv[1:]...)
	fetch.Env = s.ExecEnv()
	var fetchErr strings.Builder
	fetch.Stderr = &fetchErr
	fout, err := fetch.StdoutPipe()
	if err != nil {
		return r, err
	}
	if err := fetch.Start(); err != nil {
		return r, err
	}
	r.body, _ = bufio.NewReader(fout).ReadString('\n')
	time.Sleep(100 * time.Millisecond)
	r.tablesEst = adm(socket, "-L", "-n") + "\n$ tunvsadm -Lnc\n" + adm(socket, "-L", "-n", "-c")
	io.Copy(io.Discard, fout)
	if err := fetch.Wait(); err != nil {
		return r, fmt.Errorf("walk: the request failed: %v: %s", err, strings.TrimSpace(fetchErr.String()))
	}
	time.Sleep(200 * time.Millisecond)
	r.tablesAfter = adm(socket, "-L", "-n", "-c")
	return r, nil
}

// walkConn is the walked connection's addresses: the client's, the one it
// sent to, the VIP, and the real server chosen and its address.
type walkConn struct {
	dev            string // the director's device on the lab segment
	cip, dst0, vip netip.AddrPort
	rs             string
	rip            netip.AddrPort
}

// walkAt is a packet a step expects on one capture point.
type walkAt struct {
	host, dev string
	out       bool
	src, dst  netip.AddrPort
	syn       bool
	note      string
}

// walkStep is one step of the article's walk.
type walkStep struct {
	title, text string
	at          []walkAt
	tables      string
}

// walkSteps are the article's steps for the connection c.
func walkSteps(c walkConn, req walkReq) []walkStep {
	cip, dst0, vip, rs, rip, dev := c.cip, c.dst0, c.vip, c.rs, c.rip, c.dev
	return []walkStep{
		{title: "The client sends a SYN to the router's public address",
			text: "The client knows only 10.0.0.200, the lab's \"public\" address.",
			at:   []walkAt{{HostClient, "eth0", true, cip, dst0, true, "leaves the client"}}},
		{title: "The router maps its port 80 to the VIP (nftables DNAT) and forwards",
			text: "Kernel NAT, in the router: only the destination changes; the client's address stays.",
			at: []walkAt{{HostRouter, "eth0", false, cip, dst0, true, "arrives at the router"},
				{HostRouter, "eth1", true, cip, vip, true, "leaves the router for the VIP"}}},
		{title: "Client -> VIP:80 arrives at the director (article step 1)",
			text: "src CIP, dst VIP: this is the packet as the director reads it, before its NAT.",
			at:   []walkAt{{HostLan, dev, true, cip, vip, true, "into the director"}}},
		{title: "VIP:80 is a virtual service: the scheduler picks a real server, DNAT (steps 2 and 3)",
			text:   fmt.Sprintf("The director records the connection and rewrites the destination to %s.", rip),
			at:     []walkAt{{HostLan, dev, false, cip, rip, true, "out of the director, after DNAT"}},
			tables: "$ tunvsadm -L -n\n" + req.tablesEst},
		{title: "The packet reaches the real server: src CIP, dst RIP (step 4)",
			text: "The real server sees the client's own address.",
			at:   []walkAt{{rs, "eth0", false, cip, rip, true, "arrives at " + rs}}},
		{title: "The real server answers via its gateway, the VIP: the director (step 5)",
			text: "src RIP, dst CIP: as the director reads it, before SNAT.",
			at: []walkAt{{rs, "eth0", true, rip, cip, false, "leaves " + rs},
				{HostLan, dev, true, rip, cip, false, "into the director, before SNAT"}}},
		{title: "SNAT: the director finds the connection, rewrites the source to VIP:80 (step 6)",
			text: "The reply now comes from the address the router sent to.",
			at: []walkAt{{HostLan, dev, false, vip, cip, false, "out of the director, after SNAT"},
				{HostRouter, "eth1", false, vip, cip, false, "arrives at the router"}}},
		{title: "The router undoes its DNAT; the client sees the reply from 10.0.0.200:80",
			text: "The connection is complete: the client never saw the VIP or the real server.",
			at: []walkAt{{HostRouter, "eth0", true, dst0, cip, false, "leaves the router"},
				{HostClient, "eth0", false, dst0, cip, false, "arrives at the client"}},
			tables: "$ tunvsadm -Lnc        (after the client closed)\n" + req.tablesAfter},
	}
}

// printWalk shows the steps with the packets captured for each, pausing
// for Enter if asked, and fails if a packet was not where it should be.
func printWalk(o WalkOptions, caps walkCaps, steps []walkStep, c walkConn, req walkReq) error {
	w := o.Out
	fmt.Fprintf(w, "The packet walk: one HTTP request from the client to http://%s/ (answer: %s)\n", c.dst0.Addr(), strings.TrimSpace(req.body))
	fmt.Fprintf(w, "Captured SYN and SYN-ACK on: client/eth0, router/eth0, router/eth1, lan/%s (the director's port), rs*/eth0.\n", c.dev)
	fmt.Fprintf(w, "On lan/%s, \"Out\" is the bridge sending to the director (what the director reads, before its NAT)\n", c.dev)
	fmt.Fprintf(w, "and \"In\" is what the director wrote (after its NAT).\n")
	missing := 0
	rd := bufio.NewReader(o.In)
	for i, st := range steps {
		if o.Pause {
			fmt.Fprintf(w, "\n[Enter for the next step] ")
			if _, err := rd.ReadString('\n'); err != nil && o.In != nil {
				o.Pause = false
			}
		}
		fmt.Fprintf(w, "\nStep %d: %s\n  %s\n", i+1, st.title, st.text)
		for _, a := range st.at {
			pk, ok := caps.find(a.host, a.dev, a.out, addrIs(a.src), addrIs(a.dst), a.syn)
			label := fmt.Sprintf("%s/%s", a.host, a.dev)
			if !ok {
				missing++
				kind := "SYN-ACK"
				if a.syn {
					kind = "SYN"
				}
				fmt.Fprintf(w, "  %-14s NOT CAPTURED: %s %s > %s (%s)\n", label, kind, a.src, a.dst, a.note)
				continue
			}
			fmt.Fprintf(w, "  %-14s %s   <- %s\n", label, pk.line, a.note)
		}
		if st.tables != "" {
			fmt.Fprintf(w, "\n%s", indent(st.tables, "  "))
		}
	}
	if missing > 0 {
		return fmt.Errorf("walk: %d packets were not where they should be", missing)
	}
	return nil
}

func indent(s, p string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(p + l)
		}
	}
	return b.String()
}

func adm(socket string, args ...string) string {
	resp, err := admin.Call(socket, admin.Request{Args: args})
	if err != nil {
		return "(tunvsadm: " + err.Error() + ")\n"
	}
	if resp.Error != "" {
		return resp.Output + resp.Error + "\n"
	}
	return resp.Output
}
