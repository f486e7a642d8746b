//go:build linux

// Command ipvsrun runs parity scenarios against kernel IPVS. It runs as
// root inside the parity VM (parity/vm/run.sh), where the kernel has ip_vs;
// every scenario gets fresh network namespaces (director, clients, one per
// real server), so IPVS state never carries from one scenario to the next.
// The results (the real server that answered each connection, each
// `ipvsadm -L -n`) go to -out as JSON, a []parity.Result.
//
// Usage: ipvsrun -out results.json scenario.txt...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/parity"
)

var (
	timeout = flag.Duration("timeout", 4*time.Second, "how long a client waits for an answer")
	verbose = flag.Bool("v", false, "log every command")
	nodeExp = flag.String("node-exporter", "", "Debian's prometheus-node-exporter binary, for node_exporter steps")
)

func main() {
	out := flag.String("out", "results.json", "where to write the results")
	syncDir := flag.String("sync", "", "instead of scenarios, capture a kernel sync master's datagrams into this directory (sync.go)")
	interopDir := flag.String("sync-interop", "", "instead of scenarios, run kernel and tunvs sync daemons against each other; listings into this directory (interop.go)")
	tunnelDir := flag.String("tunnel", "", "instead of scenarios, tunvs tunnelling (-i) to kernel real servers, as root and as uid 65534; reports into this directory (tunnel.go)")
	tunnelInner := flag.String("tunnel-inner", "", "the tunnelling run in a user namespace (started by -tunnel)")
	flag.Parse()
	if *tunnelDir != "" || *tunnelInner != "" {
		var err error
		if *tunnelDir != "" {
			err = tunnelRun(*tunnelDir)
		} else {
			err = tunnelE2E(*tunnelInner, true)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ipvsrun: tunnel:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *syncDir != "" || *interopDir != "" {
		// Both in one boot when both are asked for: the capture
		// first, on its own namespaces, then the interop run.
		rc := 0
		if *syncDir != "" {
			if err := syncGolden(*syncDir); err != nil {
				fmt.Fprintln(os.Stderr, "ipvsrun: sync:", err)
				rc = 1
			}
		}
		if *interopDir != "" {
			if err := syncInterop(*interopDir); err != nil {
				fmt.Fprintln(os.Stderr, "ipvsrun: sync interop:", err)
				rc = 1
			}
		}
		os.Exit(rc)
	}
	results := make([]parity.Result, len(flag.Args()))
	scs := make([]*parity.Scenario, len(flag.Args()))
	runOne := func(i int) {
		path := flag.Arg(i)
		t0 := time.Now()
		sc, err := parity.ParseFile(path)
		var r parity.Result
		if err != nil {
			r = parity.Result{Scenario: path, Error: err.Error()}
		} else {
			r = run(i, sc)
		}
		fmt.Printf("ipvsrun: %s: %d events in %v %s\n", r.Scenario, len(r.Events), time.Since(t0).Round(time.Millisecond), r.Error)
		results[i] = r
	}
	for i, path := range flag.Args() {
		scs[i], _ = parity.ParseFile(path)
	}
	// Scenarios of commands alone (no traffic, so no timing to disturb)
	// run side by side, one per CPU: under TCG every ipvsadm exec costs
	// a few hundred milliseconds. Then the others, one at a time.
	// Live checker scenarios (live.go) mostly wait on their daemons'
	// timers: more of them at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(runtime.NumCPU(), 1))
	liveSem := make(chan struct{}, 6)
	for i, sc := range scs {
		if sc != nil && !sc.NeedsNetwork() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := sem
				if sc.Live() {
					s = liveSem
				}
				s <- struct{}{}
				defer func() { <-s }()
				runOne(i)
			}()
		}
	}
	wg.Wait()
	for i, sc := range scs {
		if sc == nil || sc.NeedsNetwork() {
			runOne(i)
		}
	}
	failed := false
	for _, r := range results {
		if r.Error != "" {
			failed = true
		}
	}
	b, err := json.MarshalIndent(results, "", "  ")
	if err == nil {
		err = os.WriteFile(*out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipvsrun:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(2)
	}
}

// sh runs a command, failing with its output.
func sh(args ...string) (string, error) {
	if *verbose {
		fmt.Println("+", strings.Join(args, " "))
	}
	c := exec.Command(args[0], args[1:]...)
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// batch runs ip commands (each "ip [-n NS] ARGS...") as few `ip -batch`
// runs as it can: consecutive commands for the same namespace go together.
// Every exec costs a lot under TCG.
func batch(cmds [][]string) error {
	var ns string
	var lines []string
	flush := func() error {
		if len(lines) == 0 {
			return nil
		}
		args := []string{"ip"}
		if ns != "" {
			args = append(args, "-n", ns)
		}
		args = append(args, "-batch", "-")
		if *verbose {
			fmt.Println("+", strings.Join(args, " "), "<<", strings.Join(lines, "; "))
		}
		c := exec.Command(args[0], args[1:]...)
		c.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
		out, err := c.CombinedOutput()
		lines = lines[:0]
		if err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	for _, c := range cmds {
		if c[1] == "netns" {
			// Not in a batch: `ip netns add` switches ip itself into
			// the new namespace.
			if err := flush(); err != nil {
				return err
			}
			if _, err := sh(c...); err != nil {
				return err
			}
			continue
		}
		cns, rest := "", c[1:]
		if len(rest) >= 2 && rest[0] == "-n" {
			cns, rest = rest[1], rest[2:]
		}
		if cns != ns {
			if err := flush(); err != nil {
				return err
			}
			ns = cns
		}
		lines = append(lines, strings.Join(rest, " "))
	}
	return flush()
}

// shNS runs a command in network namespace ns: forked from a thread that
// entered ns (cheaper than `ip netns exec`, which also remounts /sys).
func shNS(ns string, args ...string) (out string, err error) {
	if e := inNS(ns, func() error {
		out, err = sh(args...)
		return nil
	}); e != nil {
		return "", e
	}
	return out, err
}

// inNS runs f on a thread that has entered network namespace ns; sockets f
// creates belong to ns for good. The thread is discarded afterwards.
func inNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func sysctl(ns, name, val string) error {
	return inNS(ns, func() error {
		return os.WriteFile("/proc/sys/"+strings.ReplaceAll(name, ".", "/"), []byte(val), 0o644)
	})
}

type world struct {
	dir, cli  string
	nss       []string
	closers   []io.Closer
	conns     map[netip.AddrPort]net.Conn
	listeners []net.Listener
	// live: the HTTP real servers and the two daemons of a live
	// checker scenario (live.go).
	live *liveWorld
}

func (w *world) teardown() {
	w.live.stop()
	for _, c := range w.conns {
		c.Close()
	}
	for _, c := range w.closers {
		c.Close()
	}
	for _, ns := range w.nss {
		sh("ip", "netns", "del", ns)
	}
}

// setup builds the namespaces for sc: see the package comment of parity.
func (w *world) setup(i int, sc *parity.Scenario) error {
	w.dir, w.cli = fmt.Sprintf("d%d", i), fmt.Sprintf("c%d", i)
	rs, vips := sc.RealServers()
	if !sc.NeedsNetwork() && !sc.Live() {
		// Commands only: a bare director namespace.
		w.nss = append(w.nss, w.dir)
		return batch([][]string{{"ip", "netns", "add", w.dir}, {"ip", "-n", w.dir, "link", "set", "lo", "up"}})
	}
	cmds := [][]string{
		{"ip", "netns", "add", w.dir},
		{"ip", "netns", "add", w.cli},
	}
	w.nss = append(w.nss, w.dir, w.cli)
	d, c := []string{"ip", "-n", w.dir}, []string{"ip", "-n", w.cli}
	cat := func(a []string, b ...string) []string { return append(append([]string{}, a...), b...) }
	cmds = append(cmds,
		cat(d, "link", "set", "lo", "up"),
		cat(c, "link", "set", "lo", "up"),
		cat(d, "link", "add", "cl", "type", "veth", "peer", "name", "eth0", "netns", w.cli),
		cat(d, "addr", "add", "10.0.0.1/24", "dev", "cl"),
		cat(d, "link", "set", "cl", "up"),
		cat(c, "addr", "add", "10.0.0.2/24", "dev", "eth0"),
		cat(c, "link", "set", "eth0", "up"),
		cat(c, "route", "add", "default", "via", "10.0.0.1"),
		cat(d, "link", "add", "br0", "type", "bridge"),
		cat(d, "addr", "add", "10.1.0.254/24", "dev", "br0"),
		cat(d, "link", "set", "br0", "up"),
	)
	seenV := map[netip.Addr]bool{}
	for _, v := range vips {
		if !seenV[v.Addr()] {
			seenV[v.Addr()] = true
			cmds = append(cmds, cat(d, "addr", "add", v.Addr().String()+"/32", "dev", "lo"))
		}
	}
	for _, a := range sc.Clients() {
		cmds = append(cmds,
			cat(c, "addr", "add", a.String()+"/32", "dev", "eth0"),
			cat(d, "route", "add", a.String()+"/32", "via", "10.0.0.2"))
	}
	rsNS := map[netip.Addr]string{}
	for _, r := range rs {
		if _, ok := rsNS[r.Addr()]; ok {
			continue
		}
		ns := fmt.Sprintf("r%d_%d", i, len(rsNS))
		rsNS[r.Addr()] = ns
		w.nss = append(w.nss, ns)
		port := fmt.Sprintf("p%d", len(rsNS))
		cmds = append(cmds,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			cat(d, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns),
			cat(d, "link", "set", port, "master", "br0", "up"),
			[]string{"ip", "-n", ns, "addr", "add", r.Addr().String() + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
			[]string{"ip", "-n", ns, "route", "add", "default", "via", "10.1.0.254"},
		)
	}
	// Namespaces first, then the director (which creates every veth),
	// the client, the real servers: few `ip -batch` runs.
	group := func(c []string) int {
		switch {
		case c[1] == "netns":
			return 0
		case c[2] == w.dir:
			return 1
		case c[2] == w.cli:
			return 2
		}
		return 3
	}
	sort.SliceStable(cmds, func(a, b int) bool { return group(cmds[a]) < group(cmds[b]) })
	if err := batch(cmds); err != nil {
		return err
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		// ip_vs_leave's ICMP port unreachable must not be rate limited,
		// or "no destination" would depend on timing.
		{"net.ipv4.icmp_ratelimit", "0"},
	} {
		if err := sysctl(w.dir, kv[0], kv[1]); err != nil {
			return err
		}
	}
	// Real servers: a TCP listener and a UDP socket on every addr:port,
	// answering with their own name.
	w.live = newLiveWorld(i, w.dir, rsNS)
	for _, r := range rs {
		if sc.IsServer(r) {
			// An HTTP real server of a live scenario (live.go).
			if err := w.live.listen(r); err != nil {
				return fmt.Errorf("real server %s: %w", r, err)
			}
			continue
		}
		name := r.String()
		err := inNS(rsNS[r.Addr()], func() error {
			l, err := net.Listen("tcp4", name)
			if err != nil {
				return err
			}
			w.closers = append(w.closers, l)
			go serveTCP(l, name)
			u, err := net.ListenPacket("udp4", name)
			if err != nil {
				return err
			}
			w.closers = append(w.closers, u)
			go serveUDP(u, name)
			return nil
		})
		if err != nil {
			return fmt.Errorf("real server %s: %w", name, err)
		}
	}
	return nil
}

// acceptEach serves every connection l accepts in a goroutine of its own,
// closing it after serve, until l is closed.
func acceptEach(l net.Listener, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

func serveTCP(l net.Listener, name string) {
	acceptEach(l, func(c net.Conn) {
		io.WriteString(c, name+"\n")
		io.Copy(io.Discard, c) // until the client closes
	})
}

func serveUDP(u net.PacketConn, name string) {
	buf := make([]byte, 1500)
	for {
		_, from, err := u.ReadFrom(buf)
		if err != nil {
			return
		}
		u.WriteTo([]byte(name+"\n"), from)
	}
}

func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return parity.Refused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return parity.Timeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return parity.Timeout
	}
	return "error: " + err.Error()
}

func reuse(_, _ string, rc syscall.RawConn) error {
	var serr error
	rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	return serr
}

// closeConn closes a TCP connection the orderly way: our FIN, the server's
// FIN after it, so IPVS has seen both before the next step.
func closeConn(c net.Conn) error {
	tc := c.(*net.TCPConn)
	if err := tc.CloseWrite(); err != nil {
		tc.Close()
		return err
	}
	tc.SetReadDeadline(time.Now().Add(*timeout))
	_, err := io.Copy(io.Discard, tc)
	tc.Close()
	return err
}

func (w *world) tcp(st parity.Step) (outcome, detail string) {
	var conn net.Conn
	err := inNS(w.cli, func() error {
		dl := net.Dialer{Timeout: *timeout, LocalAddr: net.TCPAddrFromAddrPort(st.Src), Control: reuse}
		c, err := dl.Dial("tcp4", st.Dst.String())
		conn = c
		return err
	})
	if err != nil {
		return classify(err), err.Error()
	}
	conn.SetReadDeadline(time.Now().Add(*timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return classify(err), err.Error()
	}
	if st.Hold {
		w.conns[st.Src] = conn
	} else if err := closeConn(conn); err != nil {
		detail = "close: " + err.Error()
	}
	return strings.TrimSpace(line), detail
}

// cmd runs ipvsadm in the director and records all it shows. ipvsadm is
// run by name so that its argv[0], which its messages print, is "ipvsadm".
func (w *world) cmd(st parity.Step) string {
	var out string
	err := inNS(w.dir, func() error {
		c := exec.Command("ipvsadm", st.Args...)
		var stdout, stderr strings.Builder
		c.Stdin = strings.NewReader(st.Stdin)
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		exit := 0
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			exit = ee.ExitCode()
		case err != nil:
			return err
		}
		out = parity.CmdOutcome(exit, stdout.String(), stderr.String())
		return nil
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return out
}

// keepalived runs Debian's keepalived (checkers only, in the foreground)
// in the director's namespace on the step's configuration, waits until
// the listing has services and has not changed for two seconds, lists,
// and stops it (keepalived then removes its services).
func (w *world) keepalived(i int, st parity.Step) (string, string) {
	dir := fmt.Sprintf("/tmp/keepalived-%d", i)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "error: " + err.Error(), ""
	}
	conf := dir + "/keepalived.conf"
	if err := os.WriteFile(conf, []byte(st.Stdin), 0o644); err != nil {
		return "error: " + err.Error(), ""
	}
	logText := func() string { b, _ := os.ReadFile(dir + "/log"); return string(b) }
	ka, err := startDaemon(w.dir, dir+"/log", "keepalived", keepalivedArgs(dir, conf)...)
	if err != nil {
		return "error: keepalived: " + err.Error(), ""
	}
	defer ka.stop(syscall.SIGTERM)
	last, since := "", time.Now()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		out, err := shNS(w.dir, "ipvsadm", "-L", "-n")
		if err != nil {
			return "error: ipvsadm: " + err.Error(), logText()
		}
		if out != last {
			last, since = out, time.Now()
			continue
		}
		if strings.Count(out, "\n") > 3 && time.Since(since) >= 2*time.Second {
			th, err := shNS(w.dir, "ipvsadm", "-L", "-n", "--thresholds")
			if err != nil {
				return "error: ipvsadm: " + err.Error(), logText()
			}
			tun, err := shNS(w.dir, "ipvsadm", "-L", "-n", "--tun-info")
			if err != nil {
				return "error: ipvsadm: " + err.Error(), logText()
			}
			return parity.KeepalivedOutcome(out, th, tun), logText()
		}
	}
	return "error: keepalived's services did not settle", last + logText()
}

// nodeExporter runs node_exporter with only its IPVS collector in the
// director's namespace (it reads /proc/net/ip_vs and ip_vs_stats of the
// namespace it runs in), fetches /metrics once with busybox wget from
// the same namespace, and keeps the node_ipvs_ series.
func (w *world) nodeExporter() (string, string) {
	if *nodeExp == "" {
		return parity.NodeExporterMissing, ""
	}
	const addr = "127.0.0.1:9100"
	// The kernel's totals in /proc/net/ip_vs_stats are summed from the
	// per-CPU counters by the rate estimator, every 2 s (ip_vs_est.c,
	// estimation_timer and ip_vs_read_cpu_stats); tunvs's are live. Wait
	// out one period so the kernel's include the traffic just sent.
	time.Sleep(2500 * time.Millisecond)
	var proc *exec.Cmd
	err := inNS(w.dir, func() error {
		proc = exec.Command(*nodeExp, "--collector.disable-defaults", "--collector.ipvs",
			"--web.listen-address="+addr, "--log.level=error")
		return proc.Start()
	})
	if err != nil {
		return "error: " + err.Error(), ""
	}
	defer func() {
		proc.Process.Kill()
		proc.Wait()
	}()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := shNS(w.dir, "busybox", "wget", "-q", "-O", "-", "http://"+addr+"/metrics")
		if err == nil {
			return parity.NodeIPVSLines(out), ""
		}
		last = err
	}
	return "error: node_exporter did not answer: " + last.Error(), ""
}

func (w *world) udp(st parity.Step) (outcome, detail string) {
	var conn *net.UDPConn
	err := inNS(w.cli, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(st.Src), net.UDPAddrFromAddrPort(st.Dst))
		conn = c
		return err
	})
	if err != nil {
		return "error: " + err.Error(), ""
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		return classify(err), err.Error()
	}
	conn.SetReadDeadline(time.Now().Add(*timeout))
	buf := make([]byte, 200)
	n, err := conn.Read(buf)
	if err != nil {
		return classify(err), err.Error()
	}
	return strings.TrimSpace(string(buf[:n])), ""
}

