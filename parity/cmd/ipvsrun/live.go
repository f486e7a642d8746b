//go:build linux

package main

// Live checker scenarios (parity/live.go): keepalived on the kernel and
// `tunvs run --keepalived-conf` on a TAP device bridged to the same real
// servers, both checking them for real.
//
// The TAP device eth0 is a port of the director's bridge br0 (the real
// servers' segment, 10.1.0.0/24); tunvs holds 10.1.0.253 on it, so its
// checkers reach the real servers the way keepalived's do from the
// director's 10.1.0.254, and a real server that stops listening is seen
// by both. It is named eth0, and tunvs has a second TAP eth1 (on nothing),
// because keepalived's samples name those interfaces in their
// vrrp_instances, which tunvs runs on its links (keepalived -C does not
// run VRRP at all).

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/parity"
)

// daemon is a background process and its end.
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's, once done is closed
}

// startDaemon starts a program in network namespace ns, its output to
// logPath.
func startDaemon(ns, logPath, prog string, args ...string) (*daemon, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	d := &daemon{log: logPath, done: make(chan struct{})}
	err = inNS(ns, func() error {
		d.cmd = exec.Command(prog, args...)
		d.cmd.Stdout, d.cmd.Stderr = logf, logf
		return d.cmd.Start()
	})
	if err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		d.err = d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	return d, nil
}

// exited is the reason the daemon is no longer running, or nil.
func (d *daemon) exited() error {
	select {
	case <-d.done:
		if d.err == nil {
			return errors.New("exited")
		}
		return d.err
	default:
		return nil
	}
}

// stop signals the daemon and waits for it, killing it after 10 s.
func (d *daemon) stop(sig os.Signal) {
	if d == nil {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// logTail is the end of the daemon's log.
func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// keepalivedArgs runs Debian's keepalived in the foreground, checkers only,
// logging to the console, with its pid files in dir.
func keepalivedArgs(dir, conf string) []string {
	return []string{"-C", "-n", "-l", "-G", "-f", conf,
		"-p", dir + "/keepalived.pid", "-c", dir + "/checkers.pid", "-r", dir + "/vrrp.pid"}
}

type liveWorld struct {
	i       int
	dir     string                // the director's namespace
	rsNS    map[netip.Addr]string // real server address -> namespace
	servers map[netip.AddrPort]*http.Server
	ka, tv  *daemon
	sock    string
}

func newLiveWorld(i int, dir string, rsNS map[netip.Addr]string) *liveWorld {
	return &liveWorld{i: i, dir: dir, rsNS: rsNS, servers: map[netip.AddrPort]*http.Server{},
		sock: fmt.Sprintf("/tmp/live-%d.sock", i)}
}

// listen starts (or restarts) the HTTP real server ap in its namespace:
// every request gets 200 and the server's address.
func (l *liveWorld) listen(ap netip.AddrPort) error {
	if _, ok := l.servers[ap]; ok {
		return fmt.Errorf("%v is already listening", ap)
	}
	ns, ok := l.rsNS[ap.Addr()]
	if !ok {
		return fmt.Errorf("%v: no namespace", ap)
	}
	var ln net.Listener
	if err := inNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", ap.String())
		return err
	}); err != nil {
		return err
	}
	name := ap.String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, name)
	})}
	l.servers[ap] = srv
	go srv.Serve(ln)
	return nil
}

// close stops the HTTP real server ap: its listener closes, so a checker
// that connects is refused, as when a web server is stopped.
func (l *liveWorld) close(ap netip.AddrPort) error {
	srv, ok := l.servers[ap]
	if !ok {
		return fmt.Errorf("%v is not listening", ap)
	}
	delete(l.servers, ap)
	return srv.Close()
}

// tmpOnce copies tunvs and tunvsadm to /tmp once per boot.
var (
	tmpOnce sync.Once
	tmpErr  error
)

