//go:build linux

package main

// The tunnelling run (-tunnel DIR): a tunvs director (/job/tunvs) sends
// with -i to real servers whose own kernel decapsulates (ipip's tunl0,
// fou's GUE, ip_gre's gre0, ip6_tunnel's ip6tnl0), which this machine
// has and the host running the tests may not.
//
//	tc (client 10.5.0.2, fd00:5::2)
//	 | veth
//	tr: a kernel router: VIPs 10.9.0.100 and fd00:9::100 routed into the
//	    TUN tvc, the real servers' LAN on bridge br0 (10.6.0.1), 10.8.0.0/24
//	    on a veth (10.8.0.1); tunvs runs here, on the TUN tvc (client
//	    side), the TAP tvs0 on br0 (10.6.0.3) and the TUN tvr (10.7.1.2)
//	    that the kernel routes on to 10.8.0.0/24
//	 |- t1 10.6.0.5 / fd00:6::5   ipip (tunl0), and IPv6 in IPv6 (ip6tnl0)
//	 |- t2 10.6.0.6               gue to port 6080 with --tun-csum (fou)
//	 |- t3 10.6.0.7               gre with --tun-csum (gre1, icsum)
//	 `- t4 10.8.0.5               ipip, behind tunvs's TUN tvr
//
// Each real server holds the VIP on its tunnel device, rp_filter off,
// arp_ignore=1 and arp_announce=2, and answers the client directly by its
// default route (tr). Its server reads a request to its end and answers
// "NAME BYTES". Small requests check the schedule (rr: two each); 200 kB
// uploads check path-MTU discovery through the tunnel (tunvs sends the
// client "fragmentation needed" with 1500 less the encapsulation) and
// the cutting of super-packets; the link from tr to t4 has MTU 1300, so
// tr's "fragmentation needed" about tunvs's packets to t4 must reach the
// client through tunvs (ip_vs_in_icmp's tunnel case); IPv6 goes to t1.
// With -tunnel-userns the same runs as uid 65534 in a user namespace of
// its own (the root run starts it after its own).

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const tunnelSock = "/tmp/tunvs-tunnel.sock"

var tunnelNS = []string{"tc", "tr", "t1", "t2", "t3", "t4"}

