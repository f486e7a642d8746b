//go:build linux

package lab

// The LVS-NAT lab on real network namespaces (`tunvs lab --netns`).
//
// Design. The outer process (the one the user started) creates a sandbox
// with internal/netns: a fresh user + network + mount + PID namespace, so no
// privilege and no setuid helper is needed. Inside, the same binary
// (NetnsInner) builds the article's topology, starts `tunvs run` as the
// director and the real servers' HTTP servers, writes the hosts' PIDs into
// the state directory and waits. Everything lives in the sandbox's PID
// namespace, whose first process is that inner process: killing it (what
// `tunvs lab down` does) ends every process and frees every namespace and
// device, whatever state the lab was in.
//
// The state directory (StateDir) holds:
//
//	sandbox     pid and start time of the sandbox's first process, and of
//	            unshare, as seen from outside (written by the outer process)
//	hosts       "name pid" lines, PIDs as seen inside the sandbox
//	ready       present once the lab answers
//	tunvs.sock  the director's control socket (tunvsadm --socket)
//	*.log       the director's, the real servers' and (detached) the lab's output
//
// `tunvs lab exec HOST -- CMD` enters the sandbox's user and mount
// namespaces (nsenter -U -m --preserve-credentials -t PID; the mount
// namespace is where /proc shows the sandbox's PIDs) and from there the
// host's network namespace (nsenter --net=/proc/PID/ns/net).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/procfs"
)

// ---------------------------------------------------------------------
// The inner half: runs inside the sandbox.

