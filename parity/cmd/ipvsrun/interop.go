//go:build linux

package main

// The sync interop run (-sync-interop DIR): kernel IPVS and tunvs as each
// other's sync master and backup on one link.
//
// On top of the capture's namespaces (sync.go): in b, a bridge br0 holds
// the sync link's end (eth0), a TAP device tvs0 that a tunvs director
// (/job/tunvs) runs on, and veths to a client namespace c2 and
// a real server namespace r2 (10.3.0.5, default route via tunvs's DIP
// 10.3.0.1): tunvs is a one-armed director for VIP 10.3.0.100 on that LAN.
// The client is on another subnet of the same LAN (10.4.0.2, routed via
// tunvs's 10.4.0.1), or the real server would answer it directly.
//
//   - the kernel (m) is a sync master with syncid 5, tunvs its backup;
//   - tunvs is a sync master with syncid 6, the kernel (m) its backup.
//
// Connections go through each master; then both directors' -Lnc are
// written to DIR (kernel.txt, tunvs.txt), with their -L --daemon, for
// parity's TestSync (interop) to compare.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const tunvsSock = "/tmp/tunvs-interop.sock"

func interopTopology() error {
	cmds := [][]string{{"ip", "netns", "add", "c2"}, {"ip", "netns", "add", "r2"}}
	in := func(ns string, a ...string) []string { return append([]string{"ip", "-n", ns}, a...) }
	cmds = append(cmds,
		in("b", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"),
		in("b", "link", "set", "br0", "up"),
		in("b", "link", "set", "eth0", "master", "br0"),
		in("b", "tuntap", "add", "dev", "tvs0", "mode", "tap"),
		in("b", "link", "set", "tvs0", "master", "br0"),
		in("b", "link", "set", "tvs0", "up"),
		in("b", "link", "add", "pc", "type", "veth", "peer", "name", "eth0", "netns", "c2"),
		in("b", "link", "add", "pr", "type", "veth", "peer", "name", "eth0", "netns", "r2"),
		in("b", "link", "set", "pc", "master", "br0"),
		in("b", "link", "set", "pr", "master", "br0"),
		in("b", "link", "set", "pc", "up"),
		in("b", "link", "set", "pr", "up"),
		in("c2", "link", "set", "lo", "up"),
		in("c2", "addr", "add", "10.4.0.2/24", "dev", "eth0"),
		in("c2", "link", "set", "eth0", "up"),
		in("c2", "route", "add", "default", "via", "10.4.0.1"),
		in("r2", "link", "set", "lo", "up"),
		in("r2", "addr", "add", "10.3.0.5/24", "dev", "eth0"),
		in("r2", "link", "set", "eth0", "up"),
		in("r2", "route", "add", "default", "via", "10.3.0.1"),
	)
	return batch(cmds)
}

// interopServers: tunvs's real server, like syncServers' own.
func interopServers() error {
	return inNS("r2", func() error {
		for _, a := range []string{"10.3.0.5:8080", "10.3.0.5:443"} {
			l, err := net.Listen("tcp", a)
			if err != nil {
				return err
			}
			go serveTCP(l, "hello")
		}
		u, err := net.ListenPacket("udp4", "10.3.0.5:5353")
		if err != nil {
			return err
		}
		go serveUDP(u, "udp")
		return nil
	})
}

// tunvsadm runs /job/tunvsadm against the tunvs director.
func tunvsadm(args ...string) (string, error) {
	return sh(append([]string{"/tmp/tunvsadm", "--socket", tunvsSock}, args...)...)
}

// toTmp copies the job's binary name to /tmp: an exec from the host's 9p
// share under TCG takes seconds, from the tmpfs a fraction of one, which
// keeps the two directors' listings close in time.
func toTmp(name string) error {
	b, err := os.ReadFile("/job/" + name)
	if err == nil {
		err = os.WriteFile("/tmp/"+name, b, 0o755)
	}
	return err
}

// timed runs list and notes when it ran (Unix ms before and after), for
// the expiry comparison: "# taken START END".
func timed(list func() (string, error)) (string, error) {
	t0 := time.Now().UnixMilli()
	out, err := list()
	return fmt.Sprintf("%s# taken %d %d\n", out, t0, time.Now().UnixMilli()), err
}

// startTunvs starts /tmp/tunvs with args in namespace ns, its output to
// logPath, and waits up to a minute for up to succeed (its control
// socket answering). stop interrupts it and waits for it, killing it
// after 10 s.
func startTunvs(ns, logPath string, args []string, up func() error) (stop func(), err error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	var tunvs *exec.Cmd
	if err := inNS(ns, func() error {
		tunvs = exec.Command("/tmp/tunvs", args...)
		tunvs.Stdout, tunvs.Stderr = logf, logf
		return tunvs.Start()
	}); err != nil {
		logf.Close()
		return nil, fmt.Errorf("tunvs: %w", err)
	}
	stop = func() {
		tunvs.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { tunvs.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			tunvs.Process.Kill()
		}
		logf.Close()
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = up(); err == nil {
			return stop, nil
		}
	}
	stop()
	return nil, fmt.Errorf("tunvs did not come up: %w", err)
}

func syncInterop(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := sh("modprobe", "tun"); err != nil {
		return err
	}
	for _, b := range []string{"tunvs", "tunvsadm"} {
		if err := toTmp(b); err != nil {
			return err
		}
	}
	if err := syncTopology(); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	defer func() {
		for _, ns := range []string{"m", "c", "r", "b", "c2", "r2"} {
			sh("ip", "netns", "del", ns)
		}
	}()
	if err := interopTopology(); err != nil {
		return fmt.Errorf("interop topology: %w", err)
	}
	if err := syncServers(); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	if err := interopServers(); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	// The kernel: the capture's services and master (syncid 5), tunvs's
	// service so that its connections bind, and a backup for syncid 6.
	script := strings.Join(append(captureServices,
		"-A -t 10.3.0.100:80 -s rr", "-a -t 10.3.0.100:80 -r 10.3.0.5:8080 -m",
		"-A -u 10.3.0.100:53 -s rr", "-a -u 10.3.0.100:53 -r 10.3.0.5:5353 -m",
		"-A -t 10.3.0.100:443 -s rr -p 360", "-a -t 10.3.0.100:443 -r 10.3.0.5:443 -m",
		"-A -t 10.3.0.100:8443 -s rr", "-a -t 10.3.0.100:8443 -r 10.3.0.5:443 -m",
		"--start-daemon master --mcast-interface sync0 --syncid 5",
		"--start-daemon backup --mcast-interface sync0 --syncid 6",
	), "\n") + "\n"
	if err := ipvsadmRestore("m", script); err != nil {
		return err
	}
	// tunvs: the same services (its backup binds the kernel's
	// connections to them), its own VIP on the LAN.
	args := []string{"run", "--socket", tunvsSock,
		"--link", "name=tvs0,kind=tap,addr=10.2.0.3/24,addr=10.3.0.1/24,addr=10.4.0.1/24,addr=10.3.0.100/32"}
	for _, l := range strings.Split(strings.TrimSpace(script), "\n") {
		if l == "-A -t 10.3.0.100:8443 -s rr" {
			// On tunvs, 8443 is SYN-proxied: its record carries the
			// sequence option and tunvs's own (0x7e, optional),
			// which the kernel backup must skip and still take the
			// connection (ipvssync/synproxy.go).
			l += " -j enable"
		}
		if !strings.HasPrefix(l, "--") {
			args = append(args, "--rule", l)
		}
	}
	stop, err := startTunvs("b", filepath.Join(dir, "tunvs.log"), args, func() error {
		_, err := tunvsadm("-L", "-n")
		return err
	})
	if err != nil {
		return err
	}
	defer stop()
	for _, l := range []string{
		"--start-daemon backup --mcast-interface tvs0 --syncid 5",
		"--start-daemon master --mcast-interface tvs0 --syncid 6",
	} {
		if out, err := tunvsadm(strings.Fields(l)...); err != nil {
			return fmt.Errorf("tunvsadm %s: %v %s", l, err, out)
		}
	}
	var held []*net.TCPConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Through the kernel master.
	if err := syncStates(40000, true, &held); err != nil {
		return fmt.Errorf("kernel master: %w", err)
	}
	// Through the tunvs master: established (held), client-closed, UDP,
	// persistent.
	dial := func(port int, vport int) (*net.TCPConn, error) {
		return dialFrom("c2", fmt.Sprintf("10.4.0.2:%d", port), fmt.Sprintf("10.3.0.100:%d", vport))
	}
	c, err := dial(42000, 80)
	if err != nil {
		neigh, _ := sh("ip", "-n", "c2", "neigh", "show")
		link, _ := sh("ip", "-n", "b", "-s", "link", "show", "tvs0")
		conns, _ := tunvsadm("-L", "-n", "-c")
		return fmt.Errorf("tunvs master, established: %w\nc2 neighbours:\n%s\ntvs0:\n%s\ntunvs -Lnc:\n%s", err, neigh, link, conns)
	}
	held = append(held, c)
	if c, err = dial(42001, 80); err != nil {
		return fmt.Errorf("tunvs master, close: %w", err)
	}
	closeConn(c)
	if c, err = dial(42002, 443); err != nil {
		return fmt.Errorf("tunvs master, persistent: %w", err)
	}
	held = append(held, c)
	if c, err = dial(42004, 8443); err != nil {
		return fmt.Errorf("tunvs master, SYN-proxied: %w", err)
	}
	held = append(held, c)
	if err := udpFrom("c2", "10.4.0.2:42003", "10.3.0.100:53", 3); err != nil {
		return fmt.Errorf("tunvs master, udp: %w", err)
	}
	// Both masters flush within 2 s of a record and look once a second.
	time.Sleep(4 * time.Second)
	kout, kerr := timed(func() (string, error) { return shNS("m", "ipvsadm", "-L", "-n", "-c") })
	tout, terr := timed(func() (string, error) { return tunvsadm("-L", "-n", "-c") })
	kd, _ := shNS("m", "ipvsadm", "-L", "--daemon")
	td, _ := tunvsadm("-L", "--daemon")
	if kerr != nil || terr != nil {
		return fmt.Errorf("listing: kernel %v, tunvs %v", kerr, terr)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.txt"), []byte(kout+"# daemons\n"+kd), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tunvs.txt"), []byte(tout+"# daemons\n"+td), 0o644)
}
