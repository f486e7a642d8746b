//go:build linux

package main

// The UDP small-packet workload: a sender on the client that sends 64-byte
// datagrams to VIP:udpPort as fast as it can from udpFlows sockets (distinct
// source ports, so a director sees several flows and spreads them over the
// real servers), and a receiver on every real server that counts what
// arrives. Both are this program re-executed in a host (roles "udp-send"
// and "udp-recv") and batch their system calls (sendmmsg, recvmmsg: 64
// datagrams per call, nothing allocated per datagram), so that the sending
// program costs little per datagram. Traffic is one way: the real servers
// never answer.
//
// Over veth, a kernel director's forwarding (conntrack, NAT, the bridge,
// delivery to the real server's socket) runs in the softirq of the thread
// that sent the datagram, so on the nft and IPVS baselines the sender
// threads carry the director's work too: -udp-senders (default 2, one per
// CPU of the machine this was written on) sets how many there are. The
// figure is what the real servers read; the sent rate and the real
// servers' socket drops (/proc/net/snmp RcvbufErrors) show where any loss
// was.
//
// The harness drives them over stdin and stdout, one line at a time. Each
// prints READY once its sockets are set up; "snap" makes it print
// "COUNT <datagrams> <nanoseconds since start> [<kernel counters>...]";
// end of input makes it exit. The figures are the differences between two
// snapshots taken c.duration apart, after a warm-up.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
)

const (
	udpPort    = 9  // discard: nothing answers
	udpFlows   = 4  // sender sockets, one flow each
	udpPayload = 64 // bytes of UDP payload per datagram
	udpBatch   = 64 // datagrams per sendmmsg and recvmmsg

	udpWarmup = 500 * time.Millisecond

	// envHarnessNetns carries the harness's own network namespace to the
	// sender, which refuses to send from it (it must run in a host).
	envHarnessNetns = "TUNVS_COMPARE_HARNESS_NETNS"
)

// udpFigures is what one run of the workload measured, per second.
type udpFigures struct {
	sent, recv   float64 // datagrams sent by the client, read by the real servers
	arrived      float64 // datagrams the real servers' kernels took for the socket
	rcvbufDrops  float64 // datagrams dropped at the real servers' sockets (buffer full)
	sendErrs     float64 // failed sendmmsg calls
	perServer    []float64
	senders      int
	windowSecond float64
}

// mmsghdr is struct mmsghdr; Go pads it like C does.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func sendmmsg(fd int, msgs []mmsghdr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	return int(n), e
}

func recvmmsg(fd int, msgs []mmsghdr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_WAITFORONE, 0, 0)
	return int(n), e
}

// paddedCounter keeps each goroutine's counter on its own cache line.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

// serveUDPSend is the sender role: args are the destination address, the
// number of sender goroutines and a limit in seconds after which it stops
// even if the harness does not say so.
func serveUDPSend(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "compare: udp-send: want ADDR:PORT SENDERS LIMIT_SECONDS")
		return 2
	}
	if !mayFlood("udp-send") {
		return 1
	}
	ip, port, aerr := parseIPv4Port(args[0])
	senders, serr := strconv.Atoi(args[1])
	limit, lerr := strconv.Atoi(args[2])
	if aerr != nil || serr != nil || lerr != nil || senders < 1 || senders > udpFlows {
		fmt.Fprintf(os.Stderr, "compare: udp-send: bad arguments %q (senders 1..%d)\n", args, udpFlows)
		return 2
	}
	fds := make([]int, udpFlows)
	for i := range fds {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare: udp-send: socket:", err)
			return 1
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		// Connecting binds an ephemeral port: one flow per socket.
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: ip}); err != nil {
			fmt.Fprintln(os.Stderr, "compare: udp-send: connect:", err)
			return 1
		}
		fds[i] = fd
	}
	// One datagram per flow, in order, before the flood: a round-robin
	// director then gives flows 0, 2 to one server and 1, 3 to the other,
	// so that each sender below feeds every server.
	for _, fd := range fds {
		unix.Write(fd, make([]byte, udpPayload))
		time.Sleep(20 * time.Millisecond)
	}
	counts := make([]paddedCounter, senders)
	var errs atomic.Uint64
	start := time.Now()
	for g := range senders {
		// Goroutine g sends on its share of consecutive sockets: the
		// flows are the same whatever the number of senders.
		mine := fds[g*len(fds)/senders : (g+1)*len(fds)/senders]
		go func() {
			runtime.LockOSThread()
			payload := make([]byte, udpPayload)
			for i := range payload {
				payload[i] = byte(i)
			}
			iov := &unix.Iovec{Base: &payload[0]}
			iov.SetLen(len(payload))
			msgs := make([]mmsghdr, udpBatch)
			for i := range msgs {
				msgs[i].hdr.Iov = iov
				msgs[i].hdr.SetIovlen(1)
			}
			c := &counts[g].n
			for {
				for _, fd := range mine {
					n, e := sendmmsg(fd, msgs)
					if e != 0 {
						// ECONNREFUSED (an ICMP error came back),
						// ENOBUFS: count and go on.
						errs.Add(1)
						if e == unix.EBADF || e == unix.EFAULT || e == unix.EINVAL {
							fmt.Fprintln(os.Stderr, "compare: udp-send: sendmmsg:", e)
							os.Exit(1)
						}
						continue
					}
					c.Add(uint64(n))
				}
			}
		}()
	}
	snap := func() string {
		var n uint64
		for i := range counts {
			n += counts[i].n.Load()
		}
		return fmt.Sprintf("COUNT %d %d %d", n, time.Since(start).Nanoseconds(), errs.Load())
	}
	time.AfterFunc(time.Duration(limit)*time.Second, func() {
		fmt.Fprintln(os.Stderr, "compare: udp-send: time limit reached, stopping")
		os.Exit(1)
	})
	return control(snap)
}

