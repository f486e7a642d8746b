//go:build linux

package lab

// The scale-out lab (`tunvs lab --netns --directors N`): a client, a BGP
// router with ECMP, and N tunvs directors on the real servers' segment,
// with direct routing.
//
//	client 10.0.0.1 --- 10.0.0.200 router (BIRD 2, ECMP, L4 hash) 172.16.1.200 --- br0 (host lan)
//	                                                                                |-- d1 172.16.1.150 (TAP tvd1), d2 .151, ...
//	                                                                                |-- rs1 172.16.1.5, rs2 .6, ... (VIP on lo)
//
// Each director is a `tunvs run` process with the VIP 172.16.2.100 on its
// TAP, mh (with mh-port) and sloppy_tcp, its real servers as -g (Route),
// and --bgp announcing the VIP to the router, which installs one route
// with a next hop per director and hashes flows over them by their ports
// (fib_multipath_hash_policy=1). The real servers hold the VIP on lo,
// answer no ARP for it (arp_ignore=1, arp_announce=2) and answer the
// client through the router, as LVS-DR real servers do. The VIP is off the
// segment's subnet, so the router reaches it only by the directors'
// announcements: with none, there is no route.

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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/procfs"
)

// ClusterConfig describes the scale-out lab.
type ClusterConfig struct {
	Directors int    // started at once (more can be added: StartDirector)
	Servers   int    // real servers
	Scheduler string // default mh (with -b mh-port)
	Port      uint16 // the service's port, the real servers' too (-g): default 80
	// NoServers: the real servers run no server (the caller starts its
	// own, listening on the VIP's port); else RSCmd, else tunvs lab serve.
	NoServers bool
	RSCmd     string
	// DirectorArgs are added to every director's command line.
	DirectorArgs []string
	// Metrics: director i serves its metrics on MetricsAddr(i) in the
	// directors' host.
	Metrics  bool
	StateDir string
	Self     string
}

// Cluster is a running scale-out lab.
type Cluster struct {
	cfg                  ClusterConfig
	topo                 *netns.Topology
	Client, Router, Lan  *netns.Host
	RSs                  []*netns.Host
	bird                 *labProc
	mu                   sync.Mutex
	dirs                 map[int]*labProc
	procs                []*labProc // the real servers' processes
	logs                 []*os.File
	birdPath, birdcPath  string
	birdState, birdSockP string
}

