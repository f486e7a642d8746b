//go:build linux

package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/procfs"
)

// opTimeout bounds the short configuration commands (ip, sysctl writes)
// that take no context.
const opTimeout = 30 * time.Second

// Topology is a set of hosts, each a network namespace, inside a sandbox.
// Its methods are safe for concurrent use.
type Topology struct {
	ip, nsenter, cat, sh string // resolved once: a missing tool fails New

	mu        sync.Mutex
	closed    bool
	root      *Host
	hosts     []*Host // excluding root, in creation order
	byName    map[string]*Host
	rootLinks []string // devices Veth and Bridge made in root, deleted by Close
}

// Host is one network namespace of a Topology: either the sandbox's own
// (Root) or one created by AddHost and kept alive by a keeper process.
type Host struct {
	t    *Topology
	name string
	pid  int
	root bool
	// nsfd is an open descriptor of the namespace: Do enters it with
	// setns, and Close recognises stray processes by its inode.
	nsfd int

	keeper   *exec.Cmd // nil for root
	lifeline *os.File  // write end of the keeper's stdin
	// ownPID: the keeper is PID 1 of the host's own PID namespace, with
	// its own /proc (keeperScript).
	ownPID bool
}

// keeperScript makes the host's mount namespace private and mounts a /proc
// for its PID namespace, then becomes the keeper ($1, cat: it exits when
// its stdin, the lifeline, closes). As PID 1 it takes every process of
// the host's PID namespace with it when it ends.
const keeperScript = `mount --make-rprivate / 2>/dev/null
mount -t proc proc /proc 2>/dev/null
exec "$1"`

// New starts a topology whose Root is the sandbox's own network namespace.
// It fails unless CheckFresh passes, before touching anything. It brings
// Root's loopback up and turns off IPv6 duplicate address detection for
// devices created from now on (so that v6 addresses work at once).
func New() (*Topology, error) {
	if err := CheckFresh(); err != nil {
		return nil, fmt.Errorf("netns: refusing to build a topology: %w", err)
	}
	t := &Topology{byName: map[string]*Host{}}
	for _, tool := range []struct {
		dst  *string
		name string
	}{{&t.ip, "ip"}, {&t.nsenter, "nsenter"}, {&t.cat, "cat"}, {&t.sh, "sh"}} {
		p, err := exec.LookPath(tool.name)
		if err != nil {
			return nil, fmt.Errorf("netns: %s is needed: %w", tool.name, err)
		}
		*tool.dst = p
	}
	// The thread group leader's namespace is the sandbox's (Do never moves
	// the main thread), so /proc/self is the right one to hold.
	fd, err := unix.Open(selfNetns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", selfNetns, err)
	}
	t.root = &Host{t: t, name: "root", pid: os.Getpid(), root: true, nsfd: fd}
	t.byName[t.root.name] = t.root
	if err := t.root.prepare(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// Root is the sandbox's own network namespace as a host: the one this
// process, and every command it starts without a Host, runs in. A director
// daemon started here creates its TUN devices here; MoveLink hands them to
// other hosts.
func (t *Topology) Root() *Host { return t.root }

// Host returns the host called name, or nil.
func (t *Topology) Host(name string) *Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byName[name]
}

// AddHost creates a host: a new network namespace with loopback up and IPv6
// duplicate address detection off for new devices.
//
// The namespace is held by a keeper, cat(1) cloned straight into it and
// reading a pipe only this process writes to. If this process dies without
// Close, the pipe reports end-of-file, cat exits, and the namespace is
// freed, even outside a PID namespace.
func (t *Topology) AddHost(name string) (*Host, error) {
	if err := CheckFresh(); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, errors.New("netns: host name is empty")
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errClosed
	}
	if _, dup := t.byName[name]; dup {
		t.mu.Unlock()
		return nil, fmt.Errorf("netns: host %s exists already", name)
	}
	t.byName[name] = nil // reserved while the lock is released to build it
	t.mu.Unlock()

	h, err := t.newHost(name)

	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil && t.closed {
		h.stop()
		err = errClosed
	}
	if err != nil {
		delete(t.byName, name)
		return nil, err
	}
	t.hosts = append(t.hosts, h)
	t.byName[name] = h
	return h, nil
}

