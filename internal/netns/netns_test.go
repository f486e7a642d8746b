//go:build linux

package netns

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/csum"
)

func TestVerifyFresh(t *testing.T) {
	const outer, inner = "net:[4026531840]", "net:[4026532999]"
	readErr := errors.New("permission denied")
	for _, tc := range []struct {
		name     string
		marker   string
		outer    string
		hasOuter bool
		cur      string
		readErr  error
		wantErr  string // "" means success
	}{
		{"fresh", "1", outer, true, inner, nil, ""},
		{"same namespace", "1", outer, true, outer, nil, "still in the outer network namespace"},
		{"unreadable proc", "1", outer, true, "", readErr, "cannot read /proc/self/ns/net"},
		{"no marker", "", outer, true, inner, nil, "not inside a sandbox"},
		{"no outer", "1", "", false, inner, nil, "is missing"},
		{"empty outer", "1", "", true, inner, nil, "is missing"},
		{"garbage outer", "1", "x", true, inner, nil, "is not a network namespace identity"},
		{"garbage current", "1", outer, true, "mnt:[1]", nil, "not a network namespace identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyFresh(tc.marker, tc.outer, tc.hasOuter, tc.cur, tc.readErr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("verifyFresh: %v, want success", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("verifyFresh succeeded, want %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("verifyFresh: %v, want %q", err, tc.wantErr)
			}
			if tc.readErr != nil && !errors.Is(err, tc.readErr) {
				t.Errorf("verifyFresh does not wrap the read error: %v", err)
			}
		})
	}
}