// NetnsInner builds the lab in the sandbox this process runs in, marks it
// ready in the state directory and keeps it until ctx ends. Progress and
// errors go to w.
func NetnsInner(ctx context.Context, cfg NetnsConfig, w io.Writer) (err error) {
	if err := cfg.defaults(); err != nil {
		return err
	}
	if cfg.Directors > 0 {
		return ClusterInner(ctx, cfg, w)
	}
	if err := netns.CheckFresh(); err != nil {
		return err
	}
	topo, err := netns.New()
	if err != nil {
		return err
	}
	var procs []*labProc
	reapCtx, stopReaping := context.WithCancel(context.Background())
	go reapOrphans(reapCtx)
	defer func() {
		// The daemon first, so that it closes its device cleanly.
		for i := len(procs) - 1; i >= 0; i-- {
			stopProc(procs[i])
		}
		topo.Close()
		stopReaping()
	}()
	must := func(e error) {
		if e != nil && err == nil {
			err = e
		}
	}
	hosts := map[string]*netns.Host{HostDir: topo.Root()}
	add := func(name string) *netns.Host {
		h, e := topo.AddHost(name)
		must(e)
		hosts[name] = h
		return h
	}
	client, router, lan := add(HostClient), add(HostRouter), add(HostLan)
	var rss []*netns.Host
	for i := range cfg.Servers {
		rss = append(rss, add(RealServerHost(i)))
	}
	if err != nil {
		return err
	}

	// Client and router, on the public network.
	must(topo.Veth(client, "eth0", router, "eth0", 0))
	must(client.AddAddr("eth0", ClientAddr.String()))
	must(router.AddAddr("eth0", RouterPublic.String()))
	// The lab segment: a bridge in "lan", with a port for the router,
	// each real server and (below) the director.
	must(topo.Veth(router, "eth1", lan, "router", 0))
	must(router.AddAddr("eth1", RouterLab.String()))
	must(router.Forwarding(true))
	ports := []string{"router"}
	for i, rs := range rss {
		port := RealServerHost(i)
		must(topo.Veth(rs, "eth0", lan, port, 0))
		ports = append(ports, port)
		must(rs.AddAddr("eth0", netip.PrefixFrom(RealServerAddr(i), 24).String()))
		// The real servers' gateway is the VIP, on the director; with
		// full NAT it is their own, the router.
		gw := VIP.String()
		switch {
		case cfg.FullNAT:
			gw = RouterLab.Addr().String()
		case cfg.HA:
			gw = HAGateway.String()
		}
		must(rs.AddRoute("default", "via", gw))
	}
	must(lan.Bridge(BridgeDev, ports...))
	if err != nil {
		return err
	}
	nftErr := routerDNAT(ctx, router)
	if nftErr != nil {
		fmt.Fprintf(w, "WARNING: the router cannot map %s:80 to the VIP with nftables: %v\n"+
			"         The client gets a route to %s via the router instead: use http://%s/ from the client.\n",
			RouterPublic.Addr(), nftErr, LabNet, VIP)
		must(client.AddRoute(LabNet.String(), "via", RouterPublic.Addr().String()))
		must(writeFileAtomic(filepath.Join(cfg.StateDir, "nft-unavailable"), []byte(nftErr.Error()+"\n")))
	}

	// The director.
	args := []string{"run", "--log-level", "info"}
	for _, r := range serverRules(cfg.Scheduler, cfg.Servers, cfg.FullNAT) {
		args = append(args, "--rule", r)
	}
	laddr := ""
	if cfg.FullNAT {
		laddr = fmt.Sprintf(",addr=%s/32", LocalAddr)
	}
	args = append(args, directorFlags(cfg)...)
	if cfg.HA {
		ps, err := startHA(ctx, cfg, topo, lan, args)
		procs = append(procs, ps...)
		if err != nil {
			return err
		}
	} else if cfg.Attach == "tap" {
		args = append(args, metricsFlag(0),
			fmt.Sprintf("--link=name=%s,kind=tap,addr=%s,addr=%s/32%s", DirectorDev, DIP, VIP, laddr),
			"--route=default,via="+RouterLab.Addr().String())
	} else {
		args = append(args, metricsFlag(0),
			fmt.Sprintf("--link=name=%s,kind=tun,addr=%s/32,addr=%s/32%s", DirectorDev, DIP.Addr(), VIP, laddr),
			fmt.Sprintf("--route=%s,dev=%s", LabNet, DirectorDev),
			fmt.Sprintf("--route=default,dev=%s", DirectorDev))
	}
	// dDone ends the lab when its director exits; not an HA pair's,
	// whose master is there to be killed.
	var dDone <-chan struct{}
	var dproc *labProc
	if !cfg.HA {
		var e error
		dproc, e = startLabDirector(ctx, cfg, topo, lan, "director", DirectorDev, SocketPath(cfg.StateDir), args)
		if dproc != nil {
			procs = append(procs, dproc)
			dDone = dproc.done
		}
		if e != nil {
			return e
		}
		if cfg.Attach == "tun" {
			must(tunAttach(lan, cfg.FullNAT))
		}
		if err != nil {
			return err
		}
	}

	// The real servers.
	for i, rs := range rss {
		f, e := os.OpenFile(filepath.Join(cfg.StateDir, RealServerHost(i)+".log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if e != nil {
			return e
		}
		defer f.Close()
		// In the host's own PID namespace: ps and kill in rs1 see
		// rs1's server alone.
		var c *exec.Cmd
		if cfg.RSCmd != "" {
			c = rs.Daemon(ctx, cfg.StateDir, "sh", "-c", cfg.RSCmd)
		} else {
			c = rs.Daemon(ctx, cfg.StateDir, cfg.Self, "lab", "serve", "--name", RealServerName(i), "--listen", ":80")
		}
		c.Env = append(os.Environ(), "TUNVS_LAB_NAME="+RealServerName(i), "TUNVS_LAB_ADDR="+RealServerAddr(i).String())
		c.Stdout, c.Stderr = f, f
		c.WaitDelay = 2 * time.Second
		if err := c.Start(); err != nil {
			return fmt.Errorf("lab: start the server on %s: %w", rs, err)
		}
		procs = append(procs, startedProc(c))
	}
	for i, rs := range rss {
		if err := waitListen(ctx, rs, netip.AddrPortFrom(RealServerAddr(i), 80), 15*time.Second); err != nil {
			return fmt.Errorf("lab: real server %s: %w (see %s)", rs, err, filepath.Join(cfg.StateDir, RealServerHost(i)+".log"))
		}
	}
	if err := waitSocket(ctx, SocketPath(cfg.StateDir), 10*time.Second); err != nil {
		return err
	}

	if err := labBin(cfg.StateDir, cfg.Self); err != nil {
		return err
	}
	// Tell the outer process (and exec) where everything is.
	var b strings.Builder
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %d\n", n, hosts[n].PID())
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, "hosts"), []byte(b.String())); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, "ready"), []byte(cfg.Attach+"\n")); err != nil {
		return err
	}

	select {
	case <-ctx.Done():
		return nil
	case <-dDone:
		return fmt.Errorf("lab: the director exited: %v (see %s)", dproc.err, filepath.Join(cfg.StateDir, "director.log"))
	}
}

