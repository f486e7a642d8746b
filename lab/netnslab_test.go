//go:build linux

package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// The namespace lab is tested through the built binary, the way a learner
// runs it: `tunvs lab --netns --detach`, `tunvs lab exec client -- curl`,
// `tunvs lab walk --auto`, `tunvs lab down`, as uid 65534 (with setpriv when
// the test runs as root) and as root.

type labUser struct {
	name   string
	prefix []string // setpriv ... --, or nothing
}

func netnsLabPrereqs(t *testing.T) (bin string, users []labUser) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and a namespace lab")
	}
	for _, tool := range []string{"unshare", "nsenter", "ip", "nft", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			netns.Unavailable(t, "the namespace lab test needs %s: %v", tool, err)
		}
	}
	if err := netns.CheckTUN(); err != nil {
		netns.Unavailable(t, "%v", err)
	}
	if err := netns.Probe(context.Background(), netns.SandboxOptions{}); err != nil {
		netns.Unavailable(t, "%v", err)
	}
	dir, err := os.MkdirTemp("", "tunvs-netnslab-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"tunvs", "tunvsadm", "tunvs-bgp"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("running as root and no setpriv to drop to uid %d: %v", netns.UnprivilegedUID, err)
		}
		id := strconv.Itoa(netns.UnprivilegedUID)
		users = []labUser{
			{"uid" + id, []string{setpriv, "--reuid=" + id, "--regid=" + id, "--clear-groups", "--"}},
			{"root", nil},
		}
	} else {
		users = []labUser{{fmt.Sprintf("uid%d", os.Geteuid()), nil}}
	}
	return dir, users
}

// labRun runs a command as u and returns its combined output.
func labRun(t *testing.T, u labUser, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append([]string{}, u.prefix...), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR=", "TUNVS_LAB_DIR=")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func labStateDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "tunvs-netnslab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	// uid 65534 creates the state directory in it.
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(parent, "lab")
}

