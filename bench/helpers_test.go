package bench

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
)

// watchdog calls fire once if its progress counter does not move for
// timeout, so that a benchmark waiting for a lost packet fails instead of
// hanging. The hot loop pays one atomic add per bump.
type watchdog struct {
	progress atomic.Uint64
	fired    atomic.Bool
	stop     chan struct{}
	done     chan struct{}
}

func startWatchdog(timeout time.Duration, fire func()) *watchdog {
	w := &watchdog{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(timeout / 10)
		defer tick.Stop()
		last, since := w.progress.Load(), time.Now()
		for {
			select {
			case <-w.stop:
				return
			case now := <-tick.C:
				if p := w.progress.Load(); p != last {
					last, since = p, now
				} else if now.Sub(since) >= timeout {
					w.fired.Store(true)
					fire()
					return
				}
			}
		}
	}()
	return w
}

func (w *watchdog) bump() { w.progress.Add(1) }

func (w *watchdog) Stop() {
	close(w.stop)
	<-w.done
}

// csum is the ones' complement sum of b added to s, folded to 16 bits
// (the reference, csumtest).
func csum(b []byte, s uint32) uint32 { return uint32(csumtest.Fold(csumtest.Sum(b, s))) }

// setClient4 rewrites the source address and port of an IPv4 TCP packet
// without options (as nattest builds them) and recomputes its checksums,
// without allocating.
func setClient4(pkt []byte, a [4]byte, port uint16) {
	copy(pkt[12:16], a[:])
	binary.BigEndian.PutUint16(pkt[20:], port)
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^uint16(csum(pkt[:20], 0)))
	l4 := pkt[20:]
	l4[16], l4[17] = 0, 0
	ps := csum(pkt[12:20], uint32(pkt[9])+uint32(len(l4)))
	binary.BigEndian.PutUint16(l4[16:], ^uint16(csum(l4, ps)))
}

// flowClient is the client address and port of flow i of the table
// benchmarks: 4096 ports per address, addresses counting up from 10.0.0.0.
func flowClient(i int) ([4]byte, uint16) {
	a := uint32(10<<24) + uint32(i>>12)
	return [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}, uint16(1024 + i&0xfff)
}

func flowClientAddrPort(i int) netip.AddrPort {
	a, p := flowClient(i)
	return netip.AddrPortFrom(netip.AddrFrom4(a), p)
}