// startLabDirector runs `tunvs run args --socket sock` as the director
// called name (its log name.log in the state directory, its PID in
// name.pid) and moves its device dev to the lab segment, a TAP onto the
// bridge. The process is returned even with an error, for the caller to
// stop.
func startLabDirector(ctx context.Context, cfg NetnsConfig, topo *netns.Topology, lan *netns.Host, name, dev, sock string, args []string) (*labProc, error) {
	args = append(args[:len(args):len(args)], "--socket", sock)
	os.Remove(sock)
	logPath := filepath.Join(cfg.StateDir, name+".log")
	dlog, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer dlog.Close()
	daemon := exec.CommandContext(ctx, cfg.Self, args...)
	daemon.Stdout, daemon.Stderr = dlog, dlog
	daemon.Cancel = func() error { return daemon.Process.Signal(syscall.SIGTERM) }
	daemon.WaitDelay = 5 * time.Second
	if err := daemon.Start(); err != nil {
		return nil, fmt.Errorf("lab: start the %s: %w", name, err)
	}
	p := startedProc(daemon)
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, name+".pid"), []byte(strconv.Itoa(daemon.Process.Pid)+"\n")); err != nil {
		return p, err
	}
	// The control socket listens once the links are set up: a device
	// moved sooner may still be replaced (its offloads refused, tunvs
	// opens it again plain), and the moved one is gone.
	if err := waitSocket(ctx, sock, 20*time.Second); err != nil {
		return p, fmt.Errorf("lab: the %s did not start (see %s): %w", name, logPath, err)
	}
	if err := netns.WaitLink(topo.Root(), dev, 10*time.Second); err != nil {
		return p, fmt.Errorf("lab: the %s did not create %s (see %s): %w", name, dev, logPath, err)
	}
	// The device moves to the lab segment's namespace; the director
	// keeps its file descriptor.
	if err := topo.Root().MoveLink(dev, lan); err != nil {
		return p, err
	}
	if cfg.Attach == "tap" {
		if err := lan.IP("link", "set", "dev", dev, "master", BridgeDev); err != nil {
			return p, err
		}
	}
	return p, lan.LinkUp(dev)
}

// labProc is a started process of the lab and the one Wait on it. Wait
// must not be called twice: a second Wait racing the first blocks for
// good on exec.Cmd's internal result channel, which only one of them
// receives (this made Ctrl-C take the outer process's 15 s fallback).
type labProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

func startedProc(c *exec.Cmd) *labProc {
	p := &labProc{cmd: c, done: make(chan struct{})}
	go func() { p.err = c.Wait(); close(p.done) }()
	return p
}

// stopProc asks p to stop (SIGTERM) and waits for it, killing it after 5 s.
func stopProc(p *labProc) {
	select {
	case <-p.done:
		return
	default:
	}
	// A real server's Cmd is nsenter and the server its child, one
	// process group (netns.Host.Daemon).
	netns.SignalGroup(p.cmd, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		netns.SignalGroup(p.cmd, syscall.SIGKILL)
		<-p.done
	}
}

