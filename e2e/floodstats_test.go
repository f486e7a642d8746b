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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
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
// and waiting for one while runnable (/proc/PID/task/TID/schedstat, first
// two fields, in ns: CONFIG_SCHED_INFO).
func schedTimes(pid int) (run, wait time.Duration) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		run += time.Duration(r)
		wait += time.Duration(w)
	}
	return run, wait
}

// keepAlive is an established connection through a flood: one keep-alive
// HTTP connection, a request every 100 ms.
type keepAlive struct {
	c   *http.Client
	url string
	// ok and fail count requests, reconnects the connections made after
	// the first.
	ok, fail, reconnects atomic.Int64
	conn                 atomic.Value // net.Conn: the socket, for its retransmissions
}

// newKeepAlive opens the connection with a first request.
func newKeepAlive(t *testing.T, dial func(context.Context, string, string) (net.Conn, error), url string) *keepAlive {
	t.Helper()
	k := &keepAlive{url: url, c: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1, IdleConnTimeout: time.Minute, DialContext: dial}}}
	if err := k.get(false); err != nil {
		t.Fatal(err)
	}
	return k
}

// get makes one request; reconnect says whether a new connection counts
// as a reconnection.
func (k *keepAlive) get(reconnect bool) error {
	tr := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			if reconnect {
				k.reconnects.Add(1)
			}
			k.conn.Store(i.Conn)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), tr), "GET", k.url, nil)
	if err != nil {
		return err
	}
	resp, err := k.c.Do(req)
	if err != nil {
		return err
	}
	// Read to the end, or the connection is not reused.
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
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

// retransmits is the number of segments the connection's socket has
// retransmitted (tcpi_total_retrans), -1 if unknown.
func (k *keepAlive) retransmits() int {
	c, ok := k.conn.Load().(*net.TCPConn)
	if !ok {
		return -1
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int(info.Total_retrans)
		}
	})
	return n
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