func TestRunPattern(t *testing.T) {
	for name, want := range map[string]string{
		"TestA":              `^TestA$`,
		"TestA/b_c#01":       `^TestA$/^b_c#01$`,
		"TestA/x.(y)|[z]/w+": `^TestA$/^x\.\(y\)\|\[z\]$/^w\+$`,
	} {
		if got := runPattern(name); got != want {
			t.Errorf("runPattern(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestSubLevels(t *testing.T) {
	for _, c := range []struct {
		pattern string
		depth   int
		want    []string
	}{
		{"TestSYNFlood$/uid65534/max_synproxy_always", 2, []string{"max_synproxy_always"}},
		{"TestSYNFlood$/uid65534/max_synproxy_always", 1, []string{"uid65534", "max_synproxy_always"}},
		{"TestSYNFlood$/uid65534", 2, nil},
		{"TestSYNFlood", 1, nil},
		{"", 1, nil},
		{`TestA/[/]x/(a/b)\/c/d`, 1, []string{`[/]x`, `(a/b)\/c`, "d"}},
		{"TestA|TestB/x/y", 1, nil},
		{"TestA/(x|y)/z", 1, []string{"(x|y)", "z"}},
	} {
		if got := subLevels(c.pattern, c.depth); !slices.Equal(got, c.want) {
			t.Errorf("subLevels(%q, %d) = %q, want %q", c.pattern, c.depth, got, c.want)
		}
	}
}

func TestInnerVerdict(t *testing.T) {
	out := "=== RUN   TestX\n=== RUN   TestX/a\n    --- SKIP: TestX/a (0.00s)\n--- PASS: TestX (0.01s)\n"
	for name, want := range map[string]string{"TestX": "PASS", "TestX/a": "SKIP", "TestX/b": "", "TestX/": ""} {
		if got := innerVerdict(out, name); got != want {
			t.Errorf("innerVerdict(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestDiagnose(t *testing.T) {
	got := diagnose("unshare: unshare failed: No space left on device", map[string]string{
		"/proc/sys/user/max_user_namespaces":                     "0",
		"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1",
	})
	for _, want := range []string{"user.max_user_namespaces is 0", "AppArmor", "user.max_user_namespaces=0"} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnose: %q lacks %q", got, want)
		}
	}
	if got := diagnose("", nil); got != "" {
		t.Errorf("diagnose with nothing to say = %q", got)
	}
}

// outerState describes this namespace's devices and addresses, read-only.
func outerState(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%d %s %v %v\n", ifc.Index, ifc.Name, ifc.Flags, addrs)
	}
	return b.String()
}

// TestNewOutsideSandbox makes sure that outside a sandbox nothing works and
// nothing changes, even when the environment claims otherwise.
func TestNewOutsideSandbox(t *testing.T) {
	if Inside() {
		t.Skip("only meaningful outside a sandbox")
	}
	before := outerState(t)
	t.Setenv(EnvSandbox, "")
	t.Setenv(EnvOuterNetns, "")
	os.Unsetenv(EnvSandbox)
	os.Unsetenv(EnvOuterNetns)
	if err := CheckFresh(); err == nil {
		t.Fatal("CheckFresh passed outside a sandbox")
	}
	if topo, err := New(); err == nil {
		topo.Close()
		t.Fatal("New succeeded outside a sandbox")
	} else {
		t.Logf("New without a sandbox: %v", err)
	}

	// A lying environment: the marker set and the "outer" namespace being
	// this very one.
	id, err := readNetnsID()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSandbox, "1")
	t.Setenv(EnvOuterNetns, id)
	if err := CheckFresh(); err == nil || !strings.Contains(err.Error(), "still in the outer") {
		t.Fatalf("CheckFresh with the outer namespace = current one: %v", err)
	}
	if _, err := New(); err == nil {
		t.Fatal("New succeeded in the outer namespace")
	} else {
		t.Logf("New in the outer namespace: %v", err)
	}
	if after := outerState(t); after != before {
		t.Fatalf("the outer namespace changed:\nbefore:\n%safter:\n%s", before, after)
	}
}

// TestTopology builds real topologies, once in a sandbox made by root and
// once in one made by uid 65534.
func TestTopology(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts SandboxOptions
	}{
		{"root", SandboxOptions{}},
		{"uid65534", SandboxOptions{Unprivileged: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			if !Inside() {
				want := os.Geteuid()
				if mode.opts.Unprivileged && want == 0 {
					want = UnprivilegedUID
				} else if !mode.opts.Unprivileged && want != 0 {
					t.Skip("needs root outside the sandbox; the uid65534 case covers ordinary users")
				}
				mode.opts.Env = []string{"NETNS_TEST_OUTER_UID=" + strconv.Itoa(want)}
			}
			if !RunInSandbox(t, mode.opts) {
				return
			}
			testTopology(t)
		})
	}
}

// testTopology runs inside the sandbox.
func testTopology(t *testing.T) {
	// Who made this sandbox? uid_map says: "0 <outer uid> 1".
	uidMap, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(uidMap))
	if len(f) != 3 || f[0] != "0" || f[1] != os.Getenv("NETNS_TEST_OUTER_UID") {
		t.Fatalf("uid_map %q, want root mapped to outer uid %s", uidMap, os.Getenv("NETNS_TEST_OUTER_UID"))
	}
	t.Logf("inside: uid %d, mapped from outer uid %s, pid %d, %s", os.Geteuid(), f[1], os.Getpid(), mustNetnsID(t))

	topo, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	root := topo.Root()
	a := mustHost(t, topo, "a")
	b := mustHost(t, topo, "b")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("veth", func(t *testing.T) {
		must(t, topo.Veth(a, "eth0", b, "eth0", 1500))
		must(t, a.AddAddr("eth0", "10.200.0.1/24"))
		must(t, b.AddAddr("eth0", "10.200.0.2/24"))
		must(t, a.AddAddr("eth0", "fd00:200::1/64"))
		must(t, b.AddAddr("eth0", "fd00:200::2/64"))
		for _, p := range []struct {
			from *Host
			to   string
		}{{a, "10.200.0.2"}, {b, "10.200.0.1"}, {a, "fd00:200::2"}, {b, "fd00:200::1"}} {
			pingOK(t, p.from, p.to)
		}
		out, err := a.Run(ctx, "ip", "-o", "addr", "show", "dev", "eth0")
		must(t, err)
		if strings.Contains(out, "tentative") {
			t.Errorf("v6 address still tentative despite nodad:\n%s", out)
		}
		// The root namespace saw none of it.
		if _, err := root.Run(ctx, "ip", "link", "show", "dev", "eth0"); err == nil {
			t.Error("eth0 exists in the root namespace")
		}
		// Each side's counters have the other's echo requests and
		// replies, four pings' worth at least.
		for _, h := range []*Host{a, b} {
			l, err := h.LinkStats("eth0")
			must(t, err)
			if l.RX.Packets < 4 || l.TX.Packets < 4 {
				t.Errorf("%s eth0: %+v, want 4 or more packets each way", h, l)
			}
		}
		if _, err := a.LinkStats("nosuchdev"); err == nil {
			t.Error("LinkStats of a missing device: no error")
		}
		all, err := a.AllLinkStats()
		must(t, err)
		if l, ok := all["eth0"]; !ok || l.RX.Packets < 4 {
			t.Errorf("AllLinkStats: %+v, want eth0 with 4 or more packets received", all)
		}
		if _, ok := all["lo"]; !ok {
			t.Errorf("AllLinkStats: %+v, want lo too", all)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		// A Go server in b and a Go client in a, through Do.
		ln, err := b.ListenEcho("tcp", "[fd00:200::2]:0")
		must(t, err)
		defer ln.Close()
		var c net.Conn
		must(t, a.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
			return err
		}))
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != "hello\n" {
			t.Fatalf("echo: %q, %v", line, err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "fd00:200::1" {
			t.Errorf("client address %s, want fd00:200::1", got)
		}
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not installed")
		}
		// curl, a real client program, run in a against a Go server in b.
		var ln net.Listener
		must(t, b.Do(func() (err error) {
			ln, err = net.Listen("tcp", "10.200.0.2:8080")
			return err
		}))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s\n", r.RemoteAddr)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		out, err := a.Run(ctx, "curl", "-sS", "--max-time", "5", "http://10.200.0.2:8080/")
		must(t, err)
		if !strings.HasPrefix(out, "hello 10.200.0.1:") {
			t.Fatalf("curl: %q", out)
		}
	})

	t.Run("iperf3", func(t *testing.T) {
		for _, tool := range []string{"iperf3", "ss"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s not installed", tool)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		srv := b.Command(ctx, "iperf3", "-s", "-1", "-B", "10.200.0.2", "-p", "5201")
		var srvOut bytes.Buffer
		srv.Stdout, srv.Stderr = &srvOut, &srvOut
		must(t, srv.Start())
		defer srv.Wait()
		for {
			out, err := b.Run(ctx, "ss", "-Hltn", "sport = :5201")
			must(t, err)
			if strings.TrimSpace(out) != "" {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		out, err := a.Run(ctx, "iperf3", "-c", "10.200.0.2", "-p", "5201", "-n", "8M")
		if err != nil {
			t.Fatalf("%v\nserver:\n%s", err, srvOut.String())
		}
		if err := srv.Wait(); err != nil {
			t.Fatalf("iperf3 server: %v\n%s", err, srvOut.String())
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "receiver") {
				t.Logf("iperf3: %s", strings.TrimSpace(l))
			}
		}
	})

	t.Run("sysctl", func(t *testing.T) {
		const key = "net.ipv4.ip_forward"
		rootBefore := readSysctl(t, root, key)
		bBefore := readSysctl(t, b, key)
		want := "1"
		if readSysctl(t, a, key) == "1" {
			want = "0"
		}
		must(t, a.Sysctl(key, want))
		if got := readSysctl(t, a, key); got != want {
			t.Errorf("a: %s = %s after writing %s", key, got, want)
		}
		if got := readSysctl(t, b, key); got != bBefore {
			t.Errorf("writing a's %s changed b's: %s -> %s", key, bBefore, got)
		}
		if got := readSysctl(t, root, key); got != rootBefore {
			t.Errorf("writing a's %s changed root's: %s -> %s", key, rootBefore, got)
		}
		for _, key := range []string{"kernel.hostname", "vm/swappiness", "net"} {
			if err := a.Sysctl(key, "1"); err == nil || !strings.Contains(err.Error(), "not per network namespace") {
				t.Errorf("Sysctl(%q): %v, want a refusal", key, err)
			}
		}
		if got := readSysctl(t, a, "net.ipv6.conf.default.accept_dad"); got != "0" {
			t.Errorf("a: default accept_dad = %s, want 0", got)
		}
	})

	t.Run("bridge", func(t *testing.T) {
		sw := mustHost(t, topo, "sw")
		var hosts []*Host
		for i := 1; i <= 3; i++ {
			h := mustHost(t, topo, fmt.Sprintf("h%d", i))
			must(t, topo.Veth(h, "eth0", sw, fmt.Sprintf("p%d", i), 0))
			must(t, h.AddAddr("eth0", fmt.Sprintf("10.201.0.%d/24", i)))
			must(t, h.AddAddr("eth0", fmt.Sprintf("fd00:201::%d/64", i)))
			hosts = append(hosts, h)
		}
		must(t, sw.Bridge("br0", "p1", "p2", "p3"))
		for i, h := range hosts {
			for j := range hosts {
				if i != j {
					pingOK(t, h, fmt.Sprintf("10.201.0.%d", j+1))
				}
			}
		}
		pingOK(t, hosts[0], "fd00:201::3")
		pingOK(t, hosts[2], "fd00:201::2")
	})

	t.Run("root-veth", func(t *testing.T) {
		must(t, topo.Veth(root, "r0", a, "r0", 0))
		must(t, root.AddAddr("r0", "10.202.0.1/24"))
		must(t, a.AddAddr("r0", "10.202.0.2/24"))
		pingOK(t, root, "10.202.0.2")
		pingOK(t, a, "10.202.0.1")
		// Plain sockets of this process are in root too.
		var c net.Conn
		ln, err := net.Listen("tcp", "10.202.0.1:0")
		must(t, err)
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		must(t, a.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", ln.Addr().String(), 3*time.Second)
			return err
		}))
		c.Close()
	})

	t.Run("movelink", func(t *testing.T) {
		if err := root.IP("link", "add", "d0", "type", "dummy"); err != nil {
			if !strings.Contains(err.Error(), "Unknown device type") {
				t.Fatal(err)
			}
			// Kernels built without CONFIG_DUMMY (small VM kernels): one
			// end of a veth pair is as movable as a dummy.
			t.Logf("no dummy devices (%v); moving one end of a veth pair instead", err)
			must(t, root.IP("link", "add", "d0", "type", "veth", "peer", "name", "d0peer"))
		}
		must(t, root.MoveLink("d0", a))
		must(t, WaitLink(a, "d0", 2*time.Second))
		if _, err := root.Run(ctx, "ip", "link", "show", "dev", "d0"); err == nil {
			t.Error("d0 is still in root after the move")
		}
		must(t, a.LinkUp("d0"))
		must(t, a.AddAddr("d0", "10.204.0.1/32"))
		if err := WaitLink(b, "d0", 50*time.Millisecond); err == nil {
			t.Error("d0 appeared in b")
		}
	})

	t.Run("tun", func(t *testing.T) { testTUNMove(t, topo, a) })

	t.Run("do", func(t *testing.T) {
		want, err := os.Readlink(a.NetnsPath())
		must(t, err)
		rootID := mustNetnsID(t)
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- a.Do(func() error {
					got, err := os.Readlink("/proc/thread-self/ns/net")
					if err == nil && got != want {
						err = fmt.Errorf("Do ran in %s, want host a's %s", got, want)
					}
					return err
				})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		// Neither the main thread nor ordinary goroutines moved.
		if got := mustNetnsID(t); got != rootID {
			t.Fatalf("/proc/self/ns/net is %s after Do, want root's %s", got, rootID)
		}
		if got, err := os.Readlink("/proc/thread-self/ns/net"); err != nil || got != rootID {
			t.Fatalf("this thread is in %s (%v) after Do, want root's %s", got, err, rootID)
		}
		func() {
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "boom") {
					t.Errorf("panic in Do came back as %v", p)
				}
			}()
			a.Do(func() error { panic("boom") })
		}()
	})

	t.Run("close", func(t *testing.T) {
		stray := b.Command(ctx, "sleep", "300")
		must(t, stray.Start())
		// Close finds processes by namespace; let nsenter switch first.
		waitInNamespace(t, stray.Process.Pid, b)
		pids := []int{}
		for _, name := range []string{"a", "b", "sw", "h1", "h2", "h3"} {
			if h := topo.Host(name); h != nil {
				pids = append(pids, h.PID())
			}
		}
		if err := topo.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, pid := range pids {
			if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
				t.Errorf("keeper %d survived Close: kill(0) = %v", pid, err)
			}
		}
		werr := make(chan error, 1)
		go func() { werr <- stray.Wait() }()
		select {
		case err := <-werr:
			if err == nil {
				t.Error("the stray sleep exited cleanly; Close should have killed it")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close left the stray sleep running")
		}
		if err := unix.Kill(stray.Process.Pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("stray %d survived Close: %v", stray.Process.Pid, err)
		}
		if out, err := exec.Command("ip", "link", "show", "dev", "r0").CombinedOutput(); err == nil {
			t.Errorf("Close left r0 in root:\n%s", out)
		}
		if err := topo.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := topo.AddHost("late"); !errors.Is(err, errClosed) {
			t.Errorf("AddHost after Close: %v", err)
		}
		if err := a.IP("link"); !errors.Is(err, errClosed) {
			t.Errorf("IP after Close: %v", err)
		}
		if err := a.Command(ctx, "true").Start(); !errors.Is(err, errClosed) {
			t.Errorf("Command after Close: %v", err)
		}
		if err := a.Do(func() error { return nil }); !errors.Is(err, errClosed) {
			t.Errorf("Do after Close: %v", err)
		}
	})
}