// routerDNAT maps the router's public port 80 to the VIP, as the article's
// router does, with the kernel's nftables NAT.
func routerDNAT(ctx context.Context, router *netns.Host) error {
	nft, err := exec.LookPath("nft")
	if err != nil {
		return errors.New("nft (Debian package nftables) is not installed")
	}
	rules := fmt.Sprintf(`table ip tunvs_lab {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 80 dnat to %s:80
	}
}
`, RouterPublic.Addr(), VIP)
	f, err := os.CreateTemp("", "tunvs-lab-nft-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	f.WriteString(rules)
	f.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = router.Run(cctx, nft, "-f", f.Name())
	return err
}

// tunAttach makes the lan namespace the director's routed leg: it answers
// ARP on the bridge for the DIP and the VIP (proxy ARP), sends what
// arrives from the bridge for those, and everything the real servers send
// off the segment, into the TUN device, and forwards what the director
// writes to the bridge or the router.
func tunAttach(lan *netns.Host, fullNAT bool) error {
	steps := [][]string{
		{"addr", "add", LanGateway.String(), "dev", BridgeDev},
		{"route", "add", DIP.Addr().String() + "/32", "dev", DirectorDev},
		{"route", "add", VIP.String() + "/32", "dev", DirectorDev},
		{"route", "add", "default", "via", RouterLab.Addr().String()},
		// Off-segment traffic from the bridge (the real servers' replies)
		// goes to the director, whatever the main table says.
		{"rule", "add", "iif", BridgeDev, "lookup", "100"},
		{"route", "add", "default", "dev", DirectorDev, "table", "100"},
		{"route", "add", LabNet.String(), "dev", BridgeDev, "table", "100"},
		{"route", "add", DIP.Addr().String() + "/32", "dev", DirectorDev, "table", "100"},
		{"route", "add", VIP.String() + "/32", "dev", DirectorDev, "table", "100"},
	}
	if fullNAT {
		// The local address is the director's too: the bridge answers
		// ARP for it (proxy_arp) and routes it into the TUN.
		steps = append(steps,
			[]string{"route", "add", LocalAddr.String() + "/32", "dev", DirectorDev},
			[]string{"route", "add", LocalAddr.String() + "/32", "dev", DirectorDev, "table", "100"})
	}
	for _, s := range steps {
		if err := lan.IP(s...); err != nil {
			return err
		}
	}
	if err := lan.Forwarding(true); err != nil {
		return err
	}
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + BridgeDev + "/proxy_arp", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/" + BridgeDev + "/rp_filter", "0"},
		{"net/ipv4/conf/" + DirectorDev + "/rp_filter", "0"},
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/" + BridgeDev + "/send_redirects", "0"},
	} {
		if err := lan.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// waitListen polls until something accepts TCP connections at ap inside h.
func waitListen(ctx context.Context, h *netns.Host, ap netip.AddrPort, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		var derr error
		if err := h.Do(func() error {
			c, err := net.DialTimeout("tcp", ap.String(), time.Second)
			if err == nil {
				c.Close()
			}
			derr = err
			return nil
		}); err != nil {
			return err
		}
		if derr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %w", ap, within, derr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitSocket(ctx context.Context, path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: the director's control socket %s does not answer: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---------------------------------------------------------------------
// The outer half: state, exec, down.

// State is what the state directory says about a lab.
type State struct {
	Dir        string
	PID        int    // the sandbox's first process, as seen from outside
	Start      uint64 // its start time (clock ticks since boot), to recognise it
	UnsharePID int
	UnshareSt  uint64
	Hosts      map[string]int // host name -> PID inside the sandbox
	Ready      bool
	Attach     string
}

// ErrNoLab means the state directory holds no lab.
var ErrNoLab = errors.New("no lab is running")

// ReadState reads the state directory. A directory whose sandbox process is
// gone is reported as stale (Alive false).
//
// The directory must be this user's own (not a symbolic link, owned by
// this uid): its contents name a process that `down` kills, and a default
// under /tmp could have been made by someone else.
func ReadState(dir string) (*State, error) {
	fi, err := os.Lstat(dir)
	if err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() {
			return nil, fmt.Errorf("lab: %s is not a directory of uid %d; refusing to trust it (remove it, or use --state-dir)", dir, os.Getuid())
		}
	}
	return readState(dir)
}

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "sandbox"))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr == nil {
			return &State{Dir: dir}, nil // being created, or its creator crashed early
		}
		return nil, fmt.Errorf("%w (no %s)", ErrNoLab, dir)
	}
	if err != nil {
		return nil, err
	}
	s := &State{Dir: dir, Hosts: map[string]int{}}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "pid":
			s.PID = int(n)
		case "start":
			s.Start = n
		case "unshare_pid":
			s.UnsharePID = int(n)
		case "unshare_start":
			s.UnshareSt = n
		}
	}
	if hb, err := os.ReadFile(filepath.Join(dir, "hosts")); err == nil {
		for _, line := range strings.Split(string(hb), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				n, _ := strconv.Atoi(f[1])
				s.Hosts[f[0]] = n
			}
		}
	}
	if rb, err := os.ReadFile(filepath.Join(dir, "ready")); err == nil {
		s.Ready = true
		s.Attach = strings.TrimSpace(string(rb))
	}
	return s, nil
}