func (t *Topology) newHost(name string) (*Host, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("netns: host %s: keeper pipe: %w", name, err)
	}
	// The keeper is PID 1 of a PID namespace of the host's own, with a
	// mount namespace whose /proc shows it: ps and kill in the host (Daemon,
	// `tunvs lab exec`) see that host's processes only, as on a machine of
	// its own. The mounts stay inside: propagation is made private first.
	// Where the kernel refuses the extra namespaces, the host has a
	// network namespace alone, and shares the sandbox's processes.
	keeper := exec.Command(t.sh, "-c", keeperScript, "keeper", t.cat)
	keeper.Stdin = r
	keeper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	ownPID := true
	if err = keeper.Start(); err != nil {
		keeper = exec.Command(t.cat)
		keeper.Stdin = r
		keeper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		err, ownPID = keeper.Start(), false
	}
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("netns: host %s: start keeper in a new network namespace: %w", name, err)
	}
	h := &Host{t: t, name: name, pid: keeper.Process.Pid, keeper: keeper, lifeline: w, nsfd: -1, ownPID: ownPID}
	if err := h.open(); err != nil {
		h.stop()
		return nil, err
	}
	if err := h.prepare(); err != nil {
		h.stop()
		return nil, err
	}
	return h, nil
}

// open takes hold of the keeper's namespace and makes sure it is a new one.
func (h *Host) open() error {
	fd, err := unix.Open(h.NetnsPath(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns: host %s: open %s: %w", h.name, h.NetnsPath(), err)
	}
	h.nsfd = fd
	same, err := sameFile(fd, h.t.root.nsfd)
	if err != nil {
		return fmt.Errorf("netns: host %s: %w", h.name, err)
	}
	if same {
		return fmt.Errorf("netns: host %s: keeper %d did not get a network namespace of its own", h.name, h.pid)
	}
	return nil
}

func sameFile(a, b int) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		return false, fmt.Errorf("fstat namespace: %w", err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		return false, fmt.Errorf("fstat namespace: %w", err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// prepareScript brings loopback up and disables DAD for all and future
// devices. $1 is ip(8). Hosts without IPv6 (ipv6.disable=1) skip the latter.
const prepareScript = `set -e
"$1" link set dev lo up
if [ -d /proc/sys/net/ipv6/conf ]; then
	echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
	echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
fi`

func (h *Host) prepare() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := h.run(ctx, false, h.t.sh, "-c", prepareScript, "sh", h.t.ip)
	return err
}

// Name is the host's name; Root's is "root".
func (h *Host) Name() string { return h.name }

// PID is a process in the host's namespace: the keeper, or this process for
// Root. ip(8) accepts it after "netns".
func (h *Host) PID() int { return h.pid }

// NetnsPath is /proc/PID/ns/net, for nsenter --net= and ip ... netns.
func (h *Host) NetnsPath() string { return "/proc/" + strconv.Itoa(h.pid) + "/ns/net" }

func (h *Host) String() string { return h.name }

// argv is the command line that runs args in the host: nsenter into the
// keeper's namespace, or args as they are for Root.
func (h *Host) argv(args []string) []string {
	if h.root {
		return args
	}
	return append([]string{h.t.nsenter, "--target", strconv.Itoa(h.pid), "--net", "--"}, args...)
}

// command checks everything a command in h needs: the sandbox, the
// topology, the arguments.
func (h *Host) command(ctx context.Context, closedOK bool, args []string) (*exec.Cmd, error) {
	if err := h.canRun(closedOK, args); err != nil {
		return nil, err
	}
	argv := h.argv(args)
	return exec.CommandContext(ctx, argv[0], argv[1:]...), nil
}

func (h *Host) canRun(closedOK bool, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("netns: host %s: no command", h.name)
	}
	if err := CheckFresh(); err != nil {
		return err
	}
	h.t.mu.Lock()
	closed := h.t.closed
	h.t.mu.Unlock()
	if closed && !closedOK {
		return errClosed
	}
	return nil
}

// Run runs args in the host and returns its combined output. The error
// names the host and the command and includes the output.
func (h *Host) Run(ctx context.Context, args ...string) (string, error) {
	return h.run(ctx, false, args...)
}

func (h *Host) run(ctx context.Context, closedOK bool, args ...string) (string, error) {
	cmd, err := h.command(ctx, closedOK, args)
	if err != nil {
		return "", err
	}
	// A command that leaves a background child holding the output pipe
	// must not hang Run.
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns: host %s: %s: %w: %s", h.name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Command prepares args to run in the host, for long-running processes
// (servers, the daemon, iperf3). The caller starts and waits for it; ctx
// kills it. If the host cannot run commands, Start returns the reason.
// Close kills processes still running in its hosts (not in Root).
//
// The process is exec'd by nsenter in place, so Cmd.Process is the program
// itself and signals reach it directly.
func (h *Host) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd, err := h.command(ctx, false, args)
	if err != nil {
		return &exec.Cmd{Err: err}
	}
	return cmd
}

// Daemon is Command for a process that belongs to the host as on a
// machine of its own (a real server): it runs in the host's PID and mount
// namespaces too, so ps and kill in the host (`tunvs lab exec`) see it
// and nothing of the other hosts. dir is its working directory.
//
// nsenter forks to enter the PID namespace, so Cmd.Process is nsenter and
// the program its child, in a process group of its own. SignalGroup
// (which ctx's cancellation uses too) signals the program, not nsenter:
// nsenter then reaps it and exits with its status. Were nsenter killed
// first, the program would be orphaned to the sandbox's init, which does
// not reap it, and its zombie would hold up the end of the host's PID
// namespace (zap_pid_ns_processes waits for it). Without the host's own
// PID namespace it is Command with dir.
func (h *Host) Daemon(ctx context.Context, dir string, args ...string) *exec.Cmd {
	if h.root || !h.ownPID {
		cmd := h.Command(ctx, args...)
		cmd.Dir = dir
		return cmd
	}
	if err := h.canRun(false, args); err != nil {
		return &exec.Cmd{Err: err}
	}
	// Entering the mount namespace moves to its root: cd back.
	argv := append([]string{h.t.nsenter, "--target", strconv.Itoa(h.pid), "--net", "--pid", "--mount", "--",
		h.t.sh, "-c", `cd "$0" 2>/dev/null; exec "$@"`, dir}, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return SignalGroup(cmd, syscall.SIGKILL) }
	return cmd
}

// SignalGroup signals a started Cmd: for one that leads a process group
// (Daemon's), the group's other processes (nsenter's child, the program),
// or the leader when it has none left; else its process.
func SignalGroup(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return errors.New("netns: not started")
	}
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid {
		return cmd.Process.Signal(sig)
	}
	leader := cmd.Process.Pid
	n := 0
	for _, pid := range groupMembers(leader) {
		if pid != leader && syscall.Kill(pid, sig) == nil {
			n++
		}
	}
	if n == 0 {
		return cmd.Process.Signal(sig)
	}
	return nil
}

