//go:build linux

package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// A link whose TUN device disappears (its namespace deleted) is closed
// and reported once, and the director goes on with the links that remain:
// the VIP still answers through them and tunvsadm still works. The
// reader of the lost device used to retry forever (a core busy and
// hundreds of thousands of log lines a second). flags are more tunvs run
// flags (the readers on their own threads: their ppoll is woken by the
// device's destruction, not Go's poller).
func runDeviceLoss(t *testing.T, flags ...string) {
	e := setup(t, opts{extra: append([]string{"--link=name=tvx,addr=192.168.77.1/24"}, flags...)})
	if err := netns.WaitLink(e.topo.Root(), "tvx", 10*time.Second); err != nil {
		t.Fatalf("no tvx: %v\n%s", err, e.log)
	}
	doomed, err := e.topo.AddHost("doomed")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.topo.Root().MoveLink("tvx", doomed); err != nil {
		t.Fatal(err)
	}
	if err := doomed.LinkUp("tvx"); err != nil {
		t.Fatal(err)
	}
	c := e.httpClient()
	e.requestSplit(c, "http://172.16.1.100/", cip4, 10)
	removed := time.Now()
	if err := e.topo.RemoveHost("doomed"); err != nil {
		t.Fatal(err)
	}
	// The kernel destroys a namespace asynchronously (cleanup_net).
	// Looked for every millisecond: the delay is printed, and a
	// coarser poll would print its own period.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.log.String(), "link lost") {
		if time.Now().After(deadline) {
			t.Fatalf("no link loss reported:\n%s", e.log)
		}
		time.Sleep(time.Millisecond)
	}
	reported := time.Since(removed)
	// Long enough for a spinning reader to log thousands of lines (and
	// take a core: the CPU the director used meanwhile is printed).
	pid := e.daemon.Process.Pid
	run0, _ := schedTimes(pid)
	lines0 := strings.Count(e.log.String(), "\n")
	const after = 500 * time.Millisecond
	time.Sleep(after)
	run1, _ := schedTimes(pid)
	log := e.log.String()
	t.Logf("FIGURES device loss: reported %v after the namespace was deleted; in the %v after: director CPU %.1f%%, %d log lines",
		reported.Round(time.Millisecond), after, 100*(run1-run0).Seconds()/after.Seconds(), strings.Count(log, "\n")-lines0)
	if n := strings.Count(log, "link lost"); n != 1 {
		t.Errorf("link loss reported %d times, want once:\n%s", n, log)
	}
	if n := strings.Count(log, "device read failed"); n != 0 {
		t.Errorf("%d read failures logged, want none (the device is gone, not failing)", n)
	}
	plain := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(log, "")
	if !strings.Contains(plain, "goes on") || !strings.Contains(plain, "links_remaining=3") {
		t.Errorf("the director did not say it goes on with 3 links:\n%s", log)
	}
	for range 10 {
		if got := get(t, c, "http://172.16.1.100/"); got != "RS1" && got != "RS2" {
			t.Errorf("after the loss the VIP answered %q", got)
		}
	}
	if out := e.adm("-L", "-n"); !strings.Contains(out, "TCP  172.16.1.100:80 rr") {
		t.Errorf("tunvsadm after the loss:\n%s", out)
	}
}

// With its only link gone the director can do nothing: it says so and
// exits with an error.
func runLastLinkLost(t *testing.T) {
	topo := netns.NewTopology(t, true)
	log := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("tunvs"), "run", "--socket", t.TempDir()+"/ctl.sock", "--link=name=tvx,addr=192.168.77.1/24")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := netns.WaitLink(topo.Root(), "tvx", 10*time.Second); err != nil {
		t.Fatalf("no tvx: %v\n%s", err, log)
	}
	doomed, err := topo.AddHost("doomed")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Root().MoveLink("tvx", doomed); err != nil {
		t.Fatal(err)
	}
	if err := topo.RemoveHost("doomed"); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the director did not stop:\n%s", log)
	}
	if err == nil || !strings.Contains(log.String(), "no link remains") || !strings.Contains(log.String(), "every link's device is gone") {
		t.Errorf("exit %v, log:\n%s", err, log)
	}
}

func TestDeviceLoss(t *testing.T) {
	inSandboxes(t, func(t *testing.T) {
		t.Run("some", func(t *testing.T) { runDeviceLoss(t) })
		t.Run("some-thread", func(t *testing.T) { runDeviceLoss(t, "--tun-read=thread") })
		t.Run("last", runLastLinkLost)
	})
}