func TestNetnsLab(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	tunvs, tunvsadm := filepath.Join(bin, "tunvs"), filepath.Join(bin, "tunvsadm")
	for _, u := range users {
		for _, attach := range []string{"tap", "tun"} {
			t.Run(u.name+"/"+attach, func(t *testing.T) {
				sd := labStateDir(t)
				linksBefore := hostLinks(t)
				out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--attach", attach, "--state-dir", sd)
				if err != nil {
					t.Fatalf("tunvs lab --netns --detach: %v\n%s", err, out)
				}
				down := func() (string, error) {
					return labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd)
				}
				defer down() // after a failure; a no-op otherwise
				st, err := readState(sd)
				if err != nil || !st.Alive() || !st.Ready {
					t.Fatalf("state after start: %+v, %v\n%s", st, err, out)
				}
				userns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", st.PID))
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("lab pid %d, user namespace %s", st.PID, userns)

				// rr: the first connection goes to the server added
				// last, as with IPVS.
				want := []string{"Proxy02 Real Server", "Proxy01 Real Server", "Proxy02 Real Server", "Proxy01 Real Server"}
				for i, w := range want {
					got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
						"curl", "-sS", "-m", "10", "http://10.0.0.200/")
					if err != nil || strings.TrimSpace(got) != w {
						t.Fatalf("curl #%d from the client: %q (%v), want %q\ndirector log:\n%s", i+1, got, err, w, readFile(sd, "director.log"))
					}
				}
				// A download (the fifth connection, to rs2): the real
				// server's kernel sends TSO super-packets, which cross
				// the director whole.
				if got, err := labRun(t, u, time.Minute, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
					"curl", "-sS", "-m", "30", "-o", "/dev/null", "-w", "%{size_download}", "http://10.0.0.200/?bytes=8000000"); err != nil || got != "8000020" {
					t.Fatalf("a download from the client: %q (%v)", got, err)
				}
				checkWhole(t, checkDirectorPath(t, u, tunvs, sd, 0, "director.log"), 0)
				table, err := labRun(t, u, 30*time.Second, tunvsadm, "--socket", SocketPath(sd), "-L", "-n")
				if err != nil {
					t.Fatalf("tunvsadm: %v\n%s", err, table)
				}
				for _, w := range []string{"TCP  172.16.1.100:80 rr", "-> 172.16.1.5:80", "-> 172.16.1.6:80"} {
					if !strings.Contains(table, w) {
						t.Errorf("tunvsadm -L -n lacks %q:\n%s", w, table)
					}
				}
				// The real server saw the client's own address.
				if l := readFile(sd, "rs1.log"); !strings.Contains(l, "10.0.0.10:") {
					t.Errorf("rs1's log does not show the client's address:\n%s", l)
				}

				walk, err := labRun(t, u, time.Minute, tunvs, "lab", "walk", "--auto", "--state-dir", sd)
				if err != nil {
					t.Fatalf("tunvs lab walk: %v\n%s", err, walk)
				}
				// Five connections so far: the sixth goes to rs1.
				checkWalk(t, walk, "172.16.1.5")

				// The article's commands as typed: ipvsadm in the
				// director is tunvsadm.
				if o, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "director", "--", "ipvsadm", "-L", "-n"); err != nil || !strings.Contains(o, "TCP  172.16.1.100:80 rr") {
					t.Errorf("ipvsadm -L -n in the director: %v\n%s", err, o)
				}
				// ps and kill work in a host, as on a machine of its
				// own (its PID namespace and /proc): ps in rs1 lists
				// rs1's server and not rs2's nor the director; a plain
				// pkill stops it; rs1 then refuses and rs2 answers.
				ps, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "rs1", "--", "ps", "-o", "pid,args", "-e")
				if err != nil || !strings.Contains(ps, "Proxy01 Real Server") || strings.Contains(ps, "Proxy02") || strings.Contains(ps, " run --socket") {
					t.Fatalf("ps in rs1 (want rs1's server alone): %v\n%s", err, ps)
				}
				if o, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "rs1", "--",
					"pkill", "-f", "[l]ab serve"); err != nil {
					t.Fatalf("pkill in rs1: %v\n%s", err, o)
				}
				// pkill returns once the signal is sent; the server
				// closes its listener on its way out, which on a
				// loaded machine came after the next request.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
					if _, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "rs1", "--",
						"pgrep", "-f", "[l]ab serve"); err != nil {
						break // exit status 1: no such process
					}
					if time.Now().After(deadline) {
						t.Fatal("rs1's server still running 10 s after pkill")
					}
				}
				var answers []string
				for range 2 {
					got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
						"curl", "-sS", "-m", "10", "http://10.0.0.200/")
					if err == nil {
						answers = append(answers, strings.TrimSpace(got))
					}
				}
				if len(answers) != 1 || answers[0] != "Proxy02 Real Server" {
					t.Errorf("after rs1's server was killed: answers %q, want one from Proxy02 and one refused", answers)
				}

				msg, err := down()
				if err != nil || !strings.Contains(msg, "lab stopped") {
					t.Fatalf("tunvs lab down: %v\n%s", err, msg)
				}
				checkGone(t, sd, st, userns, linksBefore)
				if msg, _ := down(); !strings.Contains(msg, "no lab") {
					t.Errorf("a second down: %q", msg)
				}
			})
		}
	}
}

