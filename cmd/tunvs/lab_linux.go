package main

// The namespace lab's actions (tunvs lab --netns, exec, down, walk,
// capture): Linux only. Their flags are parsed in lab.go on every system.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/lab"
)

// labInner is the inner half of `tunvs lab --netns`, in the lab's sandbox.
func labInner(ctx context.Context, cfg lab.NetnsConfig, detach bool) error {
	if !netns.Inside() {
		return errors.New("--inner is for the lab's own sandbox")
	}
	if detach {
		// Nobody holds the other end of the lifeline once the
		// starting process returns: the lab must outlive it.
		os.Unsetenv(netns.EnvLifeline)
	}
	return lab.NetnsInner(ctx, cfg, os.Stderr)
}

// labNetns is the outer half of `tunvs lab --netns`.
func labNetns(ctx context.Context, cfg lab.NetnsConfig, detach, walk, walkAuto bool, lf logFlags) error {
	if err := netns.CheckTUN(); err != nil {
		return err
	}
	if err := netns.Probe(ctx, netns.SandboxOptions{}); err != nil {
		return err
	}
	stale, err := lab.Prepare(cfg.StateDir)
	if err != nil {
		return err
	}
	if stale {
		fmt.Fprintf(os.Stderr, "removed the state of a lab that is gone (%s)\n", cfg.StateDir)
	}
	args := []string{"lab", "--netns", "--inner", "-s", cfg.Scheduler, "-r", strconv.Itoa(cfg.Servers),
		"--attach", cfg.Attach, "--state-dir", cfg.StateDir, "--log-level", lf.level}
	if cfg.RSCmd != "" {
		args = append(args, "--rs-cmd", cfg.RSCmd)
	}
	if cfg.FullNAT {
		args = append(args, "--fwd", "fullnat")
	}
	if cfg.HA {
		args = append(args, "--ha")
	}
	if cfg.Directors > 0 {
		args = append(args, "--directors", strconv.Itoa(cfg.Directors))
	}
	if cfg.NoBypass {
		args = append(args, "--bypass=false")
	}
	for _, c := range cfg.Checks {
		args = append(args, "--check="+c)
	}
	if detach {
		args = append(args, "--detach")
	}
	opts := netns.SandboxOptions{Args: args, Dir: "/"}
	var logf *os.File
	if detach {
		logf, err = os.OpenFile(filepath.Join(cfg.StateDir, "lab.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer logf.Close()
		opts.Stdout, opts.Stderr = logf, logf
	} else {
		opts.Stdout, opts.Stderr = os.Stdout, os.Stderr
	}
	// Not ctx: the lab is stopped below, in order, not killed by a
	// cancelled context.
	sb, err := netns.Sandbox(context.Background(), opts)
	if err != nil {
		lab.RemoveState(cfg.StateDir)
		return err
	}
	// Its own session (detached) or process group (foreground): a Ctrl-C
	// in the terminal reaches only this process, which stops the lab.
	sb.Cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: detach, Setpgid: !detach}
	if err := sb.Start(); err != nil {
		lab.RemoveState(cfg.StateDir)
		return err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = sb.Wait(); close(exited) }()
	fail := func(err error) error {
		lab.Down(cfg.StateDir, 10*time.Second)
		<-exited
		lab.RemoveState(cfg.StateDir)
		return err
	}
	st, err := lab.WriteSandbox(cfg.StateDir, sb.Cmd.Process.Pid, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	if err := lab.WaitReady(ctx, cfg.StateDir, exited, 90*time.Second); err != nil {
		if detach {
			if b, rerr := os.ReadFile(filepath.Join(cfg.StateDir, "lab.log")); rerr == nil {
				err = fmt.Errorf("%w:\n%s", err, b)
			}
		}
		return fail(err)
	}
	if st, err = lab.ReadState(cfg.StateDir); err != nil {
		return fail(err)
	}
	if cfg.Directors > 0 {
		lab.ClusterBanner(os.Stdout, st, cfg, "tunvs")
	} else {
		lab.Banner(os.Stdout, st, cfg, "tunvs")
	}
	if walk {
		fmt.Println()
		if err := lab.Walk(ctx, st, lab.WalkOptions{Self: cfg.Self, Pause: !walkAuto, In: os.Stdin, Out: os.Stdout, Servers: cfg.Servers}); err != nil {
			fmt.Fprintf(os.Stderr, "tunvs lab: %v\n", err)
			if !detach {
				return fail(err)
			}
		}
	}
	if detach {
		fmt.Printf("\nThe lab runs in the background (pid %d, log %s). `tunvs lab down` removes it.\n",
			st.PID, filepath.Join(cfg.StateDir, "lab.log"))
		return nil
	}
	fmt.Printf("\nThe lab runs until Ctrl-C (or `tunvs lab down` from another terminal).\n")
	select {
	case <-exited:
		lab.RemoveState(cfg.StateDir)
		if waitErr != nil {
			return fmt.Errorf("the lab ended: %v", waitErr)
		}
		return nil
	case <-ctx.Done():
	}
	fmt.Printf("\nstopping the lab\n")
	syscall.Kill(st.PID, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		// The lab's first process should stop in well under a second;
		// this fallback is a bug to be told of, not a way to stop.
		lab.Down(cfg.StateDir, 10*time.Second)
		<-exited
		lab.RemoveState(cfg.StateDir)
		return errors.New("the lab did not stop within 15 s of SIGTERM: killed it")
	}
	lab.RemoveState(cfg.StateDir)
	if waitErr != nil {
		return fmt.Errorf("the lab stopped with an error: %v", waitErr)
	}
	return nil
}

func labExec(dir, host string, cmd []string) error {
	st, err := lab.ReadState(dir)
	if err != nil {
		return err
	}
	host, env := st.ExecAlias(host)
	argv, err := st.ExecArgv(host, cmd)
	if err != nil {
		return err
	}
	return syscall.Exec(argv[0], argv, env)
}

func labDown(dir string) error {
	msg, err := lab.Down(dir, 10*time.Second)
	if errors.Is(err, lab.ErrNoLab) {
		fmt.Println(err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Println(msg)
	return nil
}

func labWalk(ctx context.Context, dir string, auto bool) error {
	st, err := lab.ReadState(dir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	servers := 0
	for h := range st.Hosts {
		if strings.HasPrefix(h, "rs") {
			servers++
		}
	}
	return lab.Walk(ctx, st, lab.WalkOptions{Self: self, Pause: !auto, In: os.Stdin, Out: os.Stdout, Servers: servers})
}

func labCapture(ctx context.Context, dir, host, dev string, port uint16, syn bool, count int, timeout time.Duration) error {
	if os.Getenv("TUNVS_LAB_HOST") == "1" {
		// Already inside the host (started through exec).
		return lab.RunCapture(ctx, dev, lab.CaptureFilter{Port: port, SYNOnly: syn}, count, timeout, syncWriter{os.Stdout})
	}
	st, err := lab.ReadState(dir)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cargs := []string{self, "lab", "capture", "--port", strconv.Itoa(int(port)), "--count", strconv.Itoa(count), "--timeout", timeout.String()}
	if syn {
		cargs = append(cargs, "--syn")
	}
	argv, err := st.ExecArgv(host, append(cargs, host, dev))
	if err != nil {
		return err
	}
	return syscall.Exec(argv[0], argv, st.ExecEnv())
}

// syncWriter writes each line at once, for readers on a pipe.
type syncWriter struct{ f *os.File }

func (w syncWriter) Write(b []byte) (int, error) { return w.f.Write(b) }