// groupMembers lists the processes of process group pgid, from /proc
// (field 5 of /proc/PID/stat).
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procfs.StatOf(pid); err == nil && st.Field(5) == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// OwnPID tells whether the host has a PID namespace (and /proc) of its
// own.
func (h *Host) OwnPID() bool { return h.ownPID }

// IP runs ip(8) with args in the host.
func (h *Host) IP(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err := h.Run(ctx, append([]string{h.t.ip}, args...)...)
	return err
}

// sysctlPath maps "net.ipv4.ip_forward" to /proc/sys/net/ipv4/ip_forward.
// Keys with a slash are taken as paths under /proc/sys already, which is
// how to name a device with a dot in it ("net/ipv6/conf/eth0.7/accept_dad").
func sysctlPath(key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "..") {
		return "", fmt.Errorf("netns: bad sysctl key %q", key)
	}
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	return "/proc/sys/" + key, nil
}

// Sysctl sets a sysctl in the host. Only net.* keys are accepted: those are
// the network namespace's own (a non-initial namespace does not even show
// the global ones), while kernel.*, vm.* and the like are the machine's. A
// sandbox created by root is still uid 0 for file permission checks, and
// /proc/sys lets uid 0 write many of those.
func (h *Host) Sysctl(key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(path, "/proc/sys/net/") {
		return fmt.Errorf("netns: host %s: sysctl %s is not per network namespace; refusing to change the machine's", h.name, key)
	}
	// /proc/sys/net shows the namespace of the process that opens it, so
	// the write is done by a process in the host.
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, err = h.Run(ctx, h.t.sh, "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, path)
	return err
}

// ReadSysctl returns a sysctl's value as the host sees it.
func (h *Host) ReadSysctl(key string) (string, error) {
	path, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	out, err := h.Run(ctx, h.t.cat, path)
	return strings.TrimSpace(out), err
}

// Forwarding turns IPv4 and IPv6 forwarding on or off in the host, making
// it a router.
func (h *Host) Forwarding(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := h.Sysctl("net.ipv4.ip_forward", v); err != nil {
		return err
	}
	return h.Sysctl("net.ipv6.conf.all.forwarding", v)
}

// DisableDAD turns off IPv6 duplicate address detection on dev. Devices
// created after New or AddHost have it off already; this is for devices
// that existed before (or that came from another namespace).
func (h *Host) DisableDAD(dev string) error {
	return h.Sysctl("net/ipv6/conf/"+dev+"/accept_dad", "0")
}

// LinkUp sets dev up.
func (h *Host) LinkUp(dev string) error { return h.IP("link", "set", "dev", dev, "up") }

// AddAddr adds an address in CIDR notation to dev. IPv6 addresses get
// "nodad", so they are usable at once instead of tentative for a second.
func (h *Host) AddAddr(dev, cidr string) error {
	args := []string{"addr", "add", cidr, "dev", dev}
	if p, err := netip.ParsePrefix(cidr); err == nil && p.Addr().Is6() && !p.Addr().Is4In6() {
		args = append(args, "nodad")
	}
	return h.IP(args...)
}

// AddRoute runs `ip route add args...` in the host, with -6 when any
// argument is an IPv6 address or prefix (ip(8) would otherwise read
// "default via fd00::1" as IPv4).
func (h *Host) AddRoute(args ...string) error {
	ipArgs := []string{"route", "add"}
	for _, a := range args {
		if isIPv6(a) {
			ipArgs = []string{"-6", "route", "add"}
			break
		}
	}
	return h.IP(append(ipArgs, args...)...)
}

func isIPv6(s string) bool {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr().Is6()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Is6()
	}
	return false
}

