//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tunvs/tunvs/internal/procfs"
)

// director sets a bed up as one kind of director; it returns a reason to
// skip when the machine lacks what it needs.
type director struct {
	name  string
	setup func(b *bed, c config) (skip string, err error)
	// topo, when set, is the only topology the director is measured on:
	// variants of tunvs's devices (their queues, the splitting of
	// super-packets) where they differ from the defaults.
	topo string
}

var directors = []director{
	{name: "ipvs", setup: setupIPVS},
	{name: "nft", setup: setupNFT},
	{name: "tunvs-offload", setup: setupTunvsOffload},
	{name: "tunvs-mq", setup: setupTunvsMQ},
	{name: "tunvs-split", setup: setupTunvsSplit, topo: topoTUN},
	{name: "tunvs-plain", setup: setupTunvs},
	{name: "tunvs-fullnat", setup: setupTunvsFullNAT},
	{name: "haproxy", setup: setupHAProxy},
}

// flowsDirector is the director the flows workload measures, on each
// topology: tunvs as it comes. The table's memory is the same whatever
// the device (the earlier runs measured every tunvs variant within 5%
// of one another), and each measurement costs a minute.
const flowsDirector = "tunvs-offload"

func setupNFT(b *bed, c config) (string, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return "nft not installed", nil
	}
	if err := b.kernelWiring(); err != nil {
		return "", err
	}
	rules := fmt.Sprintf(`table ip lb {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport 80 dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
		ip daddr %[1]s tcp dport 5201 dnat to %[2]s
		ip daddr %[1]s udp dport %[4]d dnat to numgen inc mod 2 map { 0 : %[2]s, 1 : %[3]s }
	}
}
`, vip, rsAddrs[0], rsAddrs[1], udpPort)
	f := filepath.Join(os.TempDir(), "tunvs-compare.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		return "", err
	}
	defer os.Remove(f)
	if out, err := b.dir.Run(context.Background(), "nft", "-f", f); err != nil {
		return "", fmt.Errorf("nft: %w: %s", err, out)
	}
	return "", nil
}

func setupIPVS(b *bed, c config) (string, error) {
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		return "no IPVS in this kernel (/proc/net/ip_vs missing)", nil
	}
	if _, err := exec.LookPath("ipvsadm"); err != nil {
		return "ipvsadm not installed", nil
	}
	if err := b.kernelWiring(); err != nil {
		return "", err
	}
	cmds := [][]string{
		{"-A", "-t", vip + ":80", "-s", "rr"},
		{"-A", "-t", vip + ":5201", "-s", "rr"},
		{"-a", "-t", vip + ":5201", "-r", rsAddrs[0], "-m"},
		{"-A", "-u", fmt.Sprintf("%s:%d", vip, udpPort), "-s", "rr"},
	}
	for _, a := range rsAddrs {
		cmds = append(cmds,
			[]string{"-a", "-t", vip + ":80", "-r", a, "-m"},
			[]string{"-a", "-u", fmt.Sprintf("%s:%d", vip, udpPort), "-r", a, "-m"})
	}
	for _, cmd := range cmds {
		if out, err := b.dir.Run(context.Background(), append([]string{"ipvsadm"}, cmd...)...); err != nil {
			return "", fmt.Errorf("ipvsadm %v: %w: %s", cmd, err, out)
		}
	}
	return "", nil
}

func setupHAProxy(b *bed, c config) (string, error) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return "haproxy not installed", nil
	}
	if err := b.kernelWiring(); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`global
	maxconn 8000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend web
	bind %[1]s:80
	default_backend web
backend web
	balance roundrobin
	server rs1 %[2]s:80
	server rs2 %[3]s:80
frontend perf
	bind %[1]s:5201
	default_backend perf
backend perf
	server rs1 %[2]s:5201
`, vip, rsAddrs[0], rsAddrs[1])
	f := filepath.Join(os.TempDir(), "tunvs-compare-haproxy.cfg")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		return "", err
	}
	p, err := b.start(b.dir, nil, "haproxy", "-db", "-f", f)
	if err != nil {
		return "", err
	}
	b.dirProc = p
	return "", nil
}

func setupTunvsOffload(b *bed, c config) (string, error) {
	if err := b.tunvsWiring(c.tunvsBin, "--tun-offload=true"); err != nil {
		return "", err
	}
	return "", nil
}

// setupTunvsMQ is tunvs-offload with two queues per device, a reader on
// each. On the article's one TAP a packet goes back out by the other queue
// than it came in on, so each direction of a connection has a reader of
// its own (netstack's fastPath.txQueue).
func setupTunvsMQ(b *bed, c config) (string, error) {
	if err := b.tunvsWiring(c.tunvsBin, "--tun-offload=true", "--tun-queues=2"); err != nil {
		return "", err
	}
	return "", nil
}

// setupTunvsSplit is the offload device with super-packets cut into MTU
// packets on read and coalesced again on write, instead of NATed whole:
// what the in-place rewrite saves.
func setupTunvsSplit(b *bed, c config) (string, error) {
	if err := b.tunvsWiring(c.tunvsBin, "--tun-offload=true", "--tun-gso=false"); err != nil {
		return "", err
	}
	return "", nil
}

// setupTunvsFullNAT is tunvs-offload with every real server --fullnat
// (issue 15): the client's address becomes the local address laddr on
// the way in, and back on the way out, on top of what masquerading
// rewrites.
func setupTunvsFullNAT(b *bed, c config) (string, error) {
	b.fullNAT = true
	if err := b.tunvsWiring(c.tunvsBin, "--tun-offload=true"); err != nil {
		return "", err
	}
	return "", nil
}

// setupTunvs is tunvs with one packet per system call (the plain device,
// what water gives on every platform).
func setupTunvs(b *bed, c config) (string, error) {
	if err := b.tunvsWiring(c.tunvsBin, "--tun-offload=false"); err != nil {
		return "", err
	}
	return "", nil
}

// procUsage reads a process's peak RSS (MB) and CPU time (s).
func procUsage(pid int) (rssMB, cpuS float64, err error) {
	m, err := readProcMem(pid)
	if err != nil {
		return 0, 0, err
	}
	rssMB = m.hwm
	st, err := procfs.StatOf(pid)
	if err != nil {
		return 0, 0, err
	}
	// utime and stime, in clock ticks of 1/100 s.
	return rssMB, float64(st.Uint(14)+st.Uint(15)) / 100, nil
}

// procSyscalls is how many read and write system calls (read(2),
// write(2) and their kin: syscr and syscw in /proc/PID/io) process pid
// has made.
func procSyscalls(pid int) (reads, writes float64, err error) {
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(l, "syscr:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%f", &reads)
		} else if v, ok := strings.CutPrefix(l, "syscw:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%f", &writes)
		}
	}
	return reads, writes, nil
}
