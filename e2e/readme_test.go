//go:build linux

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// ordinaryUser is for tests that make their own user namespace with
// unshare as an ordinary user: unshare's path, and the command prefix that
// drops to uid 65534 when the test runs as root (none otherwise).
func ordinaryUser(t *testing.T) (unshare string, asUser []string) {
	t.Helper()
	if netns.Inside() {
		t.Skip("makes its own user namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		netns.Unavailable(t, "needs unshare (util-linux)")
	}
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			netns.Unavailable(t, "needs setpriv (util-linux) to run as uid 65534")
		}
		asUser = []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"}
	}
	return unshare, asUser
}

// readmeBlock returns the first ```sh block after heading in README.md,
// verbatim, comments dropped.
func readmeBlock(t *testing.T, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	s = s[i:]
	j := strings.Index(s, "```sh\n")
	k := strings.Index(s[j+6:], "```")
	if j < 0 || k < 0 {
		t.Fatalf("README.md: no ```sh block after %q", heading)
	}
	// Commands, with their continuation lines.
	var cmds []string
	cur := ""
	for _, l := range strings.Split(s[j+6:j+6+k], "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") || (cur == "" && strings.TrimSpace(l) == "") {
			continue
		}
		cur += l + "\n"
		if !strings.HasSuffix(l, "\\") {
			cmds = append(cmds, strings.TrimSuffix(cur, "\n"))
			cur = ""
		}
	}
	return cmds
}

// The README's daemon example, word for word, as an ordinary user (uid
// 65534 when the test runs as root) inside `unshare --user
// --map-root-user --net`, with no TUNVS_SOCKET and no XDG_RUNTIME_DIR:
// tunvs run must find a control socket it can create (inside the user
// namespace the uid is 0, but /run is not its to write), and tunvsadm
// must find the same one, both inside the namespace and from outside it
// (another terminal of the same user).
func TestReadmeDaemonAsOrdinaryUser(t *testing.T) {
	unshare, asUser := ordinaryUser(t)
	cmds := readmeBlock(t, "## The daemon: `tunvs run`")
	if len(cmds) != 2 || !strings.HasPrefix(cmds[0], "tunvs run ") || cmds[1] != "tunvsadm -L -n" {
		t.Fatalf("README's daemon example changed; this test runs `tunvs run ...` then `tunvsadm -L -n`, found:\n%s", strings.Join(cmds, "\n---\n"))
	}
	outerNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tunvs-readme-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	logf := filepath.Join(dir, "daemon.log")
	// The daemon runs in the background of the namespace's shell; the
	// script waits for it, runs the README's tunvsadm, says READY and
	// holds the daemon until the test closes its stdin.
	script := fmt.Sprintf(`
[ "$(readlink /proc/self/ns/net)" != %q ] || { echo "not in a fresh network namespace: refusing"; exit 99; }
%s >%s 2>&1 &
pid=$!
i=0
until tunvsadm -L -n >/dev/null 2>&1; do
	kill -0 $pid 2>/dev/null || { echo "tunvs run exited"; exit 98; }
	i=$((i+1)); [ $i -lt 400 ] || { echo "tunvs run did not answer"; kill $pid; exit 97; }
	sleep 0.05
done
%s
echo "exit=$?"
echo READY
read x
kill -INT $pid
wait $pid
echo "daemon exit=$?"
`, outerNet, cmds[0], logf, cmds[1])
	env := []string{"PATH=" + os.Getenv(envBin) + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TMPDIR=" + dir}
	argv := append(append([]string{}, asUser...), unshare, "--user", "--map-root-user", "--net", "--", "/bin/sh", "-c", script)
	c := exec.Command(argv[0], argv[1:]...)
	c.Env, c.Dir = env, "/"
	stdin, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	c.Stderr = c.Stdout
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf)
			t.Logf("daemon log:\n%s", b)
		}
	}()
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		c.Wait()
		close(done)
	}()
	ready := false
	timeout := time.After(60 * time.Second)
	for !ready {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the namespace's shell ended early:\n%s", out.String())
			}
			if l == "READY" {
				ready = true
				break
			}
			out.WriteString(l + "\n")
		case <-timeout:
			t.Fatalf("no answer within a minute:\n%s", out.String())
		}
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^TCP  172\.16\.1\.100:80 rr\s*$`),
		regexp.MustCompile(`(?m)^  -> 172\.16\.1\.5:80 +Masq +1 +0 +0\s*$`),
		regexp.MustCompile(`(?m)^  -> 172\.16\.1\.6:80 +Masq +1 +0 +0\s*$`),
		regexp.MustCompile(`(?m)^exit=0$`),
	}
	for _, re := range want {
		if !re.MatchString(out.String()) {
			t.Errorf("tunvsadm -L -n in the namespace: no %v in:\n%s", re, out.String())
		}
	}
	// The socket went where the user can write: the temporary
	// directory, named by the uid outside the namespace.
	uid := os.Geteuid()
	if len(asUser) > 0 {
		uid = 65534
	}
	sock := filepath.Join(dir, fmt.Sprintf("tunvs-%d.sock", uid))
	if b, _ := os.ReadFile(logf); !strings.Contains(string(b), "socket="+sock) {
		t.Errorf("the daemon did not listen on %s", sock)
	}
	// From outside the namespace, as the same user, tunvsadm finds it.
	oargv := append(append([]string{}, asUser...), filepath.Join(os.Getenv(envBin), "tunvsadm"), "-L", "-n")
	oc := exec.Command(oargv[0], oargv[1:]...)
	oc.Env, oc.Dir = env, "/"
	if o, err := oc.CombinedOutput(); err != nil || !want[0].Match(o) {
		t.Errorf("tunvsadm -L -n outside the namespace: %v\n%s", err, o)
	}
	stdin.Close()
	var rest strings.Builder
	for l := range lines {
		rest.WriteString(l + "\n")
	}
	if !strings.Contains(rest.String(), "daemon exit=0") {
		t.Errorf("tunvs run did not stop cleanly on SIGINT:\n%s", rest.String())
	}
}