// TestLifeline checks that a sandbox dies, with its namespaces, when the
// process that created it goes away: closing the lifeline here is what the
// kernel does when that process dies.
func TestLifeline(t *testing.T) {
	if os.Getenv("NETNS_TEST_LIFELINE_CHILD") == "1" {
		lifelineChild(t)
		return
	}
	if Inside() {
		t.Skip("the outer half runs outside a sandbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := SandboxOptions{
		Unprivileged: true,
		Args:         []string{"-test.run=^TestLifeline$", "-test.v=true"},
		Env:          []string{"NETNS_TEST_LIFELINE_CHILD=1"},
	}
	if err := Probe(ctx, opts); err != nil {
		Unavailable(t, "%v", err)
	}
	sb, err := Sandbox(ctx, opts)
	must(t, err)
	defer sb.Close()
	stdout, err := sb.Cmd.StdoutPipe()
	must(t, err)
	var stderr bytes.Buffer
	sb.Cmd.Stderr = &stderr
	must(t, sb.Start())

	var hostNS string
	lines := bufio.NewScanner(stdout)
	var seen strings.Builder
	for lines.Scan() {
		seen.WriteString(lines.Text() + "\n")
		if id, ok := strings.CutPrefix(lines.Text(), "READY "); ok {
			hostNS = id
			break
		}
	}
	if hostNS == "" {
		sb.Wait()
		t.Fatalf("the child never got ready:\n%s%s", seen.String(), stderr.String())
	}
	drained := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdout)
		close(drained)
	}()
	if n := processesIn(t, hostNS); n == 0 {
		t.Fatalf("no process in the child's host namespace %s is visible from outside", hostNS)
	}

	must(t, sb.Close()) // as if this process had died
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the sandbox outlived its lifeline by 10s")
	}
	err = sb.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("sandbox ended with %v, want exit status 3 from the lifeline\n%s", err, stderr.String())
	}
	if n := processesIn(t, hostNS); n != 0 {
		t.Fatalf("%d processes are still in %s after the sandbox died", n, hostNS)
	}
	t.Logf("sandbox exited on its lifeline: %v: %s", err, strings.TrimSpace(stderr.String()))
}

