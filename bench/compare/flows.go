//go:build linux

package main

// The flows workload: how much memory the director needs to hold many
// concurrent connections (the target is 1M flows in under 400 MB). The
// client sends exactly one UDP datagram per flow, each from its own source
// address and port, so that every datagram opens a connection in the
// director's table; the UDP timeout (300 s) keeps them all for the length
// of the measurement. The harness watches the table fill through tunvs's
// Prometheus metrics (tunvs_connections, served on the director's own
// loopback), tops up flows that were lost on the way with fresh ones, and
// once the count settles reads the director's VmRSS and VmHWM.
//
// A single address has fewer than 64k ports, so the client gets several
// addresses on its interface (flowAddrs of them, from 10.0.0.10 up) and
// the sender (role "udp-flows") writes the datagrams whole, IP header
// included, on a raw socket: one sendmmsg per 64 flows instead of a
// socket, bind, send and close per flow. It runs in the client's
// namespace and checks so, like the flood's sender.
//
// Each tunvs director gets a fresh test bed for it (nothing else has run
// through that process), once as it comes (GOGC 50, tunvs's own default)
// and once with another GOGC (default 100, Go's) in
// its environment, to show how much of the RSS is the collector's
// headroom. The kernel's directors are not measured: nf_conntrack_max is
// one limit for every namespace of the machine, the host's included, so
// a million entries would make new connections fail outside the lab too.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/csum"
)

const (
	flowsMetrics   = "127.0.0.1:9177" // tunvs --metrics, in the director's namespace
	flowPortFirst  = 1024
	flowPortsPerIP = 65536 - flowPortFirst
	flowPayload    = 16
	flowPktLen     = 20 + 8 + flowPayload
)

// flowAddrs is the number of client addresses the sender uses for n flows:
// enough for n, and as many again to top up with.
func flowAddrs(n int) int { return 2*n/flowPortsPerIP + 1 }

// maxFlows keeps the client's addresses inside its /24 and below the
// article's router (10.0.0.10 up to 10.0.0.191; the router is .200).
const maxFlows = 90 * flowPortsPerIP

