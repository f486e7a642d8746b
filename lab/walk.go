package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/admin"
)

// Serve is `tunvs lab serve`: the real servers' HTTP server. It answers
// every request with name and a newline, and logs who asked (the client's
// own address: NAT mode keeps it).
func Serve(ctx context.Context, name, listen string, log io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			fmt.Fprintf(log, "%s %s %s %s\n", time.Now().Format("15:04:05.000"), r.RemoteAddr, r.Method, r.URL.Path)
			mu.Unlock()
			io.WriteString(w, name+"\n")
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Fetch is `tunvs lab fetch`: one HTTP/1.1 request on a new connection; it
// prints the body at once and keeps the connection open for hold before
// closing it, so that the director's table can be looked at while the
// connection is ESTABLISHED.
func Fetch(ctx context.Context, url string, hold time.Duration, w io.Writer) error {
	u, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return fmt.Errorf("fetch: %q: only http:// URLs", url)
	}
	hostport, path, _ := strings.Cut(u, "/")
	if !strings.Contains(hostport, ":") {
		hostport += ":80"
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", hostport)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10*time.Second + hold))
	fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tunvs-lab\r\n\r\n", path, hostport)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s (from %s, local %s)\n", strings.TrimSpace(string(b)), c.RemoteAddr(), c.LocalAddr())
	if f, ok := w.(interface{ Sync() error }); ok {
		f.Sync()
	}
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	return nil
}

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
	if !s.Alive() || !s.Ready {
		return fmt.Errorf("%w (state in %s)", ErrNoLab, s.Dir)
	}
	w := o.Out
	points := []*capPoint{
		{host: HostClient, dev: "eth0", what: "the client's interface"},
		{host: HostRouter, dev: "eth0", what: "the router's public interface"},
		{host: HostRouter, dev: "eth1", what: "the router's lab-side interface"},
		{host: HostLan, dev: DirectorDev, what: "the director's port on the lab segment"},
	}
	for i := 0; i < o.Servers; i++ {
		points = append(points, &capPoint{host: RealServerHost(i), dev: "eth0", what: "real server " + RealServerHost(i)})
	}
	cctx, cancelCaps := context.WithCancel(ctx)
	defer cancelCaps()
	for _, p := range points {
		argv, err := s.ExecArgv(p.host, []string{o.Self, "lab", "capture", "--syn", "--port", "80", "--timeout", "20s", p.host, p.dev})
		if err != nil {
			return err
		}
		p.cmd = exec.CommandContext(cctx, argv[0], argv[1:]...)
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
		go func(p *capPoint) {
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
		}(p)
	}
	for _, p := range points {
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

	// One request, kept open for a moment so that the table shows it.
	url := "http://" + RouterPublic.Addr().String() + "/"
	if _, err := os.Stat(s.Dir + "/nft-unavailable"); err == nil {
		url = "http://" + VIP.String() + "/"
	}
	argv, err := s.ExecArgv(HostClient, []string{o.Self, "lab", "fetch", "--hold", "1500ms", url})
	if err != nil {
		return err
	}
	fetch := exec.CommandContext(ctx, argv[0], argv[1:]...)
	fetch.Env = s.ExecEnv()
	var fetchErr strings.Builder
	fetch.Stderr = &fetchErr
	fout, err := fetch.StdoutPipe()
	if err != nil {
		return err
	}
	if err := fetch.Start(); err != nil {
		return err
	}
	body, _ := bufio.NewReader(fout).ReadString('\n')
	time.Sleep(100 * time.Millisecond)
	tablesEst := adm(s, "-L", "-n") + "\n$ tunvsadm -Lnc\n" + adm(s, "-L", "-n", "-c")
	io.Copy(io.Discard, fout)
	if err := fetch.Wait(); err != nil {
		return fmt.Errorf("walk: the request failed: %v: %s", err, strings.TrimSpace(fetchErr.String()))
	}
	time.Sleep(200 * time.Millisecond)
	tablesAfter := adm(s, "-L", "-n", "-c")
	cancelCaps()
	for _, p := range points {
		<-p.done
	}

	// The client's SYN names the connection.
	find := func(host, dev string, out bool, src, dst func(netip.AddrPort) bool, syn bool) (walkPkt, bool) {
		for _, p := range points {
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
	is := func(ap netip.AddrPort) func(netip.AddrPort) bool {
		return func(x netip.AddrPort) bool { return x == ap }
	}
	syn, ok := find(HostClient, "eth0", true, func(x netip.AddrPort) bool { return x.Addr() == ClientAddr.Addr() }, func(netip.AddrPort) bool { return true }, true)
	if !ok {
		return errors.New("walk: the client's SYN was not captured")
	}
	cip := syn.src
	dst0 := syn.dst
	vip := netip.AddrPortFrom(VIP, 80)
	// Which real server got it: the one whose interface saw the SYN.
	var rs string
	var rip netip.AddrPort
	for i := 0; i < o.Servers; i++ {
		if pk, ok := find(RealServerHost(i), "eth0", false, is(cip), func(netip.AddrPort) bool { return true }, true); ok {
			rs, rip = RealServerHost(i), pk.dst
		}
	}
	type at struct {
		host, dev string
		out       bool
		src, dst  netip.AddrPort
		syn       bool
		note      string
	}
	type step struct {
		title, text string
		at          []at
		tables      string
	}
	steps := []step{
		{title: "The client sends a SYN to the router's public address",
			text: "The client knows only 10.0.0.200, the lab's \"public\" address.",
			at:   []at{{HostClient, "eth0", true, cip, dst0, true, "leaves the client"}}},
		{title: "The router maps its port 80 to the VIP (nftables DNAT) and forwards",
			text: "Kernel NAT, in the router: only the destination changes; the client's address stays.",
			at: []at{{HostRouter, "eth0", false, cip, dst0, true, "arrives at the router"},
				{HostRouter, "eth1", true, cip, vip, true, "leaves the router for the VIP"}}},
		{title: "Client -> VIP:80 arrives at the director (article step 1)",
			text: "src CIP, dst VIP: this is the packet as the director reads it, before its NAT.",
			at:   []at{{HostLan, DirectorDev, true, cip, vip, true, "into the director"}}},
		{title: "VIP:80 is a virtual service: the scheduler picks a real server, DNAT (steps 2 and 3)",
			text:   fmt.Sprintf("The director records the connection and rewrites the destination to %s.", rip),
			at:     []at{{HostLan, DirectorDev, false, cip, rip, true, "out of the director, after DNAT"}},
			tables: "$ tunvsadm -L -n\n" + tablesEst},
		{title: "The packet reaches the real server: src CIP, dst RIP (step 4)",
			text: "The real server sees the client's own address.",
			at:   []at{{rs, "eth0", false, cip, rip, true, "arrives at " + rs}}},
		{title: "The real server answers via its gateway, the VIP: the director (step 5)",
			text: "src RIP, dst CIP: as the director reads it, before SNAT.",
			at: []at{{rs, "eth0", true, rip, cip, false, "leaves " + rs},
				{HostLan, DirectorDev, true, rip, cip, false, "into the director, before SNAT"}}},
		{title: "SNAT: the director finds the connection, rewrites the source to VIP:80 (step 6)",
			text: "The reply now comes from the address the router sent to.",
			at: []at{{HostLan, DirectorDev, false, vip, cip, false, "out of the director, after SNAT"},
				{HostRouter, "eth1", false, vip, cip, false, "arrives at the router"}}},
		{title: "The router undoes its DNAT; the client sees the reply from 10.0.0.200:80",
			text: "The connection is complete: the client never saw the VIP or the real server.",
			at: []at{{HostRouter, "eth0", true, dst0, cip, false, "leaves the router"},
				{HostClient, "eth0", false, dst0, cip, false, "arrives at the client"}},
			tables: "$ tunvsadm -Lnc        (after the client closed)\n" + tablesAfter},
	}
	fmt.Fprintf(w, "The packet walk: one HTTP request from the client to http://%s/ (answer: %s)\n", dst0.Addr(), strings.TrimSpace(body))
	fmt.Fprintf(w, "Captured SYN and SYN-ACK on: client/eth0, router/eth0, router/eth1, lan/%s (the director's port), rs*/eth0.\n", DirectorDev)
	fmt.Fprintf(w, "On lan/%s, \"Out\" is the bridge sending to the director (what the director reads, before its NAT)\n", DirectorDev)
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
			pk, ok := find(a.host, a.dev, a.out, is(a.src), is(a.dst), a.syn)
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

func adm(s *State, args ...string) string {
	resp, err := admin.Call(SocketPath(s.Dir), admin.Request{Args: args})
	if err != nil {
		return "(tunvsadm: " + err.Error() + ")\n"
	}
	if resp.Error != "" {
		return resp.Output + resp.Error + "\n"
	}
	return resp.Output
}
