//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
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
	out, err := h.Run(context.Background(), "ip", "-j", "-s", "link", "show", "dev", dev)
	if err != nil {
		return 0, 0, err
	}
	var links []struct {
		Stats64 struct {
			TX struct {
				Packets uint64 `json:"packets"`
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip -j -s link show %s: %v: %q", dev, err, out)
	}
	return links[0].Stats64.TX.Packets, links[0].Stats64.TX.Dropped, nil
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

// retransmits is the number of segments c's kernel socket has
// retransmitted (tcpi_total_retrans), -1 if unknown.
func retransmits(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1
	}
	rc, err := tc.SyscallConn()
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