func lifelineChild(t *testing.T) {
	topo, err := New()
	must(t, err)
	h := mustHost(t, topo, "x")
	id, err := os.Readlink(h.NetnsPath())
	must(t, err)
	fmt.Printf("READY %s\n", id)
	time.Sleep(30 * time.Second)
	t.Fatal("still alive 30s after getting ready: the lifeline did not fire")
}

// processesIn counts the processes in network namespace id, as far as this
// process may look.
func processesIn(t *testing.T, id string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	must(t, err)
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if got, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && got == id {
			n++
		}
	}
	return n
}

func TestProbeMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := Probe(context.Background(), SandboxOptions{})
	if err == nil || !strings.Contains(err.Error(), "unshare (util-linux) is needed") {
		t.Fatalf("Probe without unshare: %v", err)
	}
	if _, err := Sandbox(context.Background(), SandboxOptions{}); err == nil {
		t.Fatal("Sandbox without unshare succeeded")
	}
}

// TestProbeExplainsFailure runs Probe against an unshare that fails the way
// a kernel without unprivileged user namespaces makes it fail.
func TestProbeExplainsFailure(t *testing.T) {
	dir := t.TempDir()
	fake := "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
	must(t, os.WriteFile(dir+"/unshare", []byte(fake), 0o755))
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	err := Probe(context.Background(), SandboxOptions{})
	if err == nil {
		t.Fatal("Probe passed with a failing unshare")
	}
	for _, want := range []string{"cannot create a sandbox as uid", "Operation not permitted", "exit status 1", "user.max_user_namespaces="} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Probe error lacks %q: %v", want, err)
		}
	}
	t.Logf("Probe: %v", err)
}