// start runs keepalived and tunvs on the step's keepalived.conf.
func (l *liveWorld) start(st parity.Step) error {
	tmpOnce.Do(func() {
		if _, tmpErr = sh("modprobe", "tun"); tmpErr != nil {
			return
		}
		for _, b := range []string{"tunvs", "tunvsadm"} {
			if tmpErr = toTmp(b); tmpErr != nil {
				return
			}
		}
	})
	if tmpErr != nil {
		return tmpErr
	}
	dir := fmt.Sprintf("/tmp/live-%d", l.i)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := dir + "/keepalived.conf"
	if err := os.WriteFile(conf, []byte(st.Stdin), 0o644); err != nil {
		return err
	}
	const tap = "eth0" // in the director's namespace: one per scenario
	in := func(a ...string) []string { return append([]string{"ip", "-n", l.dir}, a...) }
	if err := batch([][]string{
		in("tuntap", "add", "dev", tap, "mode", "tap"),
		in("link", "set", tap, "master", "br0"),
		in("link", "set", tap, "up"),
	}); err != nil {
		return err
	}
	var err error
	if l.ka, err = startDaemon(l.dir, dir+"/keepalived.log", "keepalived", keepalivedArgs(dir, conf)...); err != nil {
		return fmt.Errorf("keepalived: %w", err)
	}
	if l.tv, err = startDaemon(l.dir, dir+"/tunvs.log", "/tmp/tunvs", "run", "--socket", l.sock,
		"--keepalived-conf", conf, "--link", "name="+tap+",kind=tap,addr=10.1.0.253/24",
		"--link", "name=eth1,kind=tap,addr=10.9.0.1/24"); err != nil {
		return fmt.Errorf("tunvs: %w", err)
	}
	return nil
}

func (l *liveWorld) stop() {
	if l == nil {
		return
	}
	l.ka.stop(syscall.SIGTERM)
	l.tv.stop(os.Interrupt)
	for _, s := range l.servers {
		s.Close()
	}
}

// listings reads both sides' -L -n.
func (l *liveWorld) listings() (kernel, tunvs string) {
	if err := l.ka.exited(); err != nil {
		kernel = parity.LiveOutcome("", err)
	} else {
		out, err := shNS(l.dir, "ipvsadm", "-L", "-n")
		if err != nil {
			out = "error: ipvsadm: " + err.Error()
		}
		kernel = parity.LiveOutcome(out, nil)
	}
	if err := l.tv.exited(); err != nil {
		tunvs = parity.LiveOutcome("", err)
	} else {
		out, err := sh("/tmp/tunvsadm", "--socket", l.sock, "-L", "-n")
		if err != nil {
			// Not up yet, or gone: the next poll tells.
			out = "error: tunvsadm: " + err.Error()
		}
		tunvs = parity.LiveOutcome(out, nil)
	}
	return kernel, tunvs
}

// settle waits the step's seconds, then until neither listing has changed
// for parity.LiveSettleSeconds (at most a minute more), and returns both.
func (l *liveWorld) settle(st parity.Step) parity.Event {
	ev := parity.Event{Line: st.Line, Step: st.String()}
	time.Sleep(time.Duration(st.Wait()) * time.Second)
	k, t := l.listings()
	since := time.Now()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if time.Since(since) >= parity.LiveSettleSeconds*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
		k2, t2 := l.listings()
		if k2 != k || t2 != t {
			k, t, since = k2, t2, time.Now()
		}
	}
	ev.Outcome, ev.Tunvs = k, t
	if k != t || strings.HasPrefix(k, "error: ") {
		ev.Detail = "keepalived:\n" + l.ka.logTail() + "\ntunvs:\n" + l.tv.logTail()
	}
	return ev
}

// liveStep runs one live step.
func (w *world) liveStep(st parity.Step) parity.Event {
	l := w.live
	switch st.Kind {
	case parity.StepLive:
		if err := l.start(st); err != nil {
			return parity.Event{Line: st.Line, Step: st.String(), Outcome: "error: " + err.Error()}
		}
		return l.settle(st)
	case parity.StepSettle:
		if l.ka == nil {
			return parity.Event{Line: st.Line, Step: st.String(), Outcome: "error: settle before live"}
		}
		return l.settle(st)
	}
	ev := parity.Event{Line: st.Line, Step: st.String(), Outcome: "ok"}
	var err error
	switch st.Kind {
	case parity.StepStop:
		err = l.close(st.Dst)
	case parity.StepStart:
		err = l.listen(st.Dst)
	}
	if err != nil {
		ev.Outcome = "error: " + err.Error()
	}
	return ev
}