// Veth joins a and b with a veth pair: aName in a, bName in b, both up
// (mtu 0 keeps the default of 1500). The b end is created directly in b, so
// the names only have to be unique within their own host. a and b may be the
// same host.
func (t *Topology) Veth(a *Host, aName string, b *Host, bName string, mtu int) error {
	if a.t != t || b.t != t {
		return fmt.Errorf("netns: veth %s-%s: hosts belong to another topology", aName, bName)
	}
	var m []string
	if mtu > 0 {
		m = []string{"mtu", strconv.Itoa(mtu)}
	}
	args := append([]string{"link", "add", aName}, m...)
	args = append(args, "type", "veth", "peer", "name", bName)
	args = append(args, m...)
	if a != b {
		args = append(args, "netns", strconv.Itoa(b.pid))
	}
	if err := a.IP(args...); err != nil {
		return err
	}
	// Deleting either end deletes the pair; one root end is enough to
	// remember.
	switch {
	case a.root:
		t.noteRootLink(aName)
	case b.root:
		t.noteRootLink(bName)
	}
	if err := a.LinkUp(aName); err != nil {
		return err
	}
	return b.LinkUp(bName)
}

// Bridge creates bridge name in the host, enslaves members (devices already
// in the host), and sets all of them up. STP stays off, so ports forward at
// once.
func (h *Host) Bridge(name string, members ...string) error {
	if err := h.IP("link", "add", "name", name, "type", "bridge"); err != nil {
		return err
	}
	if h.root {
		h.t.noteRootLink(name)
	}
	for _, m := range members {
		if err := h.IP("link", "set", "dev", m, "master", name); err != nil {
			return err
		}
		if err := h.LinkUp(m); err != nil {
			return err
		}
	}
	return h.LinkUp(name)
}

