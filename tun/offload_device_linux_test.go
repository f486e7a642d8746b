//go:build linux

package tun_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// transferSize is what goes each way in TestOffloadKernelTCP: 20 MB, or
// 5 MB under the race detector, which slows gVisor down about twentyfold
// and the sandbox gives the whole test one minute.
var transferSize = func() int {
	if raceEnabled {
		return 5 << 20
	}
	return 20 << 20
}()

// batchingDevice queues the packets written to it and writes them to the
// device underneath from a goroutine, as many as are waiting at once, the
// way a qdisc batches. gVisor's TCP hands the link one segment per
// WritePackets call, so without this the offload device's Write never sees
// two segments to coalesce; with it, the test exercises coalesced
// super-packets that the kernel must accept. Write errors are counted,
// not returned (the test fails on any).
type batchingDevice struct {
	tun.Device
	ch      chan []byte
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    int
	lastErr error
	calls   int
	packets int
}

const headroom = 16

func newBatching(d tun.Device) *batchingDevice {
	b := &batchingDevice{Device: d, ch: make(chan []byte, 4096), stop: make(chan struct{})}
	b.wg.Add(1)
	go b.loop()
	return b
}

func (b *batchingDevice) Write(bufs [][]byte, offset int) (int, error) {
	for _, p := range bufs {
		q := make([]byte, headroom+len(p)-offset)
		copy(q[headroom:], p[offset:])
		select {
		case b.ch <- q:
		case <-b.stop:
			return 0, tun.ErrClosed
		}
	}
	return len(bufs), nil
}

func (b *batchingDevice) loop() {
	defer b.wg.Done()
	batch := make([][]byte, 0, 128)
	for {
		select {
		case p := <-b.ch:
			batch = append(batch[:0], p)
		case <-b.stop:
			return
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case p := <-b.ch:
				batch = append(batch, p)
			default:
				break more
			}
		}
		_, err := b.Device.Write(batch, headroom)
		b.mu.Lock()
		b.calls++
		b.packets += len(batch)
		if err != nil {
			b.errs++
			b.lastErr = err
		}
		b.mu.Unlock()
	}
}

func (b *batchingDevice) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	err := b.Device.Close()
	b.wg.Wait()
	return err
}

type result struct {
	up, down time.Duration // kernel→gVisor, gVisor→kernel
}

