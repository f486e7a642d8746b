//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/procfs"
	"github.com/tunvs/tunvs/nat/nattest"
)

// What a flood costs where the director cannot count it: the packets the
// kernel dropped before the director read them, the CPU the director got,
// and the retransmissions an established connection needed.

// tunTx is the transmit side of the director's TUN device dev as the
// namespace it was moved into (h) counts it: packets the kernel queued for
// the director to read, and those it dropped because the device's queue
// (a ring of txqueuelen packets) was full (tun_net_xmit in
// drivers/net/tun.c: "if (ptr_ring_produce(&tfile->tx_ring, skb)) goto
// drop", counted in tx_dropped).
func tunTx(h *netns.Host, dev string) (queued, dropped uint64, err error) {
	l, err := h.LinkStats(dev)
	return l.TX.Packets, l.TX.Dropped, err
}

// tunRx is the packets the director wrote into its TUN device dev, as the
// namespace it was moved into (h) received them.
func tunRx(h *netns.Host, dev string) (uint64, error) {
	l, err := h.LinkStats(dev)
	return l.RX.Packets, err
}

// schedTimes is the time every thread of process pid has spent on a CPU
// and waiting for one while runnable (procfs.Sched).
func schedTimes(pid int) (run, wait time.Duration) {
	s, _ := procfs.SchedOf(pid)
	return s.Run, s.Wait
}

// dropsDuring is what the director counted as dropped or failed between
// two scrapes (every *_drops_total and *_errors_total series), as
// "series:n,..." in the scrapes' order, "none" if nothing.
func dropsDuring(before, after string) string {
	count := func(scrape string) ([]string, map[string]uint64) {
		var order []string
		n := map[string]uint64{}
		for _, l := range strings.Split(scrape, "\n") {
			i := strings.LastIndexByte(l, ' ')
			if strings.HasPrefix(l, "#") || i < 0 {
				continue
			}
			name, _, _ := strings.Cut(l[:i], "{")
			if !strings.HasSuffix(name, "_drops_total") && !strings.HasSuffix(name, "_errors_total") {
				continue
			}
			x, err := strconv.ParseUint(l[i+1:], 10, 64)
			if err != nil {
				continue
			}
			order = append(order, l[:i])
			n[l[:i]] = x
		}
		return order, n
	}
	_, n0 := count(before)
	order, n1 := count(after)
	var out []string
	for _, k := range order {
		if d := n1[k] - n0[k]; d > 0 {
			out = append(out, fmt.Sprintf("%s:%d", strings.TrimPrefix(k, "tunvs_"), d))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// keepAlive is an established connection through a flood: one keep-alive
// HTTP connection, a request every 100 ms.
//
// A request the flood delays is told from one it loses. A segment the
// kernel drops in front of the director (the TUN device's queue, counted
// in tunTx) is retransmitted by the client's TCP with its timeout doubling
// from 200 ms (TCP_RTO_MIN), so five losses in a row already take 6.2 s,
// more than a 5 s client timeout; the client therefore waits keepAliveWait
// and counts a request answered after its socket retransmitted as
// retransmitted. Lost is a request that got an error: a reset, a closed
// connection, or no answer within keepAliveWait. A request the client's
// transport had to resend on a new connection (the old one reset) counts
// in reconnects.
type keepAlive struct {
	c   *http.Client
	url string
	// ok and fail count requests, reconnects the connections made after
	// the first; retransmitted is the requests among ok whose socket
	// retransmitted meanwhile, slowest the longest an ok request took.
	ok, fail, reconnects, retransmitted atomic.Int64
	slowest                             atomic.Int64                // time.Duration
	conn                                atomic.Pointer[net.TCPConn] // the socket, for its retransmissions
	mu                                  sync.Mutex
	fails                               []string // what each failed or reconnected request saw
	closed                              []tcpInfo
}

// keepAliveWait is how long a request of a keepAlive may take: eight
// transmissions of a segment (0.2 s doubling: the last at 25.4 s).
const keepAliveWait = 30 * time.Second

// tcpInfo is what a socket's TCP_INFO says when the client closes it.
type tcpInfo struct {
	ok                                 bool
	state, backoff                     uint8
	rto                                time.Duration
	unacked, lost, retrans, totRetrans uint32
}

func (i tcpInfo) String() string {
	if !i.ok {
		return "no TCP_INFO"
	}
	return fmt.Sprintf("state=%d unacked=%d lost=%d retransmitting=%d backoff=%d rto=%v total_retrans=%d",
		i.state, i.unacked, i.lost, i.retrans, i.backoff, i.rto, i.totRetrans)
}

func readTCPInfo(c *net.TCPConn) tcpInfo {
	var i tcpInfo
	rc, err := c.SyscallConn()
	if err != nil {
		return i
	}
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			i = tcpInfo{ok: true, state: info.State, backoff: info.Backoff, rto: time.Duration(info.Rto) * time.Microsecond,
				unacked: info.Unacked, lost: info.Lost, retrans: uint32(info.Retransmits), totRetrans: info.Total_retrans}
		}
	})
	return i
}

// infoOnClose keeps the socket's TCP_INFO when the HTTP client closes it
// (after a timeout, with what it had not had acknowledged).
type infoOnClose struct {
	*net.TCPConn
	k *keepAlive
}

func (c infoOnClose) Close() error {
	i := readTCPInfo(c.TCPConn)
	c.k.mu.Lock()
	c.k.closed = append(c.k.closed, i)
	c.k.mu.Unlock()
	return c.TCPConn.Close()
}