func (c *ClusterConfig) defaults() error {
	if c.Scheduler == "" {
		c.Scheduler = "mh"
	}
	if c.Port == 0 {
		c.Port = 80
	}
	if c.Servers == 0 {
		c.Servers = 2
	}
	if c.Directors < 0 || c.Directors > MaxDirectors {
		return fmt.Errorf("lab: %d directors: want 1 to %d", c.Directors, MaxDirectors)
	}
	if c.Servers < 1 || c.Servers > MaxNetnsServers {
		return fmt.Errorf("lab: %d real servers: want 1 to %d", c.Servers, MaxNetnsServers)
	}
	if c.StateDir == "" || c.Self == "" {
		return errors.New("lab: the cluster needs a state directory and the tunvs executable")
	}
	// The directors' --bgp runs tunvs-bgp: better said now than in each
	// director's log.
	if _, err := bgp.SpeakerPath(c.Self); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// ClusterRules are the rules every director of the lab has.
func ClusterRules(scheduler string, servers int, port uint16) []string {
	svc := netip.AddrPortFrom(ClusterVIP, port)
	r := []string{fmt.Sprintf("-A -t %s -s %s", svc, scheduler)}
	if scheduler == "mh" {
		// One client address, many connections: without the port, mh
		// would send them all to one server.
		r[0] += " -b mh-port"
	}
	for i := range servers {
		r = append(r, fmt.Sprintf("-a -t %s -r %s -g", svc, RealServerAddr(i)))
	}
	return append(r, "--sysctl sloppy_tcp=1")
}

// BuildCluster lays the scale-out lab out in topo, starts the router's
// BIRD, the real servers and cfg.Directors directors, and waits until
// the router has a route to the VIP through each of them.
func BuildCluster(ctx context.Context, topo *netns.Topology, cfg ClusterConfig) (_ *Cluster, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	bird := sbinTool("bird")
	if bird == "" {
		return nil, errors.New("lab: bird (Debian package bird2) is needed for the router")
	}
	birdc := sbinTool("birdc")
	c := &Cluster{cfg: cfg, topo: topo, dirs: map[int]*labProc{}, birdPath: bird, birdcPath: birdc,
		birdSockP: filepath.Join(cfg.StateDir, birdSock)}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	var firstErr error
	must := func(e error) {
		if e != nil && firstErr == nil {
			firstErr = e
		}
	}
	add := func(name string) *netns.Host {
		h, e := topo.AddHost(name)
		must(e)
		return h
	}
	c.Client, c.Router, c.Lan = add(HostClient), add(HostRouter), add(HostLan)
	for i := range cfg.Servers {
		c.RSs = append(c.RSs, add(RealServerHost(i)))
	}
	if firstErr != nil {
		return nil, firstErr
	}
	must(topo.Veth(c.Client, "eth0", c.Router, "eth0", 0))
	must(c.Client.AddAddr("eth0", ClusterClient.String()))
	must(c.Client.AddRoute("default", "via", RouterPublic.Addr().String()))
	must(c.Router.AddAddr("eth0", RouterPublic.String()))
	must(topo.Veth(c.Router, "eth1", c.Lan, "router", 0))
	must(c.Router.AddAddr("eth1", RouterLab.String()))
	must(c.Router.Forwarding(true))
	// ECMP by the flow's ports and addresses, not the addresses alone
	// (policy 0): one client's connections spread over the directors.
	// The sysctl is per network namespace (net/ipv4/sysctl_net_ipv4.c).
	must(c.Router.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"))
	ports := []string{"router"}
	for i, rs := range c.RSs {
		port := RealServerHost(i)
		must(topo.Veth(rs, "eth0", c.Lan, port, 0))
		ports = append(ports, port)
		// The LVS-DR real server.
		must(rs.Sysctl("net.ipv4.conf.all.arp_ignore", "1"))
		must(rs.Sysctl("net.ipv4.conf.all.arp_announce", "2"))
		must(rs.AddAddr("lo", ClusterVIP.String()+"/32"))
		must(rs.AddAddr("eth0", netip.PrefixFrom(RealServerAddr(i), 24).String()))
		must(rs.AddRoute("default", "via", RouterLab.Addr().String()))
	}
	must(c.Lan.Bridge(BridgeDev, ports...))
	if firstErr != nil {
		return nil, firstErr
	}
	if err := c.startBird(ctx); err != nil {
		return nil, err
	}
	if !cfg.NoServers {
		if err := c.startServers(ctx); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Directors {
		if err := c.StartDirector(ctx, i); err != nil {
			return nil, err
		}
	}
	if cfg.Directors > 0 {
		if err := c.WaitNextHops(ctx, cfg.Directors, 60*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// birdConfig is the router's BIRD configuration: a passive BGP listener
// for any director on the segment (dynamic BGP: a director added later
// needs no change here), import of the directors' host routes only, and
// the kernel protocol merging equal routes into one multipath route.
func birdConfig() string {
	return fmt.Sprintf(`# tunvs lab --directors: the router's BIRD 2.
log stderr all;
router id %[1]s;

protocol device { scan time 2; }

protocol kernel {
	ipv4 { import none; export all; };
	# One route with a next hop per director (ECMP), not the best one.
	merge paths on limit 16;
}

filter vip_only {
	if net.len = 32 && net ~ 172.16.2.0/24 then accept;
	reject;
}

protocol bgp directors {
	local %[1]s as %[2]d;
	neighbor range %[3]s as %[4]d;
	# The hold time is what a director killed without a word costs: the
	# router sends it its share of new packets until then.
	hold time %[5]d;
	keepalive time 1;
	ipv4 { import filter vip_only; export none; };
}
`, RouterLab.Addr(), RouterAS, LabNet, DirectorAS, int(ClusterHold/time.Second))
}

func (c *Cluster) logFile(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(c.cfg.StateDir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		c.logs = append(c.logs, f)
	}
	return f, err
}

// startBird runs BIRD in the router's namespace as this process's user
// (in the sandbox's user namespace: the test's or lab's user outside).
func (c *Cluster) startBird(ctx context.Context) error {
	conf := filepath.Join(c.cfg.StateDir, birdConf)
	if err := os.WriteFile(conf, []byte(birdConfig()), 0o600); err != nil {
		return err
	}
	f, err := c.logFile("bird.log")
	if err != nil {
		return err
	}
	// -f: foreground; -s, -P: the control socket and pid file in the
	// state directory, not /run/bird (not this user's).
	cmd := c.Router.Command(ctx, c.birdPath, "-f", "-c", conf, "-s", c.birdSockP, "-P", filepath.Join(c.cfg.StateDir, "bird.pid"))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start bird in the router: %w", err)
	}
	c.bird = startedProc(cmd)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(c.birdSockP); err == nil {
			return nil
		}
		select {
		case <-c.bird.done:
			b, _ := os.ReadFile(f.Name())
			return fmt.Errorf("lab: bird exited: %v: %s", c.bird.err, strings.TrimSpace(string(b)))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("lab: bird's control socket did not appear within 15 s")
		}
	}
}

func (c *Cluster) startServers(ctx context.Context) error {
	for i, rs := range c.RSs {
		f, err := c.logFile(RealServerHost(i) + ".log")
		if err != nil {
			return err
		}
		// In the host's own PID namespace, as in NetnsInner.
		var cmd *exec.Cmd
		if c.cfg.RSCmd != "" {
			cmd = rs.Daemon(ctx, c.cfg.StateDir, "sh", "-c", c.cfg.RSCmd)
		} else {
			cmd = rs.Daemon(ctx, c.cfg.StateDir, c.cfg.Self, "lab", "serve", "--name", RealServerName(i), "--listen", fmt.Sprintf(":%d", c.cfg.Port))
		}
		cmd.Env = append(os.Environ(), "TUNVS_LAB_NAME="+RealServerName(i), "TUNVS_LAB_ADDR="+RealServerAddr(i).String())
		cmd.Stdout, cmd.Stderr = f, f
		cmd.WaitDelay = 2 * time.Second
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("lab: start the server on %s: %w", rs, err)
		}
		c.procs = append(c.procs, startedProc(cmd))
	}
	for i, rs := range c.RSs {
		if err := waitListen(ctx, rs, netip.AddrPortFrom(RealServerAddr(i), c.cfg.Port), 15*time.Second); err != nil {
			return fmt.Errorf("lab: real server %s: %w", rs, err)
		}
	}
	return nil
}

// DirectorArgs is director i's command line (after the executable).
func (c *Cluster) DirectorArgs(i int) []string {
	args := []string{"run", "--socket", DirectorSocket(c.cfg.StateDir, i), "--log-level", "info",
		fmt.Sprintf("--link=name=%s,kind=tap,addr=%s,addr=%s/32", DirectorTAP(i), DirectorDIP(i), ClusterVIP),
		"--route=default,via=" + RouterLab.Addr().String(),
		fmt.Sprintf("--bgp=as=%d,peer=%s,peer-as=%d,hold=%s", DirectorAS, RouterLab.Addr(), RouterAS, ClusterHold)}
	for _, r := range ClusterRules(c.cfg.Scheduler, c.cfg.Servers, c.cfg.Port) {
		if v, ok := strings.CutPrefix(r, "--sysctl "); ok {
			args = append(args, "--sysctl", v)
		} else {
			args = append(args, "--rule", r)
		}
	}
	if c.cfg.Metrics {
		args = append(args, metricsFlag(i))
	}
	return append(args, c.cfg.DirectorArgs...)
}

// StartDirector starts director i (0-based) and puts its TAP on the
// segment. It does not wait for its BGP session: WaitNextHops does.
func (c *Cluster) StartDirector(ctx context.Context, i int) error {
	if i < 0 || i >= MaxDirectors {
		return fmt.Errorf("lab: director %d: want 0 to %d", i, MaxDirectors-1)
	}
	c.mu.Lock()
	_, running := c.dirs[i]
	c.mu.Unlock()
	if running {
		return fmt.Errorf("lab: director %s runs already", DirectorName(i))
	}
	f, err := os.OpenFile(filepath.Join(c.cfg.StateDir, DirectorName(i)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	c.logs = append(c.logs, f)
	os.Remove(DirectorSocket(c.cfg.StateDir, i))
	cmd := exec.CommandContext(ctx, c.cfg.Self, c.DirectorArgs(i)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start director %s: %w", DirectorName(i), err)
	}
	p := startedProc(cmd)
	c.mu.Lock()
	c.dirs[i] = p
	c.mu.Unlock()
	// The control socket listens once the links are set up: a TAP moved
	// sooner may still be replaced (its offloads refused, tunvs opens it
	// again plain outside the lab), as startLabDirector says.
	if err := waitSocket(ctx, DirectorSocket(c.cfg.StateDir, i), 20*time.Second); err != nil {
		return fmt.Errorf("lab: director %s did not start (see %s): %w", DirectorName(i), f.Name(), err)
	}
	if err := netns.WaitLink(c.topo.Root(), DirectorTAP(i), 10*time.Second); err != nil {
		return fmt.Errorf("lab: director %s did not create %s (see %s): %w", DirectorName(i), DirectorTAP(i), f.Name(), err)
	}
	if err := c.topo.Root().MoveLink(DirectorTAP(i), c.Lan); err != nil {
		return err
	}
	if err := c.Lan.IP("link", "set", "dev", DirectorTAP(i), "master", BridgeDev); err != nil {
		return err
	}
	return c.Lan.LinkUp(DirectorTAP(i))
}

// DirectorPID is director i's process id, 0 if it is not running.
func (c *Cluster) DirectorPID(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.dirs[i]; p != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// DirectorCPU is the CPU time director i has used (user and system,
// /proc/PID/stat's utime and stime, in clock ticks of 1/100 s), 0 if it
// is not running.
func (c *Cluster) DirectorCPU(i int) time.Duration {
	pid := c.DirectorPID(i)
	if pid == 0 {
		return 0
	}
	st, _ := procfs.StatOf(pid) // nil if gone: every field 0
	return time.Duration(st.Uint(14)+st.Uint(15)) * 10 * time.Millisecond
}

// KillDirector ends director i with SIGKILL, as a crash would: it
// withdraws nothing and the router keeps its route until the hold time.
func (c *Cluster) KillDirector(i int) error { return c.endDirector(i, syscall.SIGKILL) }

// StopDirector ends director i with SIGTERM: it withdraws the VIP first.
func (c *Cluster) StopDirector(i int) error { return c.endDirector(i, syscall.SIGTERM) }

func (c *Cluster) endDirector(i int, sig syscall.Signal) error {
	c.mu.Lock()
	p := c.dirs[i]
	delete(c.dirs, i)
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("lab: director %s is not running", DirectorName(i))
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("lab: director %s did not end within 10 s of %v", DirectorName(i), sig)
	}
}

var nexthopRE = regexp.MustCompile(`(?:^|\s)via (\S+) dev`)

// NextHops are the router's next hops for the VIP, as its kernel has
// them (ip route show), sorted.
func (c *Cluster) NextHops(ctx context.Context) ([]netip.Addr, error) {
	out, err := c.Router.Run(ctx, "ip", "-4", "route", "show", ClusterVIP.String()+"/32")
	if err != nil {
		return nil, err
	}
	var hops []netip.Addr
	for _, m := range nexthopRE.FindAllStringSubmatch(out, -1) {
		if a, err := netip.ParseAddr(m[1]); err == nil {
			hops = append(hops, a)
		}
	}
	slices.SortFunc(hops, netip.Addr.Compare)
	return hops, nil
}

// WaitNextHops waits until the router's route to the VIP has n next hops.
func (c *Cluster) WaitNextHops(ctx context.Context, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		hops, err := c.NextHops(ctx)
		if err == nil && len(hops) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: the router has next hops %v for %v after %v, want %d (see %s)",
				hops, ClusterVIP, within, n, filepath.Join(c.cfg.StateDir, "bird.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Birdc runs birdc (the BIRD client) against the router's BIRD.
func (c *Cluster) Birdc(ctx context.Context, args ...string) (string, error) {
	if c.birdcPath == "" {
		return "", errors.New("birdc is not installed")
	}
	return c.Router.Run(ctx, append([]string{c.birdcPath, "-s", c.birdSockP}, args...)...)
}

// Close stops the directors, the servers and BIRD.
func (c *Cluster) Close() {
	c.mu.Lock()
	var dirs []*labProc
	for _, p := range c.dirs {
		dirs = append(dirs, p)
	}
	c.dirs = map[int]*labProc{}
	c.mu.Unlock()
	for _, p := range dirs {
		stopProc(p)
	}
	for _, p := range c.procs {
		stopProc(p)
	}
	if c.bird != nil {
		stopProc(c.bird)
	}
	for _, f := range c.logs {
		f.Close()
	}
}

// ClusterInner is NetnsInner for --directors: it builds the lab, marks it
// ready and keeps it until ctx ends.
func ClusterInner(ctx context.Context, cfg NetnsConfig, w io.Writer) error {
	if err := netns.CheckFresh(); err != nil {
		return err
	}
	topo, err := netns.New()
	if err != nil {
		return err
	}
	reapCtx, stopReaping := context.WithCancel(context.Background())
	go reapOrphans(reapCtx)
	defer stopReaping()
	defer topo.Close()
	c, err := BuildCluster(ctx, topo, ClusterConfig{
		Directors: cfg.Directors, Servers: cfg.Servers, Scheduler: cfg.Scheduler, RSCmd: cfg.RSCmd,
		StateDir: cfg.StateDir, Self: cfg.Self, DirectorArgs: directorFlags(cfg), Metrics: true,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := labBin(cfg.StateDir, cfg.Self); err != nil {
		return err
	}
	// `tunvs lab exec director -- ipvsadm` talks to d1.
	os.Remove(SocketPath(cfg.StateDir))
	if err := os.Symlink(DirectorSocket(cfg.StateDir, 0), SocketPath(cfg.StateDir)); err != nil {
		return err
	}
	hosts := map[string]int{HostDir: topo.Root().PID(), HostClient: c.Client.PID(), HostRouter: c.Router.PID(), HostLan: c.Lan.PID()}
	for i, rs := range c.RSs {
		hosts[RealServerHost(i)] = rs.PID()
	}
	var b strings.Builder
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %d\n", n, hosts[n])
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, "hosts"), []byte(b.String())); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, clusterMarker), []byte(strconv.Itoa(cfg.Directors)+"\n")); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(cfg.StateDir, "ready"), []byte("tap\n")); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// ClusterBanner describes a running scale-out lab and how to use it.
func ClusterBanner(w io.Writer, s *State, cfg NetnsConfig, self string) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	dirFlag := ""
	if os.Getenv("TUNVS_LAB_DIR") == "" && s.Dir != DefaultStateDir() {
		dirFlag = " --state-dir " + s.Dir
	}
	fmt.Fprintf(bw, "Scale-out lab on network namespaces: %d tunvs directors behind a BGP router with ECMP, scheduler %s + sloppy_tcp, direct routing to %d real servers\n\n",
		cfg.Directors, cfg.Scheduler, cfg.Servers)
	fmt.Fprintf(bw, "  client    %-18s eth0, default via the router\n", ClusterClient)
	fmt.Fprintf(bw, "  router    %-18s eth0; %s eth1 on the segment; BIRD 2, AS %d, one route to %s with a next hop per director, hashed by ports\n",
		RouterPublic, RouterLab, RouterAS, ClusterVIP)
	for i := range cfg.Directors {
		fmt.Fprintf(bw, "  %-9s %-18s TAP %s, VIP %s, AS %d announcing %s/32 (socket %s)\n", DirectorName(i), DirectorDIP(i), DirectorTAP(i), ClusterVIP, DirectorAS, ClusterVIP, DirectorSocket(s.Dir, i))
	}
	for i := 0; i < cfg.Servers; i++ {
		fmt.Fprintf(bw, "  %-9s %-18s eth0, VIP %s on lo (arp_ignore=1, arp_announce=2), gateway the router\n", RealServerHost(i), netip.PrefixFrom(RealServerAddr(i), 24), ClusterVIP)
	}
	fmt.Fprintf(bw, "\nTry:\n")
	tries := [][2]string{
		{fmt.Sprintf("%s lab exec%s client -- curl -s http://%s/", self, dirFlag, ClusterVIP), "a request, through one of the directors"},
		{fmt.Sprintf("%s lab exec%s router -- ip route show %s", self, dirFlag, ClusterVIP), "the router's ECMP route: a next hop per director"},
		{fmt.Sprintf("%s lab exec%s router -- birdc -s %s show protocols", self, dirFlag, filepath.Join(s.Dir, birdSock)), "the BGP sessions, one per director"},
		{fmt.Sprintf("%s lab exec%s d1 -- ipvsadm -L -n", self, dirFlag), "director d1's table (d2, ... the others'; or tunvsadm --socket " + DirectorSocket(s.Dir, 0) + ")"},
		metricsTry(self, dirFlag, "d1", 0),
		{fmt.Sprintf("kill -TERM $(pgrep -f 'socket %s')", DirectorSocket(s.Dir, 0)), "stop d1: it withdraws the VIP, the router keeps the others"},
		{fmt.Sprintf("%s lab down%s", self, dirFlag), "remove everything"},
	}
	width := 0
	for _, t := range tries {
		width = max(width, len(t[0]))
	}
	for _, t := range tries {
		fmt.Fprintf(bw, "  %-*s   # %s\n", width, t[0], t[1])
	}
}

// clusterFiles are what the scale-out lab adds to the state directory
// (besides d1.sock, ... and the logs), for RemoveState.
var clusterFiles = map[string]bool{birdConf: true, birdSock: true, "bird.pid": true, clusterMarker: true}

var directorSocketRE = regexp.MustCompile(`^d[0-9]+\.sock$`)

func isDirectorSocket(name string) bool { return directorSocketRE.MatchString(name) }

// sbinTool finds a tool in PATH or in /usr/sbin, /sbin (an ordinary
// user's PATH often lacks them; Debian puts bird there).
func sbinTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name)
		}
	}
	return ""
}