// MoveLink moves dev from h into to. The device arrives down and without
// addresses (the kernel drops them on the way); set it up with to.LinkUp.
// Open descriptors stay valid: a TUN device created in Root by a daemon
// keeps working through the daemon's file descriptor after the move.
func (h *Host) MoveLink(dev string, to *Host) error {
	if to.t != h.t {
		return fmt.Errorf("netns: move %s: host %s belongs to another topology", dev, to.name)
	}
	if err := h.IP("link", "set", "dev", dev, "netns", strconv.Itoa(to.pid)); err != nil {
		return err
	}
	if to.root {
		h.t.noteRootLink(dev)
	}
	return nil
}

func (t *Topology) noteRootLink(dev string) {
	t.mu.Lock()
	t.rootLinks = append(t.rootLinks, dev)
	t.mu.Unlock()
}

// WaitLink polls until dev exists in h, for devices that another process
// (the daemon) creates or moves there.
func WaitLink(h *Host, dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var lookErr error
		err := h.Do(func() error {
			_, lookErr = net.InterfaceByName(dev)
			return nil
		})
		if err != nil {
			return err
		}
		if lookErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: host %s: device %s did not appear within %v: %w", h.name, dev, timeout, lookErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Do runs fn on an operating system thread that has entered the host's
// network namespace, and returns fn's error. Sockets fn creates (net.Listen,
// net.Dial, net.ListenPacket) belong to the host and keep belonging to it
// when used later from any goroutine, which is how tests put Go clients and
// servers on hosts without extra processes.
//
// Only fn's own thread is in the host. Goroutines it starts run elsewhere,
// name resolution may too, so dial literal addresses. A panic in fn is
// re-raised in the caller.
func (h *Host) Do(fn func() error) error {
	if err := CheckFresh(); err != nil {
		return err
	}
	h.t.mu.Lock()
	if h.t.closed {
		h.t.mu.Unlock()
		return errClosed
	}
	// A private duplicate, so that Close may close nsfd meanwhile.
	fd, err := unix.FcntlInt(uintptr(h.nsfd), unix.F_DUPFD_CLOEXEC, 0)
	h.t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("netns: host %s: dup namespace descriptor: %w", h.name, err)
	}
	ch := make(chan doResult, 1)
	go h.doLocked(fd, fn, ch)
	r := <-ch
	if r.panicked {
		panic(fmt.Sprintf("netns: panic in Do on host %s: %v\n%s", h.name, r.value, r.stack))
	}
	return r.err
}

type doResult struct {
	err      error
	panicked bool
	value    any
	stack    []byte
}

