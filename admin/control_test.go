package admin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

const envClientSocket = "TUNVS_TEST_CLIENT_SOCKET"

// TestHelperClient is the client TestNonOwnerRefused runs as another user.
func TestHelperClient(t *testing.T) {
	path := os.Getenv(envClientSocket)
	if path == "" {
		t.Skip("helper")
	}
	resp, err := Call(path, Request{Args: []string{"-L", "-n"}})
	if err != nil {
		os.Stdout.WriteString("ERROR " + err.Error() + "\n")
		return
	}
	os.Stdout.WriteString("RESPONSE exit=" + itoa(resp.Exit) + " " + resp.Error + "\n" + resp.Output)
}

// A user other than the daemon's cannot use the control socket: the
// socket's mode (0600) stops it at connect, and if someone loosens the
// mode, SO_PEERCRED still refuses it. Runs as root, with the client as
// uid 65534 through setpriv.
func TestNonOwnerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	// A directory anyone may enter, so that only the socket's own mode
	// and credentials check keep the other user out.
	dir, err := os.MkdirTemp("", "tunvs-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(dir, "client.test")
	if err := os.WriteFile(client, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr")
	path := filepath.Join(dir, "ctl.sock")
	srv, err := Listen(path, tb, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	run := func() string {
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", client, "-test.run=^TestHelperClient$")
		cmd.Env = append(os.Environ(), envClientSocket+"="+path)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	// The socket is 0600: connect(2) fails.
	if out := run(); !strings.Contains(out, "ERROR") || !strings.Contains(out, "permission denied") {
		t.Errorf("uid 65534 reached the daemon through a 0600 socket:\n%s", out)
	}
	// Loosened to 0666: the peer's credentials are checked.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	out := run()
	if !strings.Contains(out, "RESPONSE exit=1 permission denied") || strings.Contains(out, "10.0.0.1:80") {
		t.Errorf("uid 65534 was served on a 0666 socket:\n%s", out)
	}
	// The owner is served.
	resp, err := Call(path, Request{Args: []string{"-L", "-n"}})
	if err != nil || !strings.Contains(resp.Output, "TCP  10.0.0.1:80 rr") {
		t.Errorf("owner: %+v %v", resp, err)
	}
}

// The default socket follows where this process can write: $TUNVS_SOCKET
// first, then /run, then $XDG_RUNTIME_DIR, then the temporary directory.
func TestDefaultSocket(t *testing.T) {
	t.Setenv("TUNVS_SOCKET", "/some/where.sock")
	if got := DefaultSocket(); got != "/some/where.sock" {
		t.Errorf("with TUNVS_SOCKET: %q", got)
	}
	t.Setenv("TUNVS_SOCKET", "")
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	want := filepath.Join(xdg, "tunvs.sock")
	if WritableDir("/run") {
		want = "/run/tunvs.sock"
	}
	if got := DefaultSocket(); got != want {
		t.Errorf("DefaultSocket() = %q, want %q", got, want)
	}
	if !WritableDir(xdg) {
		t.Errorf("WritableDir(%s) = false", xdg)
	}
	if ents, _ := os.ReadDir(xdg); len(ents) != 0 {
		t.Errorf("the probe left %v behind", ents)
	}
	f := filepath.Join(xdg, "file")
	os.WriteFile(f, nil, 0o600)
	for _, d := range []string{f, filepath.Join(xdg, "missing")} {
		if WritableDir(d) {
			t.Errorf("WritableDir(%s) = true", d)
		}
	}
	if os.Geteuid() != 0 && !WritableDir("/run") {
		// An XDG_RUNTIME_DIR one cannot write is passed over too.
		ro := t.TempDir()
		os.Chmod(ro, 0o500)
		t.Setenv("XDG_RUNTIME_DIR", ro)
		if got, want := DefaultSocket(), filepath.Join(os.TempDir(), tempSocketName()); got != want {
			t.Errorf("read-only XDG_RUNTIME_DIR: %q, want %q", got, want)
		}
	}
}

func TestMapUID(t *testing.T) {
	for _, c := range []struct {
		m        string
		uid, out int
	}{
		{"         0          0 4294967295\n", 0, 0},
		{"         0          0 4294967295\n", 1000, 1000},
		{"         0      65534          1\n", 0, 65534}, // unshare --map-root-user as nobody
		{"         0       1000          1\n", 0, 1000},  // ... as uid 1000
		{"0 100000 65536\n", 42, 100042},                 // a subordinate range
		{"0 1000 1\n1 100000 65536\n", 5, 100004},        // two ranges
		{"0 1000 1\n", 7, 7},                             // not mapped
		{"", 3, 3},
	} {
		if got := mapUID(c.m, c.uid); got != c.out {
			t.Errorf("mapUID(%q, %d) = %d, want %d", c.m, c.uid, got, c.out)
		}
	}
}