// The lab in the foreground with --walk-auto, stopped with SIGINT as a
// Ctrl-C would; then a crash (the lab's process killed) and `down` on the
// stale state.
func TestNetnsLabForegroundAndCrash(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	tunvs := filepath.Join(bin, "tunvs")
	u := users[0]
	sd := labStateDir(t)
	linksBefore := hostLinks(t)

	argv := append(append([]string{}, u.prefix...), tunvs, "lab", "--netns", "--walk-auto", "-r", "3", "--state-dir", sd)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR=", "TUNVS_LAB_DIR=")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { err := cmd.Wait(); pw.Close(); waited <- err }()
	var out syncBuilder
	sc := bufio.NewScanner(pr)
	running := make(chan struct{})
	go func() {
		closed := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !closed && strings.Contains(sc.Text(), "The lab runs until Ctrl-C") {
				close(running)
				closed = true
			}
		}
		io.Copy(io.Discard, pr)
		if !closed {
			close(running)
		}
	}()
	select {
	case <-running:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("the lab did not come up:\n%s", out.String())
	}
	st, err := readState(sd)
	if err != nil || !st.Alive() {
		cmd.Process.Kill()
		t.Fatalf("state: %+v %v\n%s", st, err, out.String())
	}
	userns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", st.PID))
	// Three servers, rr: the walk's connection is the first, so rs3.
	checkWalk(t, out.String(), "172.16.1.7")

	// setpriv execs, so cmd.Process is tunvs itself.
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-waited:
		// Stopped by its own hand: exit status 0 and no SIGKILL
		// fallback (which says "did not stop" and exits 1).
		if err != nil || strings.Contains(out.String(), "did not stop") {
			t.Errorf("the lab after SIGINT: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("the lab did not stop on SIGINT:\n%s", out.String())
	}
	checkGone(t, sd, st, userns, linksBefore)

	// A crash: the lab's first process dies without cleaning up.
	o, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--state-dir", sd)
	if err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
	st, err = readState(sd)
	if err != nil {
		t.Fatal(err)
	}
	userns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/user", st.PID))
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if o, err := labRun(t, u, time.Minute, tunvs, "lab", "exec", "--state-dir", sd, "client", "--", "true"); err == nil || !strings.Contains(o, "stale") {
		t.Errorf("exec on a crashed lab: %v %q, want a stale-state error", err, o)
	}
	o, err = labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd)
	if err != nil || !strings.Contains(o, "stale") {
		t.Errorf("down after a crash: %v %q", err, o)
	}
	checkGone(t, sd, st, userns, linksBefore)
}

var walkLine = regexp.MustCompile(`^\s+(\S+)/(\S+)\s+\S+ (In |Out) IP (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]+)\]`)

type walkSeen struct {
	at, dir, src, dst, flags string
}

// checkWalk checks the walk's captured packets against the article: the
// addresses and ports at each step.
func checkWalk(t *testing.T, out, rip string) {
	t.Helper()
	if strings.Contains(out, "NOT CAPTURED") {
		t.Errorf("the walk missed packets:\n%s", out)
	}
	steps := map[int][]walkSeen{}
	cur := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Step ") {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.Fields(l)[1], ":"))
			cur = n
			continue
		}
		if m := walkLine.FindStringSubmatch(l); m != nil && cur > 0 {
			steps[cur] = append(steps[cur], walkSeen{m[1] + "/" + m[2], strings.TrimSpace(m[3]), m[4] + ":" + m[5], m[6] + ":" + m[7], m[8]})
		}
	}
	var cport string
	for _, s := range steps[1] {
		if s.at == "client/eth0" && s.dst == "10.0.0.200:80" {
			cport = strings.TrimPrefix(s.src, "10.0.0.10:")
		}
	}
	if cport == "" {
		t.Fatalf("the walk shows no SYN from the client to 10.0.0.200:80 at step 1:\n%s", out)
	}
	cip := "10.0.0.10:" + cport
	rs := map[string]string{"172.16.1.5": "rs1", "172.16.1.6": "rs2", "172.16.1.7": "rs3"}[rip]
	want := []struct {
		step                     int
		at, dir, src, dst, flags string
		what                     string
	}{
		{1, "client/eth0", "Out", cip, "10.0.0.200:80", "S", "client -> 10.0.0.200:80 at the client"},
		{2, "router/eth1", "Out", cip, "172.16.1.100:80", "S", "the router's DNAT to the VIP"},
		{3, "lan/tvlab0", "Out", cip, "172.16.1.100:80", "S", "client -> VIP:80 at the director's input"},
		{4, "lan/tvlab0", "In", cip, rip + ":80", "S", "client -> RIP:80 after the director's DNAT"},
		{5, rs + "/eth0", "In", cip, rip + ":80", "S", "client -> RIP:80 at the real server"},
		{6, rs + "/eth0", "Out", rip + ":80", cip, "S.", "RIP -> client at the real server"},
		{6, "lan/tvlab0", "Out", rip + ":80", cip, "S.", "RIP -> client at the director, before SNAT"},
		{7, "lan/tvlab0", "In", "172.16.1.100:80", cip, "S.", "VIP:80 -> client after the director's SNAT"},
		{8, "client/eth0", "In", "10.0.0.200:80", cip, "S.", "10.0.0.200:80 -> client back at the client"},
	}
	for _, w := range want {
		found := false
		for _, s := range steps[w.step] {
			if s == (walkSeen{w.at, w.dir, w.src, w.dst, w.flags}) {
				found = true
			}
		}
		if !found {
			t.Errorf("step %d (%s): no %s %s %s > %s [%s]; step shows %+v", w.step, w.what, w.at, w.dir, w.src, w.dst, w.flags, steps[w.step])
		}
	}
	if t.Failed() {
		t.Logf("walk output:\n%s", out)
	}
}