func (h *Host) doLocked(fd int, fn func() error, ch chan<- doResult) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread cannot be thrown away (the runtime parks it
		// instead), and /proc/PID/ns/net, which ip's "netns PID" and
		// CheckFresh read, follows it. So never move it: hand over to a
		// goroutine that, while we keep the main thread locked, must run
		// on another thread.
		inner := make(chan doResult, 1)
		go h.doLocked(fd, fn, inner)
		ch <- <-inner
		runtime.UnlockOSThread()
		return
	}
	// Deliberately no UnlockOSThread: a goroutine that exits while locked
	// takes its thread with it, so a thread left in the host's namespace is
	// never reused for other goroutines.
	err := unix.Setns(fd, unix.CLONE_NEWNET)
	unix.Close(fd)
	if err != nil {
		ch <- doResult{err: fmt.Errorf("netns: host %s: setns: %w", h.name, err)}
		return
	}
	defer func() {
		if p := recover(); p != nil {
			ch <- doResult{panicked: true, value: p, stack: debug.Stack()}
		}
	}()
	ch <- doResult{err: fn()}
}

// Close tears the topology down: it kills every process left in the hosts'
// namespaces (servers started with Command included; their owners still
// Wait for them), stops the keepers and waits for them, which frees the
// namespaces and every device in them, and deletes the bridges and veth
// ends it created in Root. Processes in Root are the caller's. Idempotent;
// the first call's error covers everything that could not be undone.
//
// Processes are found by their namespace, so one whose Start races with
// Close may be missed (nsenter has not switched yet, then fails to or
// switches into a namespace nothing else uses). The sandbox's PID namespace
// is the backstop: it kills everything when the sandbox exits.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	hosts, rootLinks := t.hosts, t.rootLinks
	t.mu.Unlock()

	var errs []error
	ours, keepers := namespaceKeys(hosts)
	killStrays(ours, keepers)
	for _, h := range hosts {
		errs = append(errs, h.stop())
	}
	// A process started with Command just before Close may have been
	// between nsenter's fork and its setns during the first scan. With the
	// keepers gone, nsenter can no longer open a host's namespace, and one
	// that had opened it already shows up here once it has switched.
	for i := 0; i < 3; i++ {
		time.Sleep(5 * time.Millisecond)
		if killStrays(ours, keepers) == 0 && i > 0 {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	for _, dev := range rootLinks {
		// A veth whose peer namespace just died is gone already.
		if _, err := t.root.run(ctx, true, t.ip, "link", "del", "dev", dev); err != nil &&
			!strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	unix.Close(t.root.nsfd)
	return errors.Join(errs...)
}

type nsKey struct{ dev, ino uint64 }

// namespaceKeys identifies the hosts' namespaces (which outlive the
// keepers while anything still holds them) and the keepers' PIDs.
func namespaceKeys(hosts []*Host) (map[nsKey]bool, map[int]bool) {
	ours := map[nsKey]bool{}
	keepers := map[int]bool{os.Getpid(): true}
	for _, h := range hosts {
		var st unix.Stat_t
		if h.nsfd >= 0 && unix.Fstat(h.nsfd, &st) == nil {
			ours[nsKey{st.Dev, st.Ino}] = true
		}
		keepers[h.pid] = true
	}
	return ours, keepers
}

// killStrays sends SIGKILL to every process, other than the keepers, whose
// network namespace is one of ours, and returns how many it found. They can
// only be there because they were started there, by this topology's users.
func killStrays(ours map[nsKey]bool, keepers map[int]bool) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || keepers[pid] {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue // gone, or not ours to look at
		}
		if ours[nsKey{st.Dev, st.Ino}] {
			unix.Kill(pid, unix.SIGKILL)
			n++
		}
	}
	return n
}

// stop ends the keeper and releases the namespace.
func (h *Host) stop() error {
	var err error
	if h.keeper != nil {
		h.lifeline.Close() // cat sees EOF and exits on its own
		h.keeper.Process.Kill()
		done := make(chan struct{})
		go func() {
			h.keeper.Wait() // "signal: killed" is the expected result
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("netns: host %s: keeper %d did not exit", h.name, h.pid)
		}
	}
	if h.nsfd >= 0 {
		unix.Close(h.nsfd)
	}
	return err
}
