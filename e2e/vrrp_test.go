//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// tvDirector is one tunvs run of a test that has several (env has one).
type tvDirector struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	sock string
	done chan struct{}
}

// startDirector runs tunvs with args in the sandbox's own namespace and
// waits for it to create its devices devs; the test's end stops it.
func startDirector(t *testing.T, root *netns.Host, name, sock string, args []string, devs ...string) *tvDirector {
	t.Helper()
	d := &tvDirector{t: t, name: name, log: &lockedBuffer{}, sock: sock, done: make(chan struct{})}
	// A director SIGKILLed before left its socket: the wait below is
	// for this one's.
	os.Remove(sock)
	d.cmd = exec.Command(bin("tunvs"), append([]string{"run", "--socket", sock}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(syscall.SIGINT)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, d.log)
		}
	})
	// The control socket listens once the links are set up: a device
	// moved sooner may still be replaced (offloads refused: opened again
	// plain).
	eventually(t, 20*time.Second, name+"'s control socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	}, d.log.String)
	for _, dev := range devs {
		if err := netns.WaitLink(root, dev, 10*time.Second); err != nil {
			t.Fatalf("%s did not create %s: %v\n%s", name, dev, err, d.log)
		}
	}
	return d
}

// stop sends sig and waits for the process to end (SIGKILL after 10 s).
func (d *tvDirector) stop(sig syscall.Signal) {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// builders are the helpers a test that lays its own hosts starts with:
// must fails the test on an error, add adds a host.
func (e *env) builders(t *testing.T) (must func(error), add func(name string) *netns.Host) {
	must = func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	add = func(name string) *netns.Host {
		t.Helper()
		h, err := e.topo.AddHost(name)
		must(err)
		return h
	}
	return must, add
}

// adm runs tunvsadm against the director.
func (d *tvDirector) adm(args ...string) string {
	d.t.Helper()
	out, err := exec.Command(bin("tunvsadm"), append([]string{"--socket", d.sock}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("tunvsadm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// eventually polls cond every 100 ms until it holds or within passes, and
// returns how long it took.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool, state func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %s", what, within, state())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// macOf is the Ethernet address of dev in h.
func macOf(t *testing.T, h *netns.Host, dev string) string {
	t.Helper()
	out, err := h.Run(context.Background(), "ip", "-o", "link", "show", "dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for %s in %q", dev, out)
	return ""
}

// ownerOf asks the LAN who has addr now, from host h: its neighbour entry
// forgotten, a ping answered, the MAC that answered; "" if none did.
func ownerOf(h *netns.Host, dev, addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := h.Run(ctx, "ip", "neigh", "flush", "dev", dev); err != nil {
		return ""
	}
	if err := h.Ping(ctx, addr); err != nil {
		return ""
	}
	out, err := h.Run(ctx, "ip", "neigh", "show", addr, "dev", dev)
	if err != nil {
		return ""
	}
	f := strings.Fields(out)
	for i, w := range f {
		if w == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// kaConf is a keepalived.conf of two virtual routers, IPv4 (VRID 51)
// and IPv6 (VRID 52), on dev with priority prio; tunvs and keepalived
// read the same text.
func kaConf(dev string, prio int, state string) string {
	inst := func(name string, vrid int, vip string) string {
		return fmt.Sprintf(`vrrp_instance %s {
    state %s
    interface %s
    virtual_router_id %d
    priority %d
    advert_int 1
    virtual_ipaddress {
        %s
    }
}
`, name, state, dev, vrid, prio, vip)
	}
	return "global_defs {\n    vrrp_version 3\n}\n" +
		inst("V4", 51, "172.16.1.100/24") + inst("V6", 52, "fd00:100::100/64")
}

// TestVRRPKeepalived runs tunvs's VRRP against keepalived's on one LAN:
// a bridge with keepalived's host, tunvs's TAP and an observer that asks
// who has each virtual address (ARP, Neighbor Discovery). Election and
// takeover both ways, IPv4 and IPv6: keepalived alone is master; tunvs
// of higher priority preempts it; tunvs SIGKILLed, keepalived takes over
// after Master_Down_Interval; tunvs again, it preempts again; keepalived
// raised above it (SIGHUP), tunvs yields; keepalived lowered below it,
// tunvs preempts; tunvs stopped, it resigns (priority 0) and keepalived
// takes over after Skew_Time. keepalived runs in the test's namespaces,
// as root and as uid 65534 (in its user namespace).
func TestVRRPKeepalived(t *testing.T) {
	inSandboxes(t, runVRRPKeepalived)
}

func runVRRPKeepalived(t *testing.T) {
	kaBin, err := exec.LookPath("keepalived")
	if err != nil {
		netns.Unavailable(t, "needs keepalived (Debian package keepalived)")
	}
	e := newEnv(t)
	must, add := e.builders(t)
	lan, ka, obs := add("lan"), add("ka"), add("obs")
	must(e.topo.Veth(ka, "eth0", lan, "ka", 0))
	must(ka.AddAddr("eth0", "172.16.1.4/24"))
	must(ka.AddAddr("eth0", "fd00:100::4/64"))
	must(e.topo.Veth(obs, "eth0", lan, "obs", 0))
	must(obs.AddAddr("eth0", "172.16.1.9/24"))
	must(obs.AddAddr("eth0", "fd00:100::9/64"))
	must(lan.Bridge("br0", "ka", "obs"))
	kaMAC := macOf(t, ka, "eth0")
	vmac4, vmac6 := "00:00:5e:00:01:33", "00:00:5e:00:01:33" // the link takes the lowest master's (see director.linkMACs)

	dir, err := os.MkdirTemp("", "tunvs-e2e-vrrp-")
	must(err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		must(os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	// keepalived, VRRP only (-P), in the foreground, logging to its
	// output; its pid files in the test's directory.
	kaFile := write("keepalived.conf", kaConf("eth0", 100, "BACKUP"))
	kaLog := &lockedBuffer{}
	kc := ka.Command(context.Background(), kaBin, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
		"-f", kaFile, "-p", filepath.Join(dir, "ka.pid"), "-r", filepath.Join(dir, "vrrp.pid"))
	kc.Stdout, kc.Stderr = kaLog, kaLog
	must(kc.Start())
	kaDone := make(chan struct{})
	go func() { kc.Wait(); close(kaDone) }()
	t.Cleanup(func() {
		kc.Process.Signal(syscall.SIGTERM)
		select {
		case <-kaDone:
		case <-time.After(10 * time.Second):
			kc.Process.Kill()
		}
		if t.Failed() {
			t.Logf("keepalived log:\n%s", kaLog)
		}
	})
	var last4, last6 string
	owners := func(want4, want6 string) func() bool {
		return func() bool {
			last4, last6 = ownerOf(obs, "eth0", "172.16.1.100"), ownerOf(obs, "eth0", "fd00:100::100")
			return last4 == want4 && last6 == want6
		}
	}
	step := func(what string, within time.Duration, want4, want6 string) time.Duration {
		t.Helper()
		d := eventually(t, within, what, owners(want4, want6), func() string {
			return fmt.Sprintf("IPv4 at %q, IPv6 at %q; want %s, %s (keepalived is %s)", last4, last6, want4, want6, kaMAC)
		})
		t.Logf("%s: %.1f s", what, d.Seconds())
		return d
	}
	step("keepalived alone becomes master", 20*time.Second, kaMAC, kaMAC)

	tvFile := write("tunvs.conf", kaConf("tvlan", 150, "BACKUP"))
	var tv *tvDirector
	startTunvs := func() {
		tv = startDirector(t, e.topo.Root(), "tunvs", filepath.Join(dir, "ctl.sock"), []string{"--log-level", "info",
			"--link=name=tvlan,kind=tap,addr=172.16.1.3/24,addr=fd00:100::3/64", "--keepalived-conf", tvFile}, "tvlan")
		must(e.topo.Root().MoveLink("tvlan", lan))
		must(lan.IP("link", "set", "dev", "tvlan", "master", "br0"))
		must(lan.LinkUp("tvlan"))
	}
	startTunvs()
	step("tunvs (150) preempts keepalived (100)", 20*time.Second, vmac4, vmac6)

	tv.stop(syscall.SIGKILL)
	d := step("tunvs SIGKILLed: keepalived takes over", 20*time.Second, kaMAC, kaMAC)
	// Master_Down_Interval for keepalived's 100 at 1 s: 3.61 s.
	if d < 2*time.Second {
		t.Errorf("keepalived took over %v after the kill: sooner than Master_Down_Interval allows", d)
	}

	startTunvs()
	step("tunvs again: preempts", 20*time.Second, vmac4, vmac6)

	reload := func(prio int) {
		must(os.WriteFile(kaFile, []byte(kaConf("eth0", prio, "BACKUP")), 0o644))
		must(kc.Process.Signal(syscall.SIGHUP))
	}
	reload(200)
	step("keepalived raised to 200: tunvs yields", 20*time.Second, kaMAC, kaMAC)
	reload(50)
	step("keepalived lowered to 50: tunvs preempts", 20*time.Second, vmac4, vmac6)

	tv.stop(syscall.SIGINT)
	step("tunvs stopped (priority 0 sent): keepalived takes over", 20*time.Second, kaMAC, kaMAC)
	for _, w := range []string{"Entering MASTER STATE", "Entering BACKUP STATE"} {
		if !strings.Contains(kaLog.String(), w) {
			t.Errorf("keepalived log has no %q", w)
		}
	}
	if !strings.Contains(tv.log.String(), `"to":"BACKUP"`) && !strings.Contains(tv.log.String(), "to=BACKUP") {
		t.Errorf("tunvs never logged a transition to BACKUP:\n%s", tv.log)
	}
}