// serveUDPFlows is the sender role of the flows workload. Args: the
// destination ADDR:PORT, the first source address, the number of source
// addresses and a limit in seconds after which it exits whatever the
// harness says. On "send N RATE" it sends N datagrams of N flows it has
// not used yet, RATE a second at most, then prints "SENT <flows so far>
// <failed sendmmsg calls> <waits for the device queue>"; end of input
// makes it exit.
func serveUDPFlows(args []string) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "compare: udp-flows: want ADDR:PORT FIRST_SOURCE NSOURCES LIMIT_SECONDS")
		return 2
	}
	if !mayFlood("udp-flows") {
		return 1
	}
	dst, port, derr := parseIPv4Port(args[0])
	src, serr := parseIPv4(args[1])
	nsrc, nerr := strconv.Atoi(args[2])
	limit, lerr := strconv.Atoi(args[3])
	if derr != nil || serr != nil || nerr != nil || lerr != nil || nsrc < 1 || int(src[3])+nsrc > 255 {
		fmt.Fprintf(os.Stderr, "compare: udp-flows: bad arguments %q\n", args)
		return 2
	}
	// IPPROTO_RAW: the datagrams carry their own IP header (IP_HDRINCL);
	// the kernel fills in the total length, the ID and the checksum.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: udp-flows: raw socket:", err)
		return 1
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	// With IP_RECVERR a datagram a queueing discipline has no room for
	// fails with ENOBUFS instead of vanishing: the sender waits and sends
	// the same flow again. (A TUN device's own ring drops silently; the
	// harness sees that in its tx_dropped and the table's growth.)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
		fmt.Fprintln(os.Stderr, "compare: udp-flows: IP_RECVERR:", err)
		return 1
	}
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst}
	bufs := make([]byte, udpBatch*flowPktLen)
	iovs := make([]unix.Iovec, udpBatch)
	msgs := make([]mmsghdr, udpBatch)
	for i := range msgs {
		iovs[i].Base = &bufs[i*flowPktLen]
		iovs[i].SetLen(flowPktLen)
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
		msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&sa))
		msgs[i].hdr.Namelen = unix.SizeofSockaddrInet4
	}
	// next is the next unused flow: source address next%nsrc, port
	// flowPortFirst+next/nsrc.
	next, total := 0, nsrc*flowPortsPerIP
	var errs, waits uint64
	send := func(n, rate int) {
		start := time.Now()
		sent := 0
		for sent < n && next < total {
			k := min(udpBatch, n-sent, total-next)
			for i := range k {
				f := next + i
				s := src
				s[3] += byte(f % nsrc)
				flowPacket(bufs[i*flowPktLen:(i+1)*flowPktLen], s, dst, uint16(flowPortFirst+f/nsrc), uint16(port))
			}
			m, e := sendmmsg(fd, msgs[:k])
			if e != 0 {
				switch e {
				case unix.ENOBUFS, unix.EAGAIN, unix.EINTR:
					// The device queue is full: let it drain, then
					// send the same flows again.
					waits++
					time.Sleep(200 * time.Microsecond)
				case unix.EBADF, unix.EFAULT, unix.EINVAL, unix.EPERM:
					fmt.Fprintln(os.Stderr, "compare: udp-flows: sendmmsg:", e)
					os.Exit(1)
				default:
					// An ICMP error reported on the socket: count
					// it and go on.
					errs++
				}
				continue
			}
			next += m
			sent += m
			if due := start.Add(time.Duration(float64(sent) / float64(rate) * 1e9)); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
		}
	}
	time.AfterFunc(time.Duration(limit)*time.Second, func() {
		fmt.Fprintln(os.Stderr, "compare: udp-flows: time limit reached, stopping")
		os.Exit(1)
	})
	fmt.Println("READY")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var n, rate int
		if _, err := fmt.Sscanf(sc.Text(), "send %d %d", &n, &rate); err != nil || n < 0 || rate < 1 {
			fmt.Fprintf(os.Stderr, "compare: udp-flows: bad command %q\n", sc.Text())
			return 2
		}
		send(n, rate)
		fmt.Printf("SENT %d %d %d\n", next, errs, waits)
	}
	return 0
}

// flowPacket writes an IPv4 UDP datagram of flowPayload bytes, with its
// UDP checksum (a director verifies it before it opens a connection).
func flowPacket(p []byte, src, dst [4]byte, sport, dport uint16) {
	clear(p)
	p[0] = 0x45
	p[8] = 64 // TTL
	p[9] = unix.IPPROTO_UDP
	copy(p[12:16], src[:])
	copy(p[16:20], dst[:])
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	for i := 8; i < len(u); i++ {
		u[i] = byte(i)
	}
	// The pseudo-header sum in the checksum field, completed as a device
	// completes a partial checksum (zero sent as 0xFFFF).
	binary.BigEndian.PutUint16(u[6:], csum.Fold(csum.PseudoIP(p, false, unix.IPPROTO_UDP, len(u))))
	csum.Finish(p, 20, 6)
}

// flowFigures is what one measurement of the flows workload found.
type flowFigures struct {
	target   int
	held     float64 // connections in the table, less those there before
	baseline float64 // connections in the table before the first datagram
	sent     float64 // flows sent, top-ups included
	arrived  float64 // datagrams the real servers read
	drops    float64 // the director's NAT drops meanwhile, all reasons
	devDrops float64 // datagrams the client's device dropped (tx_dropped)
	rounds   int     // chunks sent
	seconds  float64 // from the first datagram to the count settling
	rateLast int     // the rate the director kept up with at the end

	fastPath, delivered float64 // packets NATed past the stack, handed to it

	rssMB, hwmMB       float64 // VmRSS, VmHWM
	heapInuseMB, sysMB float64 // the Go runtime's view
}

