//go:build linux

package main

// The sync capture (-sync DIR): a kernel IPVS master with connections in
// the states the sync protocol carries, and a listener in another
// namespace that records every datagram the master's sync daemon sends.
// The datagrams become ipvssync's golden vectors (see parity/sync_test.go).
//
// Namespaces: m is the director (VIPs 10.0.0.100 and fd00:100::100 on lo,
// clients on "cl", the real server on "rs", the sync link "sync0"); c is
// the client (10.0.0.2, fd00::2); r the real server (10.1.0.1, fd01::1);
// b the other end of the sync link (10.2.0.2), where the capture listens.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

type capture struct {
	mu   sync.Mutex
	msgs [][]byte
	pc   *net.UDPConn
}

// listenSync joins 224.0.0.81 on ns's dev and records what arrives on port.
func listenSync(ns, dev string, port int) (*capture, error) {
	c := &capture{}
	err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		pc, err := net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 81), Port: port})
		c.pc = pc
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := c.pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	return c, nil
}

// take returns what arrived so far and forgets it.
func (c *capture) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.msgs
	c.msgs = nil
	return m
}

// syncTopology builds the namespaces above.
func syncTopology() error {
	cmds := [][]string{
		{"ip", "netns", "add", "m"}, {"ip", "netns", "add", "c"},
		{"ip", "netns", "add", "r"}, {"ip", "netns", "add", "b"},
	}
	m := func(a ...string) []string { return append([]string{"ip", "-n", "m"}, a...) }
	in := func(ns string, a ...string) []string { return append([]string{"ip", "-n", ns}, a...) }
	cmds = append(cmds,
		m("link", "set", "lo", "up"),
		m("addr", "add", "10.0.0.100/32", "dev", "lo"),
		m("addr", "add", "fd00:100::100/128", "dev", "lo"),
		m("link", "add", "cl", "type", "veth", "peer", "name", "eth0", "netns", "c"),
		m("link", "add", "rs", "type", "veth", "peer", "name", "eth0", "netns", "r"),
		m("link", "add", "sync0", "type", "veth", "peer", "name", "eth0", "netns", "b"),
		m("addr", "add", "10.0.0.1/24", "dev", "cl"),
		m("addr", "add", "fd00::1/64", "dev", "cl", "nodad"),
		m("addr", "add", "10.1.0.254/24", "dev", "rs"),
		m("addr", "add", "fd01::254/64", "dev", "rs", "nodad"),
		m("addr", "add", "10.2.0.1/24", "dev", "sync0"),
		m("link", "set", "cl", "up"), m("link", "set", "rs", "up"), m("link", "set", "sync0", "up"),
		in("c", "link", "set", "lo", "up"),
		in("c", "addr", "add", "10.0.0.2/24", "dev", "eth0"),
		in("c", "addr", "add", "fd00::2/64", "dev", "eth0", "nodad"),
		in("c", "link", "set", "eth0", "up"),
		in("c", "route", "add", "default", "via", "10.0.0.1"),
		in("c", "route", "add", "default", "via", "fd00::1"),
		in("r", "link", "set", "lo", "up"),
		in("r", "addr", "add", "10.1.0.1/24", "dev", "eth0"),
		in("r", "addr", "add", "fd01::1/64", "dev", "eth0", "nodad"),
		in("r", "link", "set", "eth0", "up"),
		in("r", "route", "add", "default", "via", "10.1.0.254"),
		in("r", "route", "add", "default", "via", "fd01::254"),
		in("b", "link", "set", "lo", "up"),
		in("b", "addr", "add", "10.2.0.2/24", "dev", "eth0"),
		in("b", "link", "set", "eth0", "up"),
	)
	if err := batch(cmds); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv6.conf.all.forwarding", "1"}} {
		if err := sysctl("m", kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// syncServers: on every port, a real server that says hello and reads
// until the client closes; on 8081 and [::]:8081, one that says hello and
// closes first (so the director sees FIN_WAIT); UDP echo on 5353.
func syncServers() error {
	return inNS("r", func() error {
		for _, spec := range []struct {
			addr       string
			closeFirst bool
		}{{"10.1.0.1:8080", false}, {"10.1.0.1:8081", true}, {"10.1.0.1:443", false}, {"[fd01::1]:8080", false}} {
			l, err := net.Listen("tcp", spec.addr)
			if err != nil {
				return err
			}
			closeFirst := spec.closeFirst
			go acceptEach(l, func(c net.Conn) {
				if closeFirst {
					// Read the client's line first: closing with
					// unread data would send a reset.
					bufio.NewReader(c).ReadString('\n')
					io.WriteString(c, "hello\n")
					return
				}
				io.WriteString(c, "hello\n")
				io.Copy(io.Discard, c)
			})
		}
		u, err := net.ListenPacket("udp4", "10.1.0.1:5353")
		if err != nil {
			return err
		}
		go serveUDP(u, "udp")
		return nil
	})
}

// dialSync connects from the client namespace and sends a line: the SYN,
// the handshake's ACK and the data are the three client packets after
// which the master syncs an established connection (sync_threshold 3).
func dialSync(src, dst string) (*net.TCPConn, error) { return dialFrom("c", src, dst) }

// dialFrom is dialSync from namespace ns.
func dialFrom(ns, src, dst string) (*net.TCPConn, error) {
	var conn net.Conn
	err := inNS(ns, func() error {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		dl := net.Dialer{Timeout: *timeout, LocalAddr: net.TCPAddrFromAddrPort(s), Control: reuse}
		c, err := dl.Dial("tcp", d.String())
		conn = c
		return err
	})
	if err != nil {
		return nil, err
	}
	tc := conn.(*net.TCPConn)
	if _, err := io.WriteString(tc, "hi\n"); err != nil {
		tc.Close()
		return nil, err
	}
	tc.SetReadDeadline(time.Now().Add(*timeout))
	if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil {
		tc.Close()
		return nil, err
	}
	tc.SetReadDeadline(time.Time{})
	return tc, nil
}

// udpSync sends n datagrams from one client port; the third is synced.
func udpSync(src, dst string, n int) error { return udpFrom("c", src, dst, n) }

// udpFrom is udpSync from namespace ns.
func udpFrom(ns, src, dst string, n int) error {
	return inNS(ns, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 100)
		for range n {
			if _, err := c.Write([]byte("x")); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(*timeout))
			if _, err := c.Read(buf); err != nil {
				return err
			}
		}
		return nil
	})
}

