//go:build linux

package admin

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/nat"
)

const envFdDaemon = "TUNVS_TEST_FD_DAEMON"

// TestHelperFdDaemon is the daemon TestControlSurvivesFdExhaustion runs
// in a process of its own: it serves the control socket, lowers its
// descriptor limit and takes every descriptor left, until told to free
// them on stdin.
func TestHelperFdDaemon(t *testing.T) {
	path := os.Getenv(envFdDaemon)
	if path == "" {
		t.Skip("helper")
	}
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr")
	srv, err := Listen(path, tb, zerolog.New(os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(open) + 16), Max: uint64(len(open) + 16)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var hog []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		hog = append(hog, f)
	}
	fmt.Printf("EXHAUSTED %d\n", len(hog))
	in := bufio.NewReader(os.Stdin)
	_, _ = in.ReadString('\n')
	for _, f := range hog {
		f.Close()
	}
	fmt.Println("FREED")
	_, _ = in.ReadString('\n')
	st := &srv.Listener().Stats
	fmt.Printf("STATS accept_errors=%d accepted=%d\n", st.AcceptErrors.Load(), st.Accepted.Load())
}

// The control socket answers again once descriptors are free after the
// daemon ran out of them (it used to stop accepting for good on the
// first EMFILE): a request made while the daemon has none is answered as
// soon as they are freed, and the failure is logged once and counted. In
// a sandbox made by root and in one made by uid 65534 (make reliability
// runs it), as the daemon runs unprivileged.
func TestControlSurvivesFdExhaustion(t *testing.T) {
	netns.InSandboxes(t, controlSurvivesFdExhaustion)
}

func controlSurvivesFdExhaustion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFdDaemon$", "-test.v")
	cmd.Env = append(os.Environ(), envFdDaemon+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	logLines := make(chan string, 1000)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logLines <- sc.Text()
		}
		close(logLines)
	}()
	out := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		t.Helper()
		for out.Scan() {
			if strings.HasPrefix(out.Text(), prefix) {
				return out.Text()
			}
		}
		t.Fatalf("helper ended before %q (logs: %s)", prefix, logs.String())
		return ""
	}
	t.Log(expect("EXHAUSTED"))

	type result struct {
		resp Response
		err  error
	}
	during := make(chan result, 1)
	go func() {
		r, err := Call(path, Request{Args: []string{"-L", "-n"}})
		during <- result{r, err}
	}()
	// The daemon's accept fails now; wait for it to say so.
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-logLines:
			if !ok {
				t.Fatal("helper ended")
			}
			logs.WriteString(l + "\n")
			if strings.Contains(l, "accept failed") {
				break wait
			}
		case r := <-during:
			t.Fatalf("answered while out of descriptors? %+v %v", r.resp, r.err)
		case <-deadline:
			t.Fatalf("no accept failure logged: %s", logs.String())
		}
	}
	if _, err := stdin.Write([]byte("free\n")); err != nil {
		t.Fatal(err)
	}
	expect("FREED")
	r := <-during
	if r.err != nil || !strings.Contains(r.resp.Output, "TCP  10.0.0.1:80 rr") {
		t.Fatalf("request made during exhaustion: %+v %v", r.resp, r.err)
	}
	resp, err := Call(path, Request{Args: []string{"-L", "-n"}})
	if err != nil || !strings.Contains(resp.Output, "TCP  10.0.0.1:80 rr") {
		t.Fatalf("request after: %+v %v", resp, err)
	}
	stdin.Write([]byte("done\n"))
	stats := expect("STATS")
	t.Log(stats)
	if strings.Contains(stats, "accept_errors=0 ") {
		t.Errorf("accept errors not counted: %s", stats)
	}
	stdin.Close()
	_ = cmd.Wait()
	for l := range logLines {
		logs.WriteString(l + "\n")
	}
	if n := strings.Count(logs.String(), "accept failed"); n != 1 {
		t.Errorf("accept failure logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "accept works again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// A request over MaxRequest is refused with a clear error and counted;
// the daemon keeps answering.
func TestControlRequestTooLarge(t *testing.T) {
	// The real limit is 16 MiB; the race detector makes decoding that
	// much JSON slow, and the limit works the same at 1 MiB.
	defer func(old int64) { maxRequest = old }(maxRequest)
	maxRequest = 1 << 20
	tb := nat.New(nat.Config{})
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, tb, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := Call(path, Request{Args: []string{"-R"}, Stdin: strings.Repeat("#\n", 1<<19+1)})
	if err != nil || resp.Exit == 0 || !strings.Contains(resp.Error, "larger than 1048576 bytes") {
		t.Fatalf("oversized -R: %+v %v", resp, err)
	}
	if n := srv.Listener().Stats.TooLarge.Load(); n != 1 {
		t.Errorf("TooLarge = %d, want 1", n)
	}
	if resp, err := Call(path, Request{Args: []string{"-L", "-n"}}); err != nil || resp.Exit != 0 {
		t.Fatalf("after: %+v %v", resp, err)
	}
}

// A large -R that is refused hands its memory back to the OS before the
// daemon answers (it kept a heap of 20 times the file for minutes).
func TestControlLargeRequestMemoryReturned(t *testing.T) {
	tb := nat.New(nat.Config{})
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := Listen(path, tb, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// 8 MB of valid rules, the last line bad: refused whole.
	var b strings.Builder
	for i := 0; b.Len() < 8<<20; i++ {
		fmt.Fprintf(&b, "-A -t 10.%d.%d.%d:80 -s rr\n", i>>16&255, i>>8&255, i&255)
	}
	b.WriteString("-A -t nonsense\n")
	resp, err := Call(path, Request{Args: []string{"-R"}, Stdin: b.String()})
	if err != nil || resp.Exit == 0 {
		t.Fatalf("bad -R accepted: %+v %v", resp.Exit, err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// Freed and not yet returned: what RSS keeps.
	if kept := ms.HeapIdle - ms.HeapReleased; kept > 16<<20 {
		t.Errorf("%d MB of idle heap kept after a refused 8 MB -R", kept>>20)
	}
	if len(tb.Services()) != 0 {
		t.Errorf("a refused -R left %d services", len(tb.Services()))
	}
}