// measureFlows runs the flows workload on a fresh bed of director d, with
// GOGC=gogc in its environment unless gogc is 0.
func measureFlows(d director, topo string, c config, self string, gogc int) (f flowFigures, err error) {
	b, err := newBed(topo)
	if err != nil {
		return f, err
	}
	defer b.close()
	b.dirExtra = append([]string{fmt.Sprintf("--max-conns=%d", max(c.flows+c.flows/2, 1<<20)), "--metrics=" + flowsMetrics}, c.tunvsFlags...)
	if gogc > 0 {
		b.dirEnv = []string{fmt.Sprintf("GOGC=%d", gogc)}
	}
	skip, err := d.setup(b, c)
	if err != nil {
		return f, err
	}
	if skip != "" {
		return f, errors.New(skip)
	}
	return flowsRun(b, c, self)
}

// scrapeMetrics reads tunvs's metrics in the director's namespace: the
// value of every line, by name with labels.
func scrapeMetrics(b *bed) (map[string]float64, error) {
	cl := nsHTTPClient(b.dir, 1)
	defer cl.CloseIdleConnections()
	resp, err := cl.Get("http://" + flowsMetrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	if _, ok := m["tunvs_connections"]; !ok {
		return nil, errors.New("metrics: no tunvs_connections")
	}
	return m, nil
}

// txDropped picks the TX dropped count out of `ip -s -o link show`:
// "... TX: bytes packets errors dropped carrier collsns \    N N N N ...".
func txDropped(out string) float64 {
	i := strings.Index(out, "TX:")
	if i < 0 {
		return math.NaN()
	}
	var nums []float64
	for _, w := range strings.Fields(out[i:]) {
		if v, err := strconv.ParseFloat(w, 64); err == nil {
			nums = append(nums, v)
		}
	}
	if len(nums) < 4 {
		return math.NaN()
	}
	return nums[3]
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// procMem reads a process's VmRSS and VmHWM in MB.
func procMem(pid int) (rss, hwm float64, err error) {
	s, err := readProcMem(pid)
	return s.rss, s.hwm, err
}

// flowsRun fills the director's table with c.flows flows, within
// c.flowsBudget, and reads its memory.
func flowsRun(b *bed, c config, self string) (f flowFigures, err error) {
	f.target = c.flows
	if b.dirProc == nil {
		return f, errors.New("no director process")
	}
	harnessNetns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return f, err
	}
	// The director answers its metrics once it is up.
	var m0 map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m0, err = scrapeMetrics(b); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return f, fmt.Errorf("director metrics on %s: %w; director said: %s", flowsMetrics, err, b.output(b.dirProc))
		}
	}
	naddrs := flowAddrs(c.flows)
	first, _ := parseIPv4(client)
	for i := 1; i < naddrs; i++ {
		if err := b.client.AddAddr(b.clientDev, fmt.Sprintf("10.0.0.%d/24", int(first[3])+i)); err != nil {
			return f, err
		}
	}
	var recvs []*ctlProc
	var snd *ctlProc
	defer func() {
		if snd != nil {
			snd.stop()
		}
		for _, p := range recvs {
			p.stop()
		}
	}()
	// Receivers, so that the real servers take the datagrams quietly
	// instead of answering each with an ICMP error.
	if recvs, err = b.startReceivers(self); err != nil {
		return f, err
	}
	limit := int(c.flowsBudget.Seconds()) + 30
	snd, err = b.startCtl(b.client, []string{envRole + "=udp-flows", envHarnessNetns + "=" + harnessNetns},
		self, fmt.Sprintf("%s:%d", vip, udpPort), client, strconv.Itoa(naddrs), strconv.Itoa(limit))
	if err != nil {
		return f, err
	}
	for _, p := range append([]*ctlProc{snd}, recvs...) {
		l, err := p.line(10 * time.Second)
		if err != nil {
			return f, err
		}
		if l != "READY" {
			return f, fmt.Errorf("%s: unexpected %q", p.name, l)
		}
	}
	r0, err := snapshot(recvs)
	if err != nil {
		return f, err
	}
	f.baseline = m0["tunvs_connections"]
	drops0 := sumPrefix(m0, "tunvs_drops_total")
	count := func() (float64, map[string]float64, error) {
		m, err := scrapeMetrics(b)
		if err != nil {
			return 0, nil, err
		}
		return m["tunvs_connections"] - f.baseline, m, nil
	}
	// settle waits until the table stops growing (two equal readings in a
	// row), for at most ten seconds.
	settle := func() (float64, map[string]float64, error) {
		last := math.NaN()
		var m map[string]float64
		for range 40 {
			time.Sleep(250 * time.Millisecond)
			v, mm, err := count()
			if err != nil {
				return 0, nil, err
			}
			m = mm
			if v == last {
				break
			}
			last = v
		}
		return last, m, nil
	}
	// Drops on the client's device (its queue towards the director).
	devDrops := func() float64 {
		out, err := b.client.Run(context.Background(), "ip", "-s", "-o", "link", "show", "dev", b.clientDev)
		if err != nil {
			return math.NaN()
		}
		return txDropped(out)
	}
	drops0Dev := devDrops()
	// Chunks of about a second: after each, the table's growth says how
	// many flows the director took in. The rate follows that (a little
	// above, to keep its queue fed; a quarter more after a chunk without
	// loss), and flows lost on the way (the client's TUN queue drops them
	// silently when the director falls behind) are made up with fresh ones.
	start := time.Now()
	deadline := start.Add(c.flowsBudget)
	rate := c.flowsRate
	var m map[string]float64
	var errs, waits float64
	stalled := 0
	progress := func() {
		fmt.Fprintf(os.Stderr, "   flows: %.1fs, %d chunks: %.0f sent, table %.0f, next rate %d/s (%.0f dropped by the client's device, %.0f sendmmsg errors, %.0f waits)\n",
			time.Since(start).Seconds(), f.rounds, f.sent, f.held, rate, devDrops()-drops0Dev, errs, waits)
	}
	for {
		missing := c.flows - int(f.held)
		if missing <= 0 || time.Until(deadline) <= 0 {
			break
		}
		if missing <= rate {
			// Nearly there: let what is in flight arrive before
			// making up for it.
			if f.held, m, err = settle(); err != nil {
				return f, err
			}
			if missing = c.flows - int(f.held); missing <= 0 {
				break
			}
		}
		n := min(missing, rate)
		f.rounds++
		t0 := time.Now()
		if _, err := fmt.Fprintf(snd.in, "send %d %d\n", n, rate); err != nil {
			return f, err
		}
		l, err := snd.line(time.Duration(float64(n)/float64(rate)*1e9) + 30*time.Second)
		if err != nil {
			return f, err
		}
		if _, err := fmt.Sscanf(l, "SENT %g %g %g", &f.sent, &errs, &waits); err != nil {
			return f, fmt.Errorf("%s: unexpected %q", snd.name, l)
		}
		v, mm, err := count()
		if err != nil {
			return f, err
		}
		el := time.Since(t0).Seconds()
		gained := v - f.held
		f.held, m = v, mm
		if gained <= 0 {
			if stalled++; stalled == 3 {
				break // the director takes no more: report what it holds
			}
		} else {
			stalled = 0
		}
		if gained < 0.97*float64(n) {
			rate = max(int(gained/el*1.05), 2000)
		} else {
			rate = min(rate*5/4, 1000000)
		}
		if f.rounds%5 == 0 {
			progress()
		}
	}
	// What was still on its way.
	if f.held, m, err = settle(); err != nil {
		return f, err
	}
	f.rateLast = rate
	progress()
	f.seconds = time.Since(start).Seconds()
	if m == nil {
		if f.held, m, err = count(); err != nil {
			return f, err
		}
	}
	f.drops = sumPrefix(m, "tunvs_drops_total") - drops0
	f.fastPath = m["tunvs_host_fast_path_total"] - m0["tunvs_host_fast_path_total"]
	f.delivered = m["tunvs_host_delivered_total"] - m0["tunvs_host_delivered_total"]
	f.devDrops = devDrops() - drops0Dev
	f.heapInuseMB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
	f.sysMB = m["go_memstats_sys_bytes"] / (1 << 20)
	if f.rssMB, f.hwmMB, err = procMem(b.dirProc.Process.Pid); err != nil {
		return f, err
	}
	r1, err := snapshot(recvs)
	if err != nil {
		return f, err
	}
	for i := range recvs {
		f.arrived += float64(r1[i][0] - r0[i][0])
	}
	return f, nil
}