// Alive reports whether the sandbox's first process still runs.
func (s *State) Alive() bool { return s.PID > 0 && procAlive(s.PID, s.Start) }

// WriteSandbox records the sandbox's processes. unsharePID is the unshare
// process the outer process started; its child is the sandbox's PID 1.
func WriteSandbox(dir string, unsharePID int, within time.Duration) (*State, error) {
	deadline := time.Now().Add(within)
	var child int
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", unsharePID, unsharePID))
		if f := strings.Fields(string(b)); len(f) > 0 {
			child, _ = strconv.Atoi(f[0])
			break
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", unsharePID)); err != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: the sandbox's first process did not appear (unshare %d)", unsharePID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := &State{Dir: dir, PID: child, Start: procStart(child), UnsharePID: unsharePID, UnshareSt: procStart(unsharePID)}
	content := fmt.Sprintf("pid=%d\nstart=%d\nunshare_pid=%d\nunshare_start=%d\nuid=%d\n",
		s.PID, s.Start, s.UnsharePID, s.UnshareSt, os.Getuid())
	return s, writeFileAtomic(filepath.Join(dir, "sandbox"), []byte(content))
}

// procStart is the start time of process pid (field 22 of /proc/PID/stat,
// in clock ticks after boot), 0 if the process is gone.
func procStart(pid int) uint64 {
	st, _ := procfs.StatOf(pid) // nil if gone: every field 0
	return st.Uint(22)
}

func procAlive(pid int, start uint64) bool {
	st, err := procfs.StatOf(pid)
	if err != nil || st.Uint(22) == 0 || (start != 0 && st.Uint(22) != start) {
		return false
	}
	// A zombie is as good as gone.
	return st.Field(3) != "Z"
}

// Prepare makes the state directory for a new lab. An existing one is
// refused if its lab is alive and removed if it is stale (its process is
// gone, e.g. after a crash or a reboot); the second result says so.
func Prepare(dir string) (removedStale bool, err error) {
	s, err := ReadState(dir)
	if err != nil && !errors.Is(err, ErrNoLab) {
		return false, err
	}
	if err == nil {
		if s.Alive() {
			return false, fmt.Errorf("a lab is running already (pid %d, state in %s); `tunvs lab down` removes it", s.PID, dir)
		}
		if s.PID == 0 && dirYoung(dir) {
			return false, fmt.Errorf("another `tunvs lab --netns` is starting (state in %s); `tunvs lab down` removes it", dir)
		}
		if err := RemoveState(dir); err != nil {
			return false, err
		}
		removedStale = true
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return removedStale, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return removedStale, fmt.Errorf("lab: state directory: %w", err)
	}
	return removedStale, nil
}

func dirYoung(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && time.Since(fi.ModTime()) < 30*time.Second
}

// Down removes the lab whose state is in dir: it kills the sandbox's first
// process (the PID namespace, every host's processes and with them every
// namespace and device go too), waits for it and removes the directory. A
// stale directory is just removed. It returns what it did, for the user.
func Down(dir string, within time.Duration) (string, error) {
	s, err := ReadState(dir)
	if err != nil {
		return "", err
	}
	msg := "removed a stale lab state (its processes were gone already): " + dir
	if s.Alive() {
		if err := unix.Kill(s.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return "", fmt.Errorf("lab: kill the lab's process %d: %w", s.PID, err)
		}
		if s.UnsharePID > 0 && procAlive(s.UnsharePID, s.UnshareSt) {
			unix.Kill(s.UnsharePID, unix.SIGKILL)
		}
		deadline := time.Now().Add(within)
		for procAlive(s.PID, s.Start) {
			if time.Now().After(deadline) {
				return "", fmt.Errorf("lab: process %d did not exit within %v", s.PID, within)
			}
			time.Sleep(10 * time.Millisecond)
		}
		msg = fmt.Sprintf("lab stopped (pid %d) and its state removed: %s", s.PID, dir)
	}
	if err := RemoveState(dir); err != nil {
		return "", err
	}
	return msg, nil
}

// RemoveState removes a lab's state directory: the files a lab writes
// there, then the directory. Anything else in it makes it refuse, so that
// a mistyped --state-dir never deletes a directory of the user's.
func RemoveState(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	known := map[string]bool{"sandbox": true, "hosts": true, "ready": true, "tunvs.sock": true, "nft-unavailable": true,
		"director.pid": true, "backup.pid": true, "tunvs-backup.sock": true, "director-keepalived.conf": true, "backup-keepalived.conf": true}
	for k := range clusterFiles {
		known[k] = true
	}
	for _, e := range ents {
		n := e.Name()
		if n == "bin" && e.IsDir() {
			// The director's ipvsadm (labBin), and nothing else.
			if b, err := os.ReadDir(filepath.Join(dir, n)); err != nil || len(b) > 1 || len(b) == 1 && b[0].Name() != "ipvsadm" {
				return fmt.Errorf("lab: %s holds %s, which is not the lab's: not removing it", dir, n)
			}
			continue
		}
		if !known[n] && !isDirectorSocket(n) && !strings.HasSuffix(n, ".log") && !strings.HasSuffix(n, ".tmp") || e.IsDir() {
			return fmt.Errorf("lab: %s holds %s, which is not the lab's: not removing it", dir, n)
		}
	}
	os.Remove(filepath.Join(dir, "bin", "ipvsadm"))
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Remove(dir)
}

// ExecArgv is the command line that runs argv in host of the running lab:
// into the sandbox's user and mount namespaces, then the host's network
// namespace.
func (s *State) ExecArgv(host string, argv []string) ([]string, error) {
	if !s.Alive() {
		return nil, fmt.Errorf("%w (stale state in %s: `tunvs lab down` removes it)", ErrNoLab, s.Dir)
	}
	if !s.Ready {
		return nil, fmt.Errorf("the lab in %s is not ready yet", s.Dir)
	}
	pid, ok := s.Hosts[host]
	if !ok {
		return nil, fmt.Errorf("no host %q in the lab (hosts: %s)", host, strings.Join(s.HostNames(), ", "))
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("nsenter (util-linux) is needed: %w", err)
	}
	if len(argv) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		argv = []string{sh}
	}
	wd, _ := os.Getwd()
	out := []string{nsenter, "--preserve-credentials", "-U", "-m", "-p", "-t", strconv.Itoa(s.PID), "--",
		// The host's network namespace, and its PID and mount
		// namespaces (its processes, its /proc; the sandbox's own where
		// the host has none of its own).
		nsenter, "--target", strconv.Itoa(pid), "--net", "--pid", "--mount", "--",
		// Entering a mount namespace moves to its root directory; come
		// back to where the user was, if it exists there.
		"/bin/sh", "-c", `cd "$0" 2>/dev/null; exec "$@"`, wd}
	if host == HostDir {
		// The article's commands as typed: ipvsadm is tunvsadm there.
		out[len(out)-2] = `cd "$0" 2>/dev/null; PATH="$TUNVS_LAB_BIN:$PATH"; exec "$@"`
	}
	return append(out, argv...), nil
}