// newKeepAlive opens the connection with a first request.
func newKeepAlive(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), url string) *keepAlive {
	t.Helper()
	k := &keepAlive{url: url}
	k.c = &http.Client{Timeout: keepAliveWait, Transport: &http.Transport{
		MaxConnsPerHost: 1, IdleConnTimeout: time.Minute,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if tc, ok := c.(*net.TCPConn); ok {
				return infoOnClose{tc, k}, nil
			}
			return c, err
		}}}
	if err := k.get(false); err != nil {
		t.Fatal(err)
	}
	return k
}

// get makes one request; reconnect says whether a new connection counts
// as a reconnection.
func (k *keepAlive) get(reconnect bool) error {
	start := time.Now()
	// WroteRequest runs on the transport's writing goroutine, which a
	// timed-out request does not wait for.
	var wrote atomic.Int64
	var sock *net.TCPConn
	var retrans0 uint32
	tr := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if c, ok := i.Conn.(infoOnClose); ok {
			sock = c.TCPConn
			retrans0 = readTCPInfo(sock).totRetrans
			if !i.Reused {
				k.conn.Store(sock)
			}
		}
		if !i.Reused && reconnect {
			k.reconnects.Add(1)
			k.note("reconnected at %s, %v into the request", time.Now().Format("15:04:05.000"), time.Since(start).Round(time.Millisecond))
		}
	}, WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Store(int64(time.Since(start))) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), tr), "GET", k.url, nil)
	if err != nil {
		return err
	}
	resp, err := k.c.Do(req)
	if err == nil {
		// Read to the end, or the connection is not reused.
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	took := time.Since(start)
	if err != nil {
		written := "not written"
		if w := wrote.Load(); w > 0 {
			written = "written after " + time.Duration(w).Round(time.Millisecond).String()
		}
		k.note("failed: started at %s, after %v (request %s): %v",
			start.Format("15:04:05.000"), took.Round(time.Millisecond), written, err)
		return err
	}
	if sock != nil && readTCPInfo(sock).totRetrans != retrans0 {
		k.retransmitted.Add(1)
	}
	for {
		s := k.slowest.Load()
		if int64(took) <= s || k.slowest.CompareAndSwap(s, int64(took)) {
			break
		}
	}
	return nil
}

// note records what a failed or reconnected request saw, with the last
// socket the client closed.
func (k *keepAlive) note(format string, args ...any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	last := "none closed"
	if len(k.closed) > 0 {
		last = k.closed[len(k.closed)-1].String()
	}
	k.fails = append(k.fails, fmt.Sprintf(format, args...)+"; the last socket closed: "+last)
}

// figures are the established connection's figures for a FIGURES line.
func (k *keepAlive) figures() string {
	return fmt.Sprintf("established ok=%d fail=%d reconnects=%d retransmitted=%d slowest=%v established_retrans=%d",
		k.ok.Load(), k.fail.Load(), k.reconnects.Load(), k.retransmitted.Load(),
		time.Duration(k.slowest.Load()).Round(time.Millisecond), k.retransmits())
}

// run makes a request every 100 ms until ctx is done.
func (k *keepAlive) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if k.get(true) == nil {
				k.ok.Add(1)
			} else {
				k.fail.Add(1)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}

// logFails logs what each failed or reconnected request saw.
func (k *keepAlive) logFails(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.fails {
		t.Logf("established connection: request %s", f)
	}
}

// retransmits is the number of segments the connection's socket has
// retransmitted (tcpi_total_retrans), -1 if unknown.
func (k *keepAlive) retransmits() int {
	c := k.conn.Load()
	if c == nil {
		return -1
	}
	if i := readTCPInfo(c); i.ok {
		return int(i.totRetrans)
	}
	return -1
}

// synFlood writes spoofed SYNs from 10.1.0.0/16 to the VIP's port 80 with
// a raw socket in h until ctx is done, rate a second (0: as fast as it
// can), and counts them in sent.
func synFlood(ctx context.Context, h *netns.Host, rate int, sent *atomic.Int64) error {
	return h.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		dst := &syscall.SockaddrInet4{Addr: vip4.As4()}
		vip := netip.AddrPortFrom(vip4, 80)
		pkts := make([][]byte, 4096)
		for i := range pkts {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(1024+i))
			pkts[i] = nattest.TCP(src, vip, nattest.SYN, 0)
		}
		start := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			p := pkts[i%len(pkts)]
			// Each SYN is a new flow, as a flood from random sources
			// makes (hping3 --rand-source): the source runs over
			// 10.1.0.0/16 and its port moves on each time round,
			// so a 4-tuple comes back only after 2^32 SYNs. (Ports
			// that came back every 65,536 SYNs matched the flood's
			// own half-open entries, and those SYNs went on to the
			// real servers, as IPVS sends a SYN that finds a
			// connection in SYN_RECV: 7% of a fastest flood.)
			p[14], p[15] = byte(i>>8), byte(i)
			port := uint16(1024 + i>>16)
			p[20], p[21] = byte(port>>8), byte(port)
			csum(p)
			if err := syscall.Sendto(fd, p, 0, dst); err != nil && err != syscall.ENOBUFS {
				return err
			}
			n := sent.Add(1)
			if rate > 0 {
				if ahead := time.Duration(n)*time.Second/time.Duration(rate) - time.Since(start); ahead > time.Millisecond {
					time.Sleep(ahead)
				}
			}
		}
		return nil
	})
}
