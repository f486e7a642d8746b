package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/admin"
)

// buildTunvs builds the command into a directory any user may read, so it
// can be run as an ordinary user.
func buildTunvs(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tunvs-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tunvs")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// `tunvs lab` needs no privileges at all: run it as uid 65534 when the test
// runs as root, and as whoever we are otherwise.
func TestLabAsOrdinaryUser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildTunvs(t)
	args := []string{bin, "lab", "-n", "4"}
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("running as root and no setpriv to drop to uid 65534: %v", err)
		}
		args = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	s := string(out)
	for _, want := range []string{"1: Proxy02 Real Server", "2: Proxy01 Real Server", "4: Proxy01 Real Server",
		"Masq    1      0          2"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
}

func TestBadCommandLines(t *testing.T) {
	for _, args := range [][]string{
		{"lab", "-s", "nosuch"},
		{"lab", "--requests", "-1"},
		{"lab", "extra"},
		{"run"},
		{"run", "--link", "kind=tun"},
		{"run", "--link", "name=t0,mtu=9"},
		{"run", "--link", "name=t0", "--rule", "-A -t 10.0.0.1:80 -g"},
		{"run", "--link", "name=t0", "--state-timeout", "BOGUS=1s"},
		{"run", "--link", "name=t0", "--route", "10.0.0.0/8"},
		{"run", "--link", "name=t0", "--busy-poll", "1s"},
		{"run", "--link", "name=t0", "--busy-poll", "-1us"},
		{"run", "--link", "name=t0", "--tun-standby-rate", "fast"},
		{"run", "--link", "name=t0", "--tun-standby-rate", "0"},
		{"run", "--link", "name=t0", "--tun-standby-rate", "-2G"},
		{"run", "--link", "name=t0", "--check", "-t 10.0.0.1:80 http interval=nope"},
		{"run", "--link", "name=t0", "--sysctl", "conn_reuse_mode=4"},
		{"run", "--link", "name=t0", "--sysctl", "nat_icmp_send=1"},
		{"run", "--link", "name=t0", "--sysctl", "-1"},
		{"nosuch"},
	} {
		if code := realMain(args); code != 2 {
			t.Errorf("tunvs %v: exit %d, want 2 (usage)", args, code)
		}
	}
}

func TestRulesFileErrorNamesLine(t *testing.T) {
	f := filepath.Join(t.TempDir(), "rules")
	os.WriteFile(f, []byte("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w lots\n"), 0o644)
	err := cmdRun(t.Context(), []string{"--link", "name=t0", "--rules", f})
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "weight") {
		t.Errorf("got %v, want an error naming line 2 and the weight", err)
	}
}

// A health rule in the rules file is refused with its line number before
// anything starts.
func TestRulesFileCheckErrorNamesLine(t *testing.T) {
	f := filepath.Join(t.TempDir(), "rules")
	os.WriteFile(f, []byte("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m\n--check -t 10.0.0.1:80 tcp fall=zero\n"), 0o644)
	err := cmdRun(t.Context(), []string{"--link", "name=t0", "--rules", f})
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "fall") {
		t.Errorf("got %v, want an error naming line 3 and fall", err)
	}
}

// Bad lab sizes and flags the chosen lab does not take are refused with a
// message and exit status 2, before anything is built: -r 0 used to run
// two servers, and from 96 up the in-process lab gave a server the VIP.
func TestLabRefusesBadFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildTunvs(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-r", "0"}, "-r 0: want 1 to 95 real servers"},
		{[]string{"-r", "-1"}, "-r -1: want 1 to 95 real servers"},
		{[]string{"-r", "96"}, "-r 96: want 1 to 95 real servers"},
		{[]string{"--netns", "-r", "41"}, "-r 41: want 1 to 40 real servers"},
		{[]string{"--netns", "-r", "0"}, "-r 0: want 1 to 40 real servers"},
		{[]string{"--netns", "-n", "3"}, "-n/--requests is for the in-process lab"},
		{[]string{"--netns", "--trace"}, "--trace is for the in-process lab"},
		{[]string{"--netns", "--stay"}, "--stay is for the in-process lab"},
		{[]string{"--netns", "--rule", "-C"}, "--rule is for the in-process lab"},
	} {
		cmd := exec.Command(bin, append([]string{"lab"}, c.args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: %v, want exit status 2\n%s", c.args, err, out)
		}
		if want := "tunvs lab: " + c.want; !strings.HasPrefix(string(out), want) {
			t.Errorf("%v: %q, want it to start %q", c.args, out, want)
		}
	}
	// The largest in-process lab runs, and its last server is not the VIP.
	out, err := exec.Command(bin, "lab", "-r", "95", "-n", "1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1: Proxy95 Real Server") || !strings.Contains(string(out), "172.16.1.99:80") {
		t.Errorf("-r 95: %v\n%.2000s", err, out)
	}
}

// A keepalived.conf that tunvs cannot honour is refused with its file and
// line before any device is opened; with --rules it is a usage error.
func TestKeepalivedConfRefused(t *testing.T) {
	f := filepath.Join(t.TempDir(), "keepalived.conf")
	os.WriteFile(f, []byte("virtual_server 10.0.0.1 80 {\n  lb_kind TUN type vxlan\n}\n"), 0o644)
	err := cmdRun(t.Context(), []string{"--link", "name=t0", "--keepalived-conf", f})
	if err == nil || !strings.Contains(err.Error(), f+":2: ") || !strings.Contains(err.Error(), "lb_kind: unknown tunnel type vxlan") {
		t.Errorf("got %v, want an error naming %s:2 and the tunnel type", err, f)
	}
	if code := realMain([]string{"run", "--link", "name=t0", "--keepalived-conf", f, "--rules", f}); code != 2 {
		t.Errorf("--rules with --keepalived-conf: exit %d, want 2", code)
	}
}

// The in-process lab takes rules and, with --stay, stays up answering
// tunvsadm on its control socket until interrupted.
func TestLabStaysAndTakesRules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildTunvs(t)
	sock := filepath.Join(t.TempDir(), "lab.sock")
	cmd := exec.Command(bin, "lab", "-n", "2", "--stay", "--socket", sock,
		"--rule", "-A -t 172.16.1.100:80 -s wrr",
		"--rule", "-a -t 172.16.1.100:80 -r 172.16.1.5 -m -w 3",
		"--rule", "-a -t 172.16.1.100:80 -r 172.16.1.6 -m")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The socket answers before the lab has made its requests, so the
	// listing is read until both have been made and have finished, one
	// to each server (wrr, weights 3 and 1).
	want := "-> 172.16.1.5:80                Masq    3      0          1"
	var listing string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := admin.Call(sock, admin.Request{Args: []string{"-L", "-n"}})
		if err == nil {
			listing = resp.Output
			if strings.Contains(listing, "TCP  172.16.1.100:80 wrr") && strings.Contains(listing, want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lab does not list %q on %s: %v\nlisting:\n%s\noutput:\n%s", want, sock, err, listing, out.String())
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGINT: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind: %v", err)
	}
}

func TestParseBitRate(t *testing.T) {
	for in, want := range map[string]int{"2G": 250e6, "800M": 100e6, "8k": 1000, "1.5G": 187.5e6, "8": 1, "1": 1} {
		if got, err := parseBitRate(in); err != nil || got != want {
			t.Errorf("parseBitRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "2T", "-1M", "0", "1e20G"} {
		if _, err := parseBitRate(in); err == nil {
			t.Errorf("parseBitRate(%q) took it", in)
		}
	}
}