// testTUNMove creates a TUN device in root, as the daemon would, moves it to
// host a and checks that the file descriptor still carries packets both
// ways.
func testTUNMove(t *testing.T, topo *Topology, a *Host) {
	if err := CheckTUN(); err != nil {
		Unavailable(t, "%v", err)
	}
	fd, err := unix.Open(TUNPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	must(t, err)
	ifr, err := unix.NewIfreq("tun7")
	must(t, err)
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("TUNSETIFF: %v", err)
	}
	must(t, unix.SetNonblock(fd, true))
	tun := os.NewFile(uintptr(fd), "tun7")
	defer tun.Close()

	root := topo.Root()
	must(t, WaitLink(root, "tun7", time.Second))
	must(t, root.MoveLink("tun7", a))
	must(t, WaitLink(a, "tun7", 2*time.Second))
	must(t, a.LinkUp("tun7"))
	must(t, a.AddAddr("tun7", "10.203.0.1/24"))

	// Out of a's stack, into our descriptor.
	var uc net.Conn
	must(t, a.Do(func() (err error) {
		uc, err = net.Dial("udp", "10.203.0.2:9")
		return err
	}))
	defer uc.Close()
	_, err = uc.Write([]byte("tunvs-tun-out"))
	must(t, err)
	readTUN(t, tun, func(p []byte) bool {
		return len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP && bytes.Equal(p[28:], []byte("tunvs-tun-out"))
	})

	// Into a's stack through our descriptor: an echo request, answered by a.
	req := ipv4Packet([4]byte{10, 203, 0, 2}, [4]byte{10, 203, 0, 1}, unix.IPPROTO_ICMP, echo(8, 0x7475, 1, true))
	_, err = tun.Write(req)
	must(t, err)
	readTUN(t, tun, func(p []byte) bool {
		return len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_ICMP && p[20] == 0 &&
			binary.BigEndian.Uint16(p[24:]) == 0x7475 && bytes.Equal(p[16:20], []byte{10, 203, 0, 2})
	})
}