func run(i int, sc *parity.Scenario) (r parity.Result) {
	r.Scenario = sc.Name
	w := &world{conns: map[netip.AddrPort]net.Conn{}}
	defer w.teardown()
	t0 := time.Now()
	if err := w.setup(i, sc); err != nil {
		r.Error = "setup: " + err.Error()
		return r
	}
	r.SetupMs = time.Since(t0).Milliseconds()
	for _, st := range sc.Steps {
		ev := parity.Event{Line: st.Line, Step: st.String()}
		t0 := time.Now()
		switch st.Kind {
		case parity.StepIPVSAdm:
			_, err := shNS(w.dir, append([]string{"ipvsadm"}, st.Args...)...)
			ev.Outcome = "ok"
			if err != nil {
				ev.Outcome, ev.Detail = "error", err.Error()
			}
		case parity.StepCmd:
			ev.Outcome = w.cmd(st)
		case parity.StepNodeExporter:
			ev.Outcome, ev.Detail = w.nodeExporter()
		case parity.StepKeepalived:
			ev.Outcome, ev.Detail = w.keepalived(i, st)
		case parity.StepList:
			out, err := shNS(w.dir, "ipvsadm", "-L", "-n")
			ev.Outcome = out
			if err != nil {
				ev.Detail = err.Error()
			}
		case parity.StepTCP:
			ev.Outcome, ev.Detail = w.tcp(st)
		case parity.StepUDP:
			ev.Outcome, ev.Detail = w.udp(st)
		case parity.StepServer:
			ev.Outcome = "ok" // listening since setup
		case parity.StepLive, parity.StepSettle, parity.StepStop, parity.StepStart:
			ev = w.liveStep(st)
		case parity.StepClose:
			c, ok := w.conns[st.Src]
			if !ok {
				ev.Outcome = "error: no held connection from " + st.Src.String()
				break
			}
			delete(w.conns, st.Src)
			ev.Outcome = "ok"
			if err := closeConn(c); err != nil {
				ev.Detail = err.Error()
			}
		}
		ev.Ms = time.Since(t0).Milliseconds()
		r.Events = append(r.Events, ev)
	}
	return r
}