// transfer runs a gVisor host on dev with address peer, listening on port
// 5000; a kernel TCP socket connects to it, sends transferSize bytes
// (checked by count and SHA-256 on the gVisor side), then receives as
// many (checked on the kernel side).
func transfer(t *testing.T, dev tun.Device, peer netip.Prefix, noGSO bool) result {
	t.Helper()
	h := netstack.New(netstack.Config{NoGSO: noGSO})
	defer h.Close()
	if _, err := h.AddNIC("nic0", dev); err != nil {
		t.Fatal(err)
	}
	if err := h.AddAddress("nic0", peer); err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(peer.Addr(), 5000)
	ln, err := h.ListenTCP(to)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	upData := make([]byte, transferSize)
	downData := make([]byte, transferSize)
	rng.Read(upData)
	rng.Read(downData)
	upSum, downSum := sha256.Sum256(upData), sha256.Sum256(downData)

	var res result
	srvErr := make(chan error, 1)
	go func() {
		srvErr <- func() error {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			defer c.Close()
			start := time.Now()
			hs := sha256.New()
			n, err := io.Copy(hs, c)
			if err != nil {
				return fmt.Errorf("gVisor side read: %w", err)
			}
			res.up = time.Since(start)
			if n != int64(transferSize) || !bytes.Equal(hs.Sum(nil), upSum[:]) {
				return fmt.Errorf("gVisor side got %d bytes with SHA-256 %x, want %d bytes with %x", n, hs.Sum(nil), transferSize, upSum)
			}
			if _, err := c.Write(downData); err != nil {
				return fmt.Errorf("gVisor side write: %w", err)
			}
			return nil
		}()
	}()

	c, err := net.DialTimeout("tcp4", to.String(), 10*time.Second)
	if err != nil {
		t.Fatalf("kernel dial %v: %v", to, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(45 * time.Second))
	if _, err := c.Write(upData); err != nil {
		t.Fatalf("kernel write: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	hs := sha256.New()
	var downStart time.Time
	// Time the download from its first byte.
	first := make([]byte, 1)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatalf("kernel read: %v (server: %v)", err, drain(srvErr))
	}
	downStart = time.Now()
	hs.Write(first)
	n, err := io.Copy(hs, c)
	if err != nil {
		t.Fatalf("kernel read after %d bytes: %v", n+1, err)
	}
	res.down = time.Since(downStart)
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	if n+1 != int64(transferSize) || !bytes.Equal(hs.Sum(nil), downSum[:]) {
		t.Fatalf("kernel side got %d bytes with SHA-256 %x, want %d bytes with %x", n+1, hs.Sum(nil), transferSize, downSum)
	}
	return res
}

func drain(c chan error) error {
	select {
	case err := <-c:
		return err
	case <-time.After(time.Second):
		return nil
	}
}

func mbps(d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(transferSize)/1e6/d.Seconds())
}

// TestOffloadKernelTCP moves 20 MB (see transferSize) each way between a kernel TCP socket
// and a gVisor host on a TUN device, inside a private network namespace:
// once on the plain device for comparison, once on the offload device as
// netstack drives it (one packet per Write), and once with writes batched
// so that Write coalesces super-packets the kernel has to accept. The
// same on TAP devices: the kernel's super-frames split by netstack (or,
// with noGSO, by the device's Read), coalesced runs written as
// super-frames.
func TestOffloadKernelTCP(t *testing.T) {
	if !tun.InSandbox(t) {
		return
	}
	runs := []struct {
		name    string
		cfg     tun.Config
		batched bool
		kernel  netip.Prefix
		peer    netip.Prefix
		noGSO   bool
	}{
		{"plain", tun.Config{Name: "tvplain0", MTU: 1500, Up: true},
			false, netip.MustParsePrefix("10.78.0.1/24"), netip.MustParsePrefix("10.78.0.2/24"), false},
		{"offload", tun.Config{Name: "tvoff0", MTU: 1500, Up: true, Offload: true},
			false, netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("10.77.0.2/24"), false},
		{"offload+batched writes", tun.Config{Name: "tvoff1", MTU: 1500, Up: true, Offload: true},
			true, netip.MustParsePrefix("10.79.0.1/24"), netip.MustParsePrefix("10.79.0.2/24"), false},
		{"tap offload", tun.Config{Name: "tvtap0", Kind: tun.KindTAP, MTU: 1500, Up: true, Offload: true},
			false, netip.MustParsePrefix("10.80.0.1/24"), netip.MustParsePrefix("10.80.0.2/24"), false},
		{"tap offload, split by Read", tun.Config{Name: "tvtap1", Kind: tun.KindTAP, MTU: 1500, Up: true, Offload: true},
			false, netip.MustParsePrefix("10.81.0.1/24"), netip.MustParsePrefix("10.81.0.2/24"), true},
		{"tap offload+batched writes", tun.Config{Name: "tvtap2", Kind: tun.KindTAP, MTU: 1500, Up: true, Offload: true},
			true, netip.MustParsePrefix("10.82.0.1/24"), netip.MustParsePrefix("10.82.0.2/24"), false},
	}
	for _, r := range runs {
		d := tun.OpenOrSkip(t, r.cfg)
		if r.cfg.Offload {
			od, ok := d.(*tun.OffloadDevice)
			if !ok {
				t.Fatalf("Open with Offload returned %T", d)
			}
			if d.Headroom() != 10 || d.BatchSize() < 2 || d.MTU() != 1500 || d.Kind() != max(r.cfg.Kind, tun.KindTUN) {
				t.Fatalf("offload device headroom %d batch %d mtu %d kind %v", d.Headroom(), d.BatchSize(), d.MTU(), d.Kind())
			}
			t.Logf("%s: USO accepted by the kernel: %v", r.name, od.Stats().USO)
		} else if _, ok := d.(*tun.OffloadDevice); ok {
			t.Fatal("Open without Offload returned the offload device")
		}
		tun.SetAddr(t, d.Name(), r.kernel)
		dev := d
		var bd *batchingDevice
		if r.batched {
			bd = newBatching(d)
			dev = bd
		}
		res := transfer(t, dev, r.peer, r.noGSO)
		t.Logf("%s: kernel→gVisor %s, gVisor→kernel %s (%d MiB each way, race detector %v)",
			r.name, mbps(res.up), mbps(res.down), transferSize>>20, raceEnabled)
		if od, ok := d.(*tun.OffloadDevice); ok {
			s := od.Stats()
			t.Logf("%s: stats %+v", r.name, s)
			t.Logf("%s: %.1f packets per Read call, %.1f packets per read(2), %.1f segments per super-packet read; "+
				"%.1f segments per super-packet written, %.2f packets per write(2)", r.name,
				ratio(s.ReadPackets, s.ReadCalls), ratio(s.ReadPackets, s.ReadSyscalls), ratio(s.GSOSegments, s.GSOReads),
				ratio(s.GSOWriteSegs, s.GSOWrites), ratio(s.WritePackets, s.WriteSyscalls))
			if s.GSOReads == 0 {
				t.Errorf("%s: the kernel sent no GSO super-packet", r.name)
			}
			if s.ReadDrops != 0 {
				t.Errorf("%s: %d packets dropped on read", r.name, s.ReadDrops)
			}
			if r.batched && s.GSOWrites == 0 {
				t.Errorf("%s: no super-packet written", r.name)
			}
		}
		if bd != nil {
			bd.mu.Lock()
			t.Logf("%s: %.1f packets per batched Write", r.name, ratio(uint64(bd.packets), uint64(bd.calls)))
			if bd.errs > 0 {
				t.Errorf("%s: %d write errors, last %v", r.name, bd.errs, bd.lastErr)
			}
			bd.mu.Unlock()
		}
	}
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