func readTUN(t *testing.T, tun *os.File, match func([]byte) bool) {
	t.Helper()
	tun.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("reading the moved TUN device: %v", err)
		}
		if match(buf[:n]) {
			return
		}
	}
}

func ipv4Packet(src, dst [4]byte, proto byte, payload []byte) []byte {
	p := make([]byte, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = proto
	copy(p[12:], src[:])
	copy(p[16:], dst[:])
	csum.SetIPv4Header(p[:20])
	copy(p[20:], payload)
	return p
}

func TestCopyExecutable(t *testing.T) {
	src, err := os.Executable()
	must(t, err)
	dst, remove, err := CopyExecutable(src)
	must(t, err)
	for _, p := range []string{dst, dirOf(dst)} {
		fi, err := os.Stat(p)
		must(t, err)
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", p, fi.Mode().Perm())
		}
	}
	must(t, remove())
	if _, err := os.Stat(dirOf(dst)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove left %s: %v", dirOf(dst), err)
	}
}

func dirOf(p string) string { return p[:strings.LastIndexByte(p, '/')] }

// waitInNamespace waits until process pid has entered h's namespace.
func waitInNamespace(t *testing.T, pid int, h *Host) {
	t.Helper()
	want, err := os.Readlink(h.NetnsPath())
	must(t, err)
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(time.Millisecond) {
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not enter host %s's namespace %s", pid, h.Name(), want)
		}
	}
}

func pingOK(t *testing.T, from *Host, to string) {
	t.Helper()
	// Generous: the machine may be busy. A lost path fails fast anyway
	// because nothing else is on these links.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Ping(ctx, to); err != nil {
		t.Error(err)
	}
}

func readSysctl(t *testing.T, h *Host, key string) string {
	t.Helper()
	v, err := h.ReadSysctl(key)
	must(t, err)
	return v
}

func mustHost(t *testing.T, topo *Topology, name string) *Host {
	t.Helper()
	h, err := topo.AddHost(name)
	must(t, err)
	return h
}

func mustNetnsID(t *testing.T) string {
	t.Helper()
	id, err := readNetnsID()
	must(t, err)
	return id
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