// labBin makes the state directory's bin/ipvsadm, a symbolic link to
// tunvsadm (from PATH, else beside self), which `tunvs lab exec director`
// puts first in PATH. Without a tunvsadm there is no link.
func labBin(stateDir, self string) error {
	adm, err := exec.LookPath("tunvsadm")
	if err != nil {
		adm = filepath.Join(filepath.Dir(self), "tunvsadm")
		if _, err := os.Stat(adm); err != nil {
			return nil
		}
	}
	if adm, err = filepath.Abs(adm); err != nil {
		return err
	}
	dir := filepath.Join(stateDir, "bin")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	os.Remove(filepath.Join(dir, "ipvsadm"))
	return os.Symlink(adm, filepath.Join(dir, "ipvsadm"))
}

// ExecEnv is the environment for commands run with ExecArgv: tunvsadm
// finds the lab's director.
func (s *State) ExecEnv() []string {
	// The caller's own TUNVS_SOCKET would come first, and getenv takes
	// the first: the lab's replaces it.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TUNVS_SOCKET=") })
	return append(env, "TUNVS_SOCKET="+SocketPath(s.Dir), "TUNVS_LAB_HOST=1", "TUNVS_LAB_BIN="+filepath.Join(s.Dir, "bin"))
}

// HostNames lists the lab's hosts in a stable order.
func (s *State) HostNames() []string {
	var n []string
	for k := range s.Hosts {
		n = append(n, k)
	}
	sort.Slice(n, func(i, j int) bool {
		return hostOrder(n[i]) < hostOrder(n[j]) || (hostOrder(n[i]) == hostOrder(n[j]) && n[i] < n[j])
	})
	return n
}