// mayFlood checks that this process, about to send as fast as it can, is
// in one of the harness's hosts, not in the sandbox's own namespace or
// outside it; it says why not on stderr.
func mayFlood(role string) bool {
	if err := netns.CheckFresh(); err != nil {
		fmt.Fprintf(os.Stderr, "compare: %s: refusing to send: %v\n", role, err)
		return false
	}
	if cur, err := os.Readlink("/proc/self/ns/net"); err != nil || cur == os.Getenv(envHarnessNetns) || os.Getenv(envHarnessNetns) == "" {
		fmt.Fprintf(os.Stderr, "compare: %s: refusing to send from network namespace %q (harness %q): %v\n", role, cur, os.Getenv(envHarnessNetns), err)
		return false
	}
	return true
}

// serveUDPRecv is the receiver role: it counts the datagrams that arrive
// on the port given as its argument.
func serveUDPRecv(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "compare: udp-recv: want PORT")
		return 2
	}
	port, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: udp-recv: bad port:", err)
		return 2
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: udp-recv: socket:", err)
		return 1
	}
	// A big buffer rides out scheduling hiccups; FORCE needs CAP_NET_ADMIN
	// over the namespace, else the plain option is capped at rmem_max.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		fmt.Fprintln(os.Stderr, "compare: udp-recv: bind:", err)
		return 1
	}
	var count atomic.Uint64
	start := time.Now()
	go func() {
		runtime.LockOSThread()
		const size = 2048
		bufs := make([]byte, udpBatch*size)
		iovs := make([]unix.Iovec, udpBatch)
		msgs := make([]mmsghdr, udpBatch)
		for i := range msgs {
			iovs[i].Base = &bufs[i*size]
			iovs[i].SetLen(size)
			msgs[i].hdr.Iov = &iovs[i]
			msgs[i].hdr.SetIovlen(1)
		}
		for {
			n, e := recvmmsg(fd, msgs)
			if e != 0 {
				if e == unix.EINTR || e == unix.EAGAIN {
					continue
				}
				fmt.Fprintln(os.Stderr, "compare: udp-recv: recvmmsg:", e)
				os.Exit(1)
			}
			count.Add(uint64(n))
		}
	}()
	snap := func() string {
		in, drops := udpSNMP()
		return fmt.Sprintf("COUNT %d %d %d %d", count.Load(), time.Since(start).Nanoseconds(), in, drops)
	}
	return control(snap)
}

// control prints READY, answers each "snap" on stdin with snap() and
// returns at the end of input.
func control(snap func() string) int {
	fmt.Println("READY")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "snap" {
			fmt.Println(snap())
		}
	}
	return 0
}

// udpSNMP reads this network namespace's UDP InDatagrams and RcvbufErrors.
func udpSNMP() (in, rcvbufErrs uint64) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, 0
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(l, "Udp: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil {
			names = f
			continue
		}
		for i, v := range f {
			if i >= len(names) {
				break
			}
			n, _ := strconv.ParseUint(v, 10, 64)
			switch names[i] {
			case "InDatagrams":
				in = n
			case "RcvbufErrors":
				rcvbufErrs = n
			}
		}
	}
	return in, rcvbufErrs
}