// syncStates makes, from client ports base+0.., the connections the
// golden vectors need. held keeps the ones left open.
func syncStates(base int, v6 bool, held *[]*net.TCPConn) error {
	p := func(i int) string { return fmt.Sprintf("10.0.0.2:%d", base+i) }
	// ESTABLISHED, kept open.
	c, err := dialSync(p(0), "10.0.0.100:80")
	if err != nil {
		return fmt.Errorf("established: %w", err)
	}
	*held = append(*held, c)
	// The server closes first: FIN_WAIT when the client acknowledges
	// its FIN, TIME_WAIT at the client's own FIN.
	c, err = dialSync(p(1), "10.0.0.100:81")
	if err != nil {
		return fmt.Errorf("fin_wait: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(*timeout))
	io.Copy(io.Discard, c) // the server's FIN
	time.Sleep(500 * time.Millisecond)
	c.Close()
	// The client closes first: CLOSE_WAIT, then TIME_WAIT at the last
	// ACK after the server's FIN.
	c, err = dialSync(p(2), "10.0.0.100:80")
	if err != nil {
		return fmt.Errorf("close_wait: %w", err)
	}
	closeConn(c)
	// A reset: CLOSE.
	c, err = dialSync(p(3), "10.0.0.100:80")
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	c.SetLinger(0)
	c.Close()
	// UDP: three datagrams.
	if err := udpSync(p(4), "10.0.0.100:53", 3); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	// A persistent service: the connection and its template.
	c, err = dialSync(p(5), "10.0.0.100:443")
	if err != nil {
		return fmt.Errorf("persistent: %w", err)
	}
	*held = append(*held, c)
	if v6 {
		c, err = dialSync(fmt.Sprintf("[fd00::2]:%d", base+6), "[fd00:100::100]:80")
		if err != nil {
			return fmt.Errorf("ipv6: %w", err)
		}
		*held = append(*held, c)
	}
	return nil
}

// captureServices are the kernel master's services (syncServers' real
// server behind each).
var captureServices = []string{
	"-A -t 10.0.0.100:80 -s rr", "-a -t 10.0.0.100:80 -r 10.1.0.1:8080 -m",
	"-A -t 10.0.0.100:81 -s rr", "-a -t 10.0.0.100:81 -r 10.1.0.1:8081 -m",
	"-A -u 10.0.0.100:53 -s rr", "-a -u 10.0.0.100:53 -r 10.1.0.1:5353 -m",
	"-A -t 10.0.0.100:443 -s rr -p 360", "-a -t 10.0.0.100:443 -r 10.1.0.1:443 -m",
	"-A -t [fd00:100::100]:80 -s rr", "-a -t [fd00:100::100]:80 -r [fd01::1]:8080 -m",
}

// syncGolden runs the capture and writes DIR/v1-N.bin, DIR/v0-N.bin and
// DIR/master.txt (the master's -Lnc and --daemon listings).
func syncGolden(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syncTopology(); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	defer func() {
		for _, ns := range []string{"m", "c", "r", "b"} {
			sh("ip", "netns", "del", ns)
		}
	}()
	if err := syncServers(); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	capt, err := listenSync("b", "eth0", 8848)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer capt.pc.Close()
	script := strings.Join(append(captureServices,
		"--start-daemon master --mcast-interface sync0 --syncid 5"), "\n") + "\n"
	if err := ipvsadmRestore("m", script); err != nil {
		return err
	}
	var held []*net.TCPConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var listing strings.Builder
	for _, pass := range []struct {
		ver  string
		base int
	}{{"1", 40000}, {"0", 41000}} {
		if err := sysctl("m", "net.ipv4.vs.sync_version", pass.ver); err != nil {
			return err
		}
		if err := syncStates(pass.base, pass.ver == "1", &held); err != nil {
			return fmt.Errorf("version %s: %w", pass.ver, err)
		}
		// Buffers go out when full or 2 s old; the master thread looks
		// once a second.
		time.Sleep(4 * time.Second)
		msgs := capt.take()
		if len(msgs) == 0 {
			return fmt.Errorf("version %s: no sync datagram captured", pass.ver)
		}
		for i, b := range msgs {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("v%s-%d.bin", pass.ver, i)), b, 0o644); err != nil {
				return err
			}
		}
		out, _ := shNS("m", "ipvsadm", "-L", "-n", "-c")
		fmt.Fprintf(&listing, "# after the version %s pass: ipvsadm -L -n -c\n%s", pass.ver, out)
	}
	out, _ := shNS("m", "ipvsadm", "-L", "--daemon")
	fmt.Fprintf(&listing, "# ipvsadm -L --daemon\n%s", out)
	return os.WriteFile(filepath.Join(dir, "master.txt"), []byte(listing.String()), 0o644)
}

// ipvsadmRestore runs ipvsadm -R with script in namespace ns.
func ipvsadmRestore(ns, script string) error {
	return inNS(ns, func() error {
		c := exec.Command("ipvsadm", "-R")
		c.Stdin = strings.NewReader(script)
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ipvsadm -R: %v: %s", err, out)
		}
		return nil
	})
}