// checkGone checks that nothing of the lab is left: no state directory, no
// process in the lab's user namespace (so no network namespace and no
// device either: every one of them was owned by it and held only by its
// processes), no device added to the test's own namespace.
func checkGone(t *testing.T, sd string, st *State, userns string, linksBefore string) {
	t.Helper()
	if _, err := os.Stat(sd); !os.IsNotExist(err) {
		t.Errorf("state directory %s still exists (%v)", sd, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := procsIn(userns)
		if st.UnsharePID > 0 && procAlive(st.UnsharePID, st.UnshareSt) {
			left = append(left, fmt.Sprintf("%d (unshare)", st.UnsharePID))
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the lab left behind: %v", left)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := hostLinks(t); after != linksBefore {
		t.Errorf("the test's own network namespace changed:\nbefore %s\nafter  %s", linksBefore, after)
	}
}

// procsIn lists the live processes in user namespace userns (zombies
// excluded: they hold no namespace).
func procsIn(userns string) []string {
	ents, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/user"); err == nil && l == userns && procAlive(pid, 0) {
			cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			left = append(left, fmt.Sprintf("%d (%s)", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
		}
	}
	return left
}

func hostLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	return strings.Join(names, " ")
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) WriteString(x string) {
	s.mu.Lock()
	s.b.WriteString(x)
	s.mu.Unlock()
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func readFile(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return string(b)
}

// `tunvs lab --netns --fwd fullnat`, on a TAP and on a TUN: the real
// servers keep their own default route (the router), and still every
// request is served; they see the director's local address, not the
// client.
func TestNetnsLabFullNAT(t *testing.T) {
	bin, users := netnsLabPrereqs(t)
	tunvs := filepath.Join(bin, "tunvs")
	for _, u := range users {
		for _, attach := range []string{"tap", "tun"} {
			t.Run(u.name+"/"+attach, func(t *testing.T) {
				sd := labStateDir(t)
				out, err := labRun(t, u, 2*time.Minute, tunvs, "lab", "--netns", "--detach", "--fwd", "fullnat", "--attach", attach, "--state-dir", sd)
				if err != nil {
					t.Fatalf("tunvs lab --netns --fwd fullnat: %v\n%s", err, out)
				}
				defer labRun(t, u, time.Minute, tunvs, "lab", "down", "--state-dir", sd)
				if r, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "rs1", "--", "ip", "route", "show", "default"); err != nil || !strings.Contains(r, "via "+RouterLab.Addr().String()) {
					t.Fatalf("rs1's default route: %q (%v), want via the router", r, err)
				}
				for i, w := range []string{"Proxy02 Real Server", "Proxy01 Real Server"} {
					got, err := labRun(t, u, 30*time.Second, tunvs, "lab", "exec", "--state-dir", sd, "client", "--",
						"curl", "-sS", "-m", "10", "http://10.0.0.200/")
					if err != nil || strings.TrimSpace(got) != w {
						t.Fatalf("curl #%d from the client: %q (%v), want %q\ndirector log:\n%s", i+1, got, err, w, readFile(sd, "director.log"))
					}
				}
				checkDirectorPath(t, u, tunvs, sd, 0, "director.log")
				if l := readFile(sd, "rs1.log"); !strings.Contains(l, LocalAddr.String()+":") || strings.Contains(l, "10.0.0.10:") {
					t.Errorf("rs1's log does not show the local address only:\n%s", l)
				}
			})
		}
	}
}