// parseIPv4 is netip.ParseAddr for IPv4 only, as the 4 bytes the
// sockets and packet builders take.
func parseIPv4(s string) ([4]byte, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return [4]byte{}, fmt.Errorf("not an IPv4 address: %q", s)
	}
	return a.As4(), nil
}

// parseIPv4Port is parseIPv4 for an ADDR:PORT.
func parseIPv4Port(s string) ([4]byte, int, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() {
		return [4]byte{}, 0, fmt.Errorf("not an IPv4 ADDR:PORT: %q", s)
	}
	return ap.Addr().As4(), int(ap.Port()), nil
}

// ctlProc is a role started with its stdin and stdout kept for the
// snapshot protocol.
type ctlProc struct {
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func (b *bed) startCtl(h *netns.Host, env []string, args ...string) (*ctlProc, error) {
	cmd := h.Command(context.Background(), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", h.Name(), args, err)
	}
	// bed.close stops it should the workload not get that far.
	b.procs = append(b.procs, cmd)
	p := &ctlProc{name: h.Name(), cmd: cmd, in: in, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p, nil
}

func (p *ctlProc) line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s: exited", p.name)
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no answer within %v", p.name, timeout)
	}
}

// stop ends the process by closing its input and waits for it.
func (p *ctlProc) stop() {
	p.in.Close()
	t := time.AfterFunc(5*time.Second, func() { p.cmd.Process.Kill() })
	defer t.Stop()
	for range p.lines {
	}
	p.cmd.Wait()
}

// snapshot asks every process for its counters at once and returns them,
// one slice of numbers per process.
func snapshot(ps []*ctlProc) ([][]uint64, error) {
	for _, p := range ps {
		if _, err := io.WriteString(p.in, "snap\n"); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	out := make([][]uint64, len(ps))
	for i, p := range ps {
		l, err := p.line(5 * time.Second)
		if err != nil {
			return nil, err
		}
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "COUNT" {
			return nil, fmt.Errorf("%s: unexpected %q", p.name, l)
		}
		for _, s := range f[1:] {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: unexpected %q", p.name, l)
			}
			out[i] = append(out[i], v)
		}
	}
	return out, nil
}

// startReceivers starts a udp-recv on every real server. On an error the
// ones already started are returned too, for the caller to stop.
func (b *bed) startReceivers(self string) ([]*ctlProc, error) {
	var procs []*ctlProc
	for _, h := range b.rs {
		p, err := b.startCtl(h, []string{envRole + "=udp-recv"}, self, strconv.Itoa(udpPort))
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// udpFlood runs the workload: receivers on every real server, the sender
// on the client, a warm-up, then two snapshots d apart.
func udpFlood(b *bed, self string, d time.Duration, senders int) (f udpFigures, err error) {
	harnessNetns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return f, err
	}
	var procs []*ctlProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	if procs, err = b.startReceivers(self); err != nil {
		return f, err
	}
	limit := int(d.Seconds()+udpWarmup.Seconds()) + 30
	snd, err := b.startCtl(b.client, []string{envRole + "=udp-send", envHarnessNetns + "=" + harnessNetns},
		self, fmt.Sprintf("%s:%d", vip, udpPort), strconv.Itoa(senders), strconv.Itoa(limit))
	if err != nil {
		return f, err
	}
	// The sender first, so that it is stopped first.
	procs = append([]*ctlProc{snd}, procs...)
	for _, p := range procs {
		l, err := p.line(10 * time.Second)
		if err != nil {
			return f, err
		}
		if l != "READY" {
			return f, fmt.Errorf("%s: unexpected %q", p.name, l)
		}
	}
	time.Sleep(udpWarmup)
	s0, err := snapshot(procs)
	if err != nil {
		return f, err
	}
	time.Sleep(d)
	s1, err := snapshot(procs)
	if err != nil {
		return f, err
	}
	rate := func(i, k int) float64 {
		dt := float64(s1[i][1]-s0[i][1]) / 1e9
		return float64(s1[i][k]-s0[i][k]) / dt
	}
	f.senders = senders
	f.windowSecond = float64(s1[0][1]-s0[0][1]) / 1e9
	f.sent = rate(0, 0)
	f.sendErrs = rate(0, 2)
	for i := 1; i < len(procs); i++ {
		r := rate(i, 0)
		f.perServer = append(f.perServer, r)
		f.recv += r
		f.arrived += rate(i, 2) + rate(i, 3)
		f.rcvbufDrops += rate(i, 3)
	}
	if f.sent == 0 {
		return f, errors.New("the sender sent nothing")
	}
	if f.recv == 0 {
		return f, fmt.Errorf("nothing reached the real servers (%.0f datagrams/s sent)", f.sent)
	}
	return f, nil
}
