//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestReadRing checks WaitRing's reader on a real device in a fresh
// namespace (root, and uid 65534 in a user namespace of its own): a
// burst queued on the device while nobody reads is read whole, in order,
// in far fewer io_uring_enter calls than packets; Close lets the
// interface go (the reads in flight, which hold the device's file, are
// cancelled); and where io_uring cannot be set up the device falls back
// to Go's poller, says why, and still reads.
func TestReadRing(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		t.Run("burst", testRingBurst)
		t.Run("fallback", testRingFallback)
		t.Run("fallback-probe", testRingProbeFallback)
		t.Run("deferred-close", testRingDeferredClose)
	})
}

func testRingBurst(t *testing.T) {
	const name, burst = "tvring", 200
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing})
	od := d.(*OffloadDevice)
	if st := od.Stats(); !st.Ring {
		t.Skipf("io_uring not available here: %s", st.RingError)
	}
	setAddr(t, name, netip.MustParsePrefix("10.86.0.1/24"))
	c, err := net.Dial("udp4", "10.86.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range burst {
		if _, err := fmt.Fprintf(c, "ring %d", i); err != nil {
			t.Fatal(err)
		}
	}
	arena := make([]byte, 256<<10)
	pkts := make([]GSOPacket, 64)
	next := 0
	deadline := time.Now().Add(30 * time.Second)
	for next < burst && time.Now().Before(deadline) {
		n, err := od.ReadGSO(arena, 16, pkts)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts[:n] {
			_, _, payload, ok := parseIPv4UDP(arena[p.Off : p.Off+p.Len])
			if !ok || !strings.HasPrefix(string(payload), "ring ") {
				continue // the kernel's own packets
			}
			if want := fmt.Sprintf("ring %d", next); string(payload) != want {
				t.Fatalf("read %q, want %q", payload, want)
			}
			next++
		}
	}
	if next < burst {
		t.Fatalf("%d of %d datagrams read", next, burst)
	}
	st := od.Stats()
	t.Logf("%d datagrams in %d io_uring_enter calls (%+v)", burst, st.RingEnters, st)
	if st.RingEnters == 0 || st.RingEnters > burst/4 {
		t.Errorf("%d io_uring_enter calls for a burst of %d queued datagrams: the reads were not batched", st.RingEnters, burst)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// A read left in flight would keep the device's file, and the
	// interface with it.
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := net.InterfaceByName(name); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 10 s after Close", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testRingFallback(t *testing.T) {
	setup := ringSetup
	ringSetup = func(uint32, *ioURingParams) (int, error) { return -1, unix.EPERM }
	defer func() { ringSetup = setup }()
	const name = "tvringfb"
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true, Queues: 2, ReadWait: WaitRing})
	od := d.(*OffloadDevice)
	st := od.Stats()
	if st.Ring || !strings.Contains(st.RingError, "operation not permitted") {
		t.Fatalf("Ring %v, RingError %q: want the fallback, and why", st.Ring, st.RingError)
	}
	setAddr(t, name, netip.MustParsePrefix("10.87.0.1/24"))
	c, err := net.Dial("udp4", "10.87.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 16)
	for _, q := range od.Queues() {
		g := q.(GSODevice)
		go func() {
			arena := make([]byte, 256<<10)
			pkts := make([]GSOPacket, 16)
			for {
				n, err := g.ReadGSO(arena, 16, pkts)
				if err != nil {
					return
				}
				for _, p := range pkts[:n] {
					if _, _, payload, ok := parseIPv4UDP(arena[p.Off : p.Off+p.Len]); ok {
						got <- string(payload)
					}
				}
			}
		}()
	}
	if _, err := c.Write([]byte("fallback")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "fallback" {
			t.Fatalf("read %q", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fallback reader read nothing")
	}
	if st := od.Stats(); st.ReadWaits == 0 || st.RingEnters != 0 {
		t.Errorf("want the poller's waits and no io_uring: %+v", st)
	}
}

// testRingDeferredClose: a deferred write queued on reader a's ring to
// device b holds b's Close until a's next round sends it (b's fd number
// must not be another file's by then), and a's own Close drops what is
// queued and lets b close.
func testRingDeferredClose(t *testing.T) {
	a := openOrSkip(t, Config{Name: "tvringa", MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing}).(*OffloadDevice)
	b := openOrSkip(t, Config{Name: "tvringb", MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing}).(*OffloadDevice)
	if !a.Stats().Ring {
		t.Skipf("io_uring not available here: %s", a.Stats().RingError)
	}
	setAddr(t, "tvringb", netip.MustParsePrefix("10.90.0.1/24"))
	w, ok := b.NewDeferredWriter(a)
	if !ok {
		t.Fatal("no deferred writer for a ring reader")
	}
	pkt := ipv4UDP(netip.MustParseAddrPort("10.90.0.2:7"), netip.MustParseAddrPort("10.90.0.1:9"), []byte("deferred"))
	buf := append(make([]byte, virtioNetHdrLen), pkt...)
	if _, err := w.WriteGSO([][]byte{buf}, []GSO{{}}, virtioNetHdrLen); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("b closed (%v) with a write to it still queued", err)
	case <-time.After(100 * time.Millisecond):
	}
	// a's next read sends it; a's device is empty, so the reader
	// then waits: close a to end it.
	errc := make(chan error, 1)
	go func() {
		arena := make([]byte, 256<<10)
		pkts := make([]GSOPacket, 8)
		for {
			if _, err := a.ReadGSO(arena, 16, pkts); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b's Close still waiting after a's round")
	}
	if st := b.Stats(); st.WritePackets != 1 {
		t.Errorf("b's WritePackets %d, want 1", st.WritePackets)
	}
	a.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("a's reader after Close: %v", err)
	}

	// A write queued when the reader's own device closes is dropped,
	// and its target closes.
	a2 := openOrSkip(t, Config{Name: "tvringa", MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing}).(*OffloadDevice)
	b2 := openOrSkip(t, Config{Name: "tvringb", MTU: 1500, Up: true, Offload: true}).(*OffloadDevice)
	w2, ok := b2.NewDeferredWriter(a2)
	if !ok {
		t.Fatal("no deferred writer for a ring reader")
	}
	if _, err := w2.WriteGSO([][]byte{buf}, []GSO{{}}, virtioNetHdrLen); err != nil {
		t.Fatal(err)
	}
	a2.Close()
	done := make(chan error, 1)
	go func() { done <- b2.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b2's Close waits for a write its reader's Close dropped")
	}
	if _, err := w2.WriteGSO([][]byte{buf}, []GSO{{}}, virtioNetHdrLen); !errors.Is(err, ErrClosed) {
		t.Fatalf("a deferred write after Close: %v, want ErrClosed", err)
	}
}

// testRingProbeFallback: where the device's reads on io_uring do not fail
// at once with EAGAIN (here: flags the kernel refuses, as an old kernel
// refuses RWF_NOWAIT for a TUN device), Open falls back to the poller.
func testRingProbeFallback(t *testing.T) {
	flags := ringProbeRWFlags
	ringProbeRWFlags = 1 << 30
	defer func() { ringProbeRWFlags = flags }()
	d := openOrSkip(t, Config{Name: "tvringpb", MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing}).(*OffloadDevice)
	st := d.Stats()
	if st.Ring || !strings.Contains(st.RingError, "RWF_NOWAIT") {
		t.Fatalf("Ring %v, RingError %q: want the fallback, and why", st.Ring, st.RingError)
	}
	t.Logf("fell back: %s", st.RingError)
}