func tunnelTopology(userns bool) error {
	var cmds [][]string
	for _, ns := range tunnelNS {
		cmds = append(cmds, []string{"ip", "netns", "add", ns})
	}
	in := func(ns string, a ...string) []string { return append([]string{"ip", "-n", ns}, a...) }
	cmds = append(cmds,
		in("tr", "link", "set", "lo", "up"),
		in("tr", "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", "tc"),
		in("tr", "addr", "add", "10.5.0.1/24", "dev", "vc"),
		in("tr", "addr", "add", "fd00:5::1/64", "dev", "vc", "nodad"),
		in("tr", "link", "set", "vc", "up"),
		in("tc", "link", "set", "lo", "up"),
		in("tc", "addr", "add", "10.5.0.2/24", "dev", "eth0"),
		in("tc", "addr", "add", "fd00:5::2/64", "dev", "eth0", "nodad"),
		in("tc", "link", "set", "eth0", "up"),
		in("tc", "route", "add", "default", "via", "10.5.0.1"),
		in("tc", "route", "add", "::/0", "via", "fd00:5::1"),
		in("tr", "link", "add", "br0", "type", "bridge"),
		in("tr", "addr", "add", "10.6.0.1/24", "dev", "br0"),
		in("tr", "addr", "add", "fd00:6::1/64", "dev", "br0", "nodad"),
		in("tr", "link", "set", "br0", "up"),
		in("tr", "tuntap", "add", "dev", "tvs0", "mode", "tap"),
		in("tr", "link", "set", "tvs0", "master", "br0"),
		in("tr", "link", "set", "tvs0", "up"),
		in("tr", "link", "add", "v4", "type", "veth", "peer", "name", "eth0", "netns", "t4"),
		in("tr", "addr", "add", "10.8.0.1/24", "dev", "v4"),
		in("tr", "link", "set", "v4", "up"),
	)
	for i, ns := range []string{"t1", "t2", "t3"} {
		v := "v" + ns[1:]
		cmds = append(cmds,
			in("tr", "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", ns),
			in("tr", "link", "set", v, "master", "br0"),
			in("tr", "link", "set", v, "up"),
			in(ns, "addr", "add", fmt.Sprintf("10.6.0.%d/24", 5+i), "dev", "eth0"),
			in(ns, "addr", "add", fmt.Sprintf("fd00:6::%d/64", 5+i), "dev", "eth0", "nodad"),
			in(ns, "link", "set", "eth0", "up"),
			in(ns, "route", "add", "default", "via", "10.6.0.1"),
			in(ns, "route", "add", "::/0", "via", "fd00:6::1"),
		)
	}
	cmds = append(cmds,
		in("t4", "addr", "add", "10.8.0.5/24", "dev", "eth0"),
		in("t4", "link", "set", "eth0", "up"),
		in("t4", "route", "add", "default", "via", "10.8.0.1"),
	)
	// The real servers' tunnel devices, each holding the VIP. GRE with a
	// checksum needs a device that expects one (icsum): ip_tunnel_rcv
	// drops a checksummed packet on a device without, such as the
	// catch-all gre0, and the other way round.
	dev := map[string]string{"t1": "tunl0", "t2": "tunl0", "t3": "gre1", "t4": "tunl0"}
	cmds = append(cmds, in("t3", "link", "add", "gre1", "type", "gre", "local", "10.6.0.7", "icsum"))
	for _, ns := range []string{"t1", "t2", "t3", "t4"} {
		cmds = append(cmds,
			in(ns, "link", "set", "lo", "up"),
			in(ns, "link", "set", dev[ns], "up"),
			in(ns, "addr", "add", "10.9.0.100/32", "dev", dev[ns]),
		)
	}
	if !userns {
		// fou's netlink commands need CAP_NET_ADMIN in the initial user
		// namespace (GENL_ADMIN_PERM): the user-namespace run has t2
		// take ipip instead.
		cmds = append(cmds, in("t2", "fou", "add", "port", "6080", "gue"))
	}
	cmds = append(cmds,
		in("t1", "link", "set", "ip6tnl0", "up"),
		in("t1", "addr", "add", "fd00:9::100/128", "dev", "ip6tnl0", "nodad"),
	)
	if err := batch(cmds); err != nil {
		return err
	}
	for _, s := range [][3]string{
		{"tr", "net.ipv4.ip_forward", "1"},
		{"tr", "net.ipv6.conf.all.forwarding", "1"},
		{"tr", "net.ipv4.conf.all.rp_filter", "0"},
		{"tr", "net.ipv4.conf.default.rp_filter", "0"},
	} {
		if err := sysctl(s[0], s[1], s[2]); err != nil {
			return err
		}
	}
	for _, ns := range []string{"t1", "t2", "t3", "t4"} {
		for _, s := range [][2]string{
			{"net.ipv4.conf.all.rp_filter", "0"},
			{"net.ipv4.conf." + dev[ns] + ".rp_filter", "0"},
			{"net.ipv4.conf.all.arp_ignore", "1"},
			{"net.ipv4.conf.all.arp_announce", "2"},
		} {
			if err := sysctl(ns, s[0], s[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// tunnelServers: each real server answers "NAME BYTES" once the client
// has sent its request and closed its side.
func tunnelServers() error {
	for _, ns := range []string{"t1", "t2", "t3", "t4"} {
		addrs := []string{"10.9.0.100:80"}
		if ns == "t1" {
			addrs = append(addrs, "[fd00:9::100]:80")
		}
		if err := inNS(ns, func() error {
			for _, a := range addrs {
				l, err := net.Listen("tcp", a)
				if err != nil {
					return err
				}
				go serveCount(l, ns)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func serveCount(l net.Listener, name string) {
	acceptEach(l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%s %d\n", name, n)
	})
}

// tunnelRequest sends size bytes from the client to dst and returns the
// answer.
func tunnelRequest(src, dst string, size int) (string, error) {
	var out string
	err := inNS("tc", func() error {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		dl := net.Dialer{Timeout: *timeout, LocalAddr: net.TCPAddrFromAddrPort(s), Control: reuse}
		c, err := dl.Dial("tcp", d.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := c.Write(bytes.Repeat([]byte("x"), size)); err != nil {
			return fmt.Errorf("sending %d bytes: %w", size, err)
		}
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		out = strings.TrimSpace(string(b))
		return err
	})
	return out, err
}

// tunvsMetrics is what tunvs's metrics endpoint serves ("" if nothing).
// The request is made by hand on the thread inNS holds in tr: net/http's
// transport would dial from a goroutine of its own, on another thread,
// in another namespace.
func tunvsMetrics() string {
	var metrics string
	inNS("tr", func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9178", *timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(*timeout))
		io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
		b, err := io.ReadAll(c)
		_, body, _ := strings.Cut(string(b), "\r\n\r\n")
		metrics = body
		return err
	})
	return metrics
}

// tunvsMetric reads one value from tunvs's metrics (0 if absent).
func tunvsMetric(metrics, name string) int {
	for _, l := range strings.Split(metrics, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// tunnelE2E builds the topology, starts tunvs and the real servers,
// runs the checks, and writes what it saw to dir (report.txt, the
// listings, tunvs's log). Any failed check is an error.
func tunnelE2E(dir string, userns bool) (rerr error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var report strings.Builder
	defer func() {
		if rerr != nil {
			fmt.Fprintf(&report, "FAIL: %v\n", rerr)
		}
		os.WriteFile(filepath.Join(dir, "report.txt"), []byte(report.String()), 0o644)
	}()
	um, _ := os.ReadFile("/proc/self/uid_map")
	fmt.Fprintf(&report, "uid %d, uid_map %s\n", os.Getuid(), strings.Join(strings.Fields(string(um)), " "))
	defer func() {
		for _, ns := range tunnelNS {
			sh("ip", "netns", "del", ns)
		}
	}()
	if err := tunnelTopology(userns); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if err := tunnelServers(); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	vip := "10.9.0.100:80"
	rules := []string{
		"-A -t " + vip + " -s rr",
		"-a -t " + vip + " -r 10.6.0.5 -i",
		"-a -t " + vip + " -r 10.6.0.6 -i --tun-type gue --tun-port 6080 --tun-csum",
		"-a -t " + vip + " -r 10.6.0.7 -i --tun-type gre --tun-csum",
		"-a -t " + vip + " -r 10.8.0.5 -i",
		"-A -t [fd00:9::100]:80 -s rr",
		"-a -t [fd00:9::100]:80 -r [fd00:6::5]:80 -i",
	}
	if userns {
		rules[2] = "-a -t " + vip + " -r 10.6.0.6 -i"
	}
	args := []string{"run", "--socket", tunnelSock, "--metrics=127.0.0.1:9178",
		"--link", "name=tvc,kind=tun,addr=10.7.0.2/30,addr=fd00:7::2/64,addr=10.9.0.100/32,addr=fd00:9::100/128",
		"--link", "name=tvs0,kind=tap,addr=10.6.0.3/24,addr=fd00:6::3/64",
		"--link", "name=tvr,kind=tun,addr=10.7.1.2/30",
		"--route", "10.5.0.0/24,dev=tvc", "--route", "fd00:5::/64,dev=tvc", "--route", "10.8.0.0/24,dev=tvr"}
	for _, r := range rules {
		args = append(args, "--rule", r)
	}
	adm := func(a ...string) (string, error) {
		return sh(append([]string{"/tmp/tunvsadm", "--socket", tunnelSock}, a...)...)
	}
	stop, err := startTunvs("tr", filepath.Join(dir, "tunvs.log"), args, func() error {
		_, err := adm("-L", "-n")
		return err
	})
	if err != nil {
		return err
	}
	defer stop()
	// The kernel's side of tunvs's TUN devices, which tunvs made.
	in := func(a ...string) []string { return append([]string{"ip", "-n", "tr"}, a...) }
	if err := batch([][]string{
		in("route", "add", "10.9.0.100/32", "dev", "tvc"),
		in("route", "add", "fd00:9::100/128", "dev", "tvc"),
		in("addr", "add", "10.7.1.1/30", "dev", "tvr"),
	}); err != nil {
		return fmt.Errorf("routes to tunvs: %w", err)
	}
	fail := func(format string, a ...any) error {
		l, _ := adm("-L", "-n", "-c")
		m, _ := adm("-L", "-n", "--stats")
		var host []string
		for _, line := range strings.Split(tunvsMetrics(), "\n") {
			if strings.HasPrefix(line, "tunvs_host_") || strings.HasPrefix(line, "tunvs_drops_total") {
				host = append(host, line)
			}
		}
		neigh, _ := sh("ip", "-n", "tr", "neigh", "show", "dev", "br0")
		var rs strings.Builder
		for _, ns := range []string{"t1", "t2", "t3", "t4"} {
			links, _ := sh("ip", "-n", ns, "-s", "link")
			snmp, _ := shNS(ns, "cat", "/proc/net/snmp")
			fmt.Fprintf(&rs, "--- %s\n%s%s", ns, links, snmp)
		}
		return fmt.Errorf(format+"\n-Lnc:\n%s\n-Ln --stats:\n%s\ntunvs:\n%s\ntr neighbours on br0:\n%s\nreal servers:\n%s",
			append(a, l, m, strings.Join(host, "\n"), neigh, rs.String())...)
	}

	// The schedule: rr over the four, two requests each. All are made
	// before any failure is reported, so that one run shows which
	// encapsulations work.
	seen := map[string]int{}
	var bad []string
	for i := range 8 {
		out, err := tunnelRequest(fmt.Sprintf("10.5.0.2:%d", 43000+i), vip, 3)
		fmt.Fprintf(&report, "request %d: %s %v\n", i, out, err)
		f := strings.Fields(out)
		if err != nil || len(f) != 2 || f[1] != "3" {
			bad = append(bad, fmt.Sprintf("request %d: answer %q, %v; want NAME 3", i, out, err))
			continue
		}
		seen[f[0]]++
	}
	if len(bad) > 0 {
		return fail("%s", strings.Join(bad, "\n"))
	}
	for _, ns := range []string{"t1", "t2", "t3", "t4"} {
		if seen[ns] != 2 {
			return fail("requests per real server %v, want 2 each of t1 (ipip), t2 (gue), t3 (gre), t4 (ipip behind a TUN)", seen)
		}
	}
	// Uploads larger than the tunnel's MTU: the client learns it from
	// tunvs's "fragmentation needed" and gets through. The link from tr
	// to t4 is made smaller than tunvs's to tr: tr, a kernel router
	// between the director and t4, sends tunvs "fragmentation needed"
	// about the encapsulated packets, which tunvs relays to the client
	// with the MTU less the outer header (ip_vs_in_icmp); without it the
	// upload to t4 stalls.
	if _, err := sh("ip", "-n", "tr", "link", "set", "v4", "mtu", "1300"); err != nil {
		return fmt.Errorf("lower the MTU to t4: %w", err)
	}
	up := map[string]bool{}
	for i := range 4 {
		const size = 200000
		out, err := tunnelRequest(fmt.Sprintf("10.5.0.2:%d", 44000+i), vip, size)
		if err != nil {
			return fail("upload %d: %v", i, err)
		}
		fmt.Fprintf(&report, "upload %d: %s\n", i, out)
		f := strings.Fields(out)
		if len(f) != 2 || f[1] != strconv.Itoa(size) {
			return fail("upload %d: answer %q, want NAME %d", i, out, size)
		}
		up[f[0]] = true
	}
	if len(up) != 4 {
		return fail("uploads reached %v, want all four real servers", up)
	}
	// IPv6 in IPv6.
	for i := range 2 {
		out, err := tunnelRequest(fmt.Sprintf("[fd00:5::2]:%d", 45000+i), "[fd00:9::100]:80", 100000)
		if err != nil {
			return fail("IPv6 request %d: %v", i, err)
		}
		fmt.Fprintf(&report, "IPv6 request %d: %s\n", i, out)
		if out != "t1 100000" {
			return fail("IPv6 request %d: answer %q, want t1 100000", i, out)
		}
	}
	for _, l := range [][]string{{"-L", "-n"}, {"-L", "-n", "--tun-info"}, {"-S", "-n"}, {"-L", "-n", "--stats"}} {
		out, err := adm(l...)
		if err != nil {
			return err
		}
		fmt.Fprintf(&report, "$ tunvsadm %s\n%s", strings.Join(l, " "), out)
	}
	metrics := tunvsMetrics()
	sent, drops, toobig := tunvsMetric(metrics, "tunvs_host_tunnel_sent_total"), tunvsMetric(metrics, "tunvs_host_tunnel_drops_total"), tunvsMetric(metrics, "tunvs_host_too_big_sent_total")
	split := tunvsMetric(metrics, "tunvs_host_gso_split_total")
	relayed, idrops := tunvsMetric(metrics, "tunvs_host_tunnel_icmp_relayed_total"), tunvsMetric(metrics, "tunvs_host_tunnel_icmp_drops_total")
	fmt.Fprintf(&report, "tunnel_sent %d, tunnel_drops %d, too_big_sent %d, gso_split %d, tunnel_icmp_relayed %d, tunnel_icmp_drops %d\n", sent, drops, toobig, split, relayed, idrops)
	if sent < 8 || toobig == 0 {
		return fmt.Errorf("tunvs sent %d packets encapsulated and %d \"too big\"; want both above 0", sent, toobig)
	}
	if relayed == 0 {
		return fmt.Errorf("tunvs relayed no ICMP error from tr about the packets to t4 (MTU 1300)")
	}
	return nil
}

// tunnelUserns runs tunnelE2E again as uid 65534 in a user namespace
// (with its own mount namespace, where /run/netns is a tmpfs of its own,
// so that `ip netns` works), as an unprivileged user runs tunvs; what it
// writes, in a directory of the tmpfs (the job's is root's), is copied to
// dir.
func tunnelUserns(dir string) error {
	tmp := "/tmp/tunnel-userns"
	if err := os.MkdirAll(tmp, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o777); err != nil {
		return err
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"unshare", "--user", "--map-root-user", "--mount", "--net", "--",
		"sh", "-c", `mount -t tmpfs tmpfs /run/netns && exec /tmp/ipvsrun -timeout "$0" -tunnel-inner "$1"`, timeout.String(), tmp)
	out, err := cmd.CombinedOutput()
	if err2 := os.MkdirAll(dir, 0o755); err2 == nil {
		for _, f := range []string{"report.txt", "tunvs.log"} {
			if b, err := os.ReadFile(filepath.Join(tmp, f)); err == nil {
				os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// tunnelRun is -tunnel: the modules, tunvs's binaries in /tmp, the root
// run, then the user-namespace run.
func tunnelRun(dir string) error {
	for _, m := range []string{"tun", "ipip", "fou", "ip_gre", "ip6_tunnel"} {
		if _, err := sh("modprobe", m); err != nil {
			return err
		}
	}
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		return err
	}
	for _, b := range []string{"tunvs", "tunvsadm", "ipvsrun"} {
		if err := toTmp(b); err != nil {
			return err
		}
	}
	rootErr := tunnelE2E(filepath.Join(dir, "root"), false)
	userErr := tunnelUserns(filepath.Join(dir, "userns"))
	switch {
	case rootErr != nil && userErr != nil:
		return fmt.Errorf("as root: %v\nas uid 65534: %v", rootErr, userErr)
	case rootErr != nil:
		return fmt.Errorf("as root: %w", rootErr)
	case userErr != nil:
		return fmt.Errorf("as uid 65534: %w", userErr)
	}
	return nil
}