func hostOrder(n string) int {
	switch n {
	case HostClient:
		return 0
	case HostRouter:
		return 1
	case HostDir:
		return 2
	case HostLan:
		return 3
	}
	return 4
}

// WaitReady waits until the inner process marks the lab ready, or exited
// reports that it ended.
func WaitReady(ctx context.Context, dir string, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("lab: the lab's process ended before the lab was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: not ready within %v", within)
		}
	}
}

// Banner describes the running lab and how to use it.
func Banner(w io.Writer, s *State, cfg NetnsConfig, self string) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	dirFlag := ""
	if os.Getenv("TUNVS_LAB_DIR") == "" && s.Dir != DefaultStateDir() {
		dirFlag = " --state-dir " + s.Dir
	}
	attach := "TAP device " + DirectorDev + " on bridge " + BridgeDev
	if s.Attach == "tun" {
		attach = "TUN device " + DirectorDev + ", routed by host lan"
	}
	fmt.Fprintf(bw, "LVS-NAT lab on network namespaces: scheduler %s, %d real servers, director on a %s\n\n", cfg.Scheduler, cfg.Servers, attach)
	fmt.Fprintf(bw, "  client    %-18s eth0\n", ClientAddr)
	_, nftErr := os.Stat(filepath.Join(s.Dir, "nft-unavailable"))
	if nftErr == nil {
		fmt.Fprintf(bw, "  router    %-18s eth0 (public; no DNAT: nftables unavailable, routes %s)\n", RouterPublic, LabNet)
	} else {
		fmt.Fprintf(bw, "  router    %-18s eth0 (public; nftables DNAT %s:80 -> %s:80)\n", RouterPublic, RouterPublic.Addr(), VIP)
	}
	fmt.Fprintf(bw, "            %-18s eth1 (lab side; forwarding on)\n", RouterLab)
	if s.Attach == "tun" {
		fmt.Fprintf(bw, "  director  %-18s DIP, VIP %s, on TUN %s (tunvs, userspace)\n", DIP.Addr().String()+"/32", VIP, DirectorDev)
		fmt.Fprintf(bw, "  lan       bridge %s: the lab segment (ports router, rs1..); %s on %s routes to %s\n", BridgeDev, LanGateway, BridgeDev, DirectorDev)
		fmt.Fprintf(bw, "            and answers ARP for the DIP and the VIP (proxy ARP)\n")
	} else if cfg.HA {
		fmt.Fprintf(bw, "  director  %-18s DIP on %s, VRRP priority %d (tunvs: the master)\n", DIP, DirectorDev, HAMasterPriority)
		fmt.Fprintf(bw, "  (backup)  %-18s DIP on %s, VRRP priority %d (tunvs: the backup, same host)\n", BackupDIP, BackupDev, HABackupPriority)
		fmt.Fprintf(bw, "            the master holds VIP %s and the real servers' gateway %s (VRID %d);\n", VIP, HAGateway, HAVRID)
		fmt.Fprintf(bw, "            the sync daemons copy its connections to the backup\n")
		fmt.Fprintf(bw, "  lan       bridge %s: the lab segment (ports router, rs1.., %s, %s)\n", BridgeDev, DirectorDev, BackupDev)
	} else {
		fmt.Fprintf(bw, "  director  %-18s DIP, VIP %s, default via %s (tunvs, userspace)\n", DIP, VIP, RouterLab.Addr())
		fmt.Fprintf(bw, "  lan       bridge %s: the lab segment (ports router, rs1.., %s)\n", BridgeDev, DirectorDev)
	}
	gw := VIP
	if cfg.HA {
		gw = HAGateway
	}
	for i := 0; i < cfg.Servers; i++ {
		fmt.Fprintf(bw, "  %-9s %-18s eth0, gateway %s, \"%s\"\n", RealServerHost(i), netip.PrefixFrom(RealServerAddr(i), 24), gw, RealServerName(i))
	}
	target := RouterPublic.Addr()
	if nftErr == nil {
		target = VIP
		fmt.Fprintf(bw, "\n  NOTE: nftables is unavailable, so the router does no DNAT: curl http://%s/ instead.\n", VIP)
	}
	fmt.Fprintf(bw, "\nTry:\n")
	tries := [][2]string{
		{fmt.Sprintf("%s lab exec%s client -- curl -s http://%s/", self, dirFlag, target), "a request, as the article's client makes it"},
		{fmt.Sprintf("%s lab exec%s client -- curl -s -o /dev/null -w '%%{speed_download}\\n' 'http://%s/?bytes=1000000000'", self, dirFlag, target), "a 1 GB download: bytes/s through the director"},
		{fmt.Sprintf("%s lab exec%s director -- ipvsadm -L -n", self, dirFlag), "the director's table (ipvsadm is tunvsadm there; -Lnc: its connections)"},
		{fmt.Sprintf("tunvsadm --socket %s -L -n", SocketPath(s.Dir)), "the same, from outside the lab"},
		metricsTry(self, dirFlag, HostDir, 0),
		{fmt.Sprintf("%s lab exec%s rs1", self, dirFlag), "a shell in a host: client, router, director, lan, rs1, ..."},
	}
	if cfg.HA {
		tries = append(tries,
			[2]string{fmt.Sprintf("%s lab exec%s backup -- ipvsadm -Lnc", self, dirFlag), "the backup's table: the master's connections, synced"},
			[2]string{fmt.Sprintf("%s lab exec%s director -- sh -c 'kill -9 $(cat %s)'", self, dirFlag, MasterPIDFile(s.Dir)), "the failover: the backup takes over in about 3.6 s"})
	}
	tries = append(tries, [][2]string{
		{fmt.Sprintf("%s lab capture%s lan %s", self, dirFlag, DirectorDev), "the director's packets, tcpdump-style"},
		{fmt.Sprintf("%s lab walk%s", self, dirFlag), "the packet walk, step by step"},
		{fmt.Sprintf("%s lab down%s", self, dirFlag), "remove everything"},
	}...)
	width := 0
	for _, t := range tries {
		width = max(width, len(t[0]))
	}
	for _, t := range tries {
		fmt.Fprintf(bw, "  %-*s   # %s\n", width, t[0], t[1])
	}
}