// runFlows measures the flows workload for director d (as it comes and,
// if c.flowsGOGC > 0, with that GOGC) and puts the figures in r.
func runFlows(d director, topo string, c config, self string, r *result) {
	switch {
	case strings.HasPrefix(d.name, "tunvs") && d.name != flowsDirector:
		return // the table's memory does not depend on the device
	case d.name == "haproxy":
		r.Notes = append(r.Notes, "flows: not measured (HAProxy's TCP mode carries no UDP)")
		return
	case d.name == "ipvs":
		r.Notes = append(r.Notes, "flows: not measured (IPVS holds its connections in kernel memory, no process RSS to read)")
		return
	case !strings.HasPrefix(d.name, "tunvs"):
		r.Notes = append(r.Notes, "flows: not measured (the kernel's nf_conntrack_max is shared with the host's namespaces: a million entries would refuse connections outside the lab)")
		return
	}
	runs := []struct {
		prefix string
		gogc   int
	}{{"flows_", 0}}
	if c.flowsGOGC > 0 {
		runs = append(runs, struct {
			prefix string
			gogc   int
		}{"flows_gogc_", c.flowsGOGC})
	}
	for _, run := range runs {
		what := "flows"
		if run.gogc > 0 {
			what = fmt.Sprintf("flows (GOGC=%d)", run.gogc)
		}
		fmt.Fprintf(os.Stderr, "   %s: %d flows, fresh director\n", what, c.flows)
		f, err := measureFlows(d, topo, c, self, run.gogc)
		if err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: %v", what, err))
			fmt.Fprintf(os.Stderr, "   %s: %v\n", what, err)
			continue
		}
		set := func(k string, v float64) { r.Figures[run.prefix+k] = v }
		set("held", f.held/1e3)
		set("rss_mb", f.rssMB)
		set("hwm_mb", f.hwmMB)
		// For the JSON only.
		set("target", float64(f.target)/1e3)
		set("sent", f.sent/1e3)
		set("arrived", f.arrived/1e3)
		set("drops", f.drops)
		set("client_dev_drops", f.devDrops)
		set("fast_path", f.fastPath)
		set("delivered", f.delivered)
		set("seconds", f.seconds)
		set("chunks", float64(f.rounds))
		set("rate_last", float64(f.rateLast))
		set("heap_inuse_mb", f.heapInuseMB)
		set("go_sys_mb", f.sysMB)
		set("baseline_conns", f.baseline)
		if run.gogc > 0 {
			set("gogc", float64(run.gogc))
		}
		perFlow := math.NaN()
		if f.held > 0 {
			perFlow = f.rssMB * (1 << 20) / f.held
		}
		reached := "reached"
		if int(f.held) < f.target {
			reached = fmt.Sprintf("NOT reached (%.1f%%)", 100*f.held/float64(f.target))
		}
		msg := fmt.Sprintf("%s: %.0f of %d flows held (%s) after %d chunk(s), %.1fs, %.0f sent, %.0f read by the real servers, %.0f NAT drops, %.0f dropped by the client's device; VmRSS %.1f MB (%.0f B/flow), VmHWM %.1f MB, Go heap in use %.1f MB, Go sys %.1f MB",
			what, f.held, f.target, reached, f.rounds, f.seconds, f.sent, f.arrived, f.drops, f.devDrops, f.rssMB, perFlow, f.hwmMB, f.heapInuseMB, f.sysMB)
		r.Notes = append(r.Notes, msg)
		fmt.Fprintf(os.Stderr, "   %s\n", msg)
	}
}
