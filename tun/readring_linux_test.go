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
	"unsafe"

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
		t.Run("trim", testRingTrim)
	})
}

// resident counts the pages of b, a page-aligned part of a mapping, that
// are in memory (mincore(2)).
func resident(t *testing.T, b []byte) int {
	t.Helper()
	page := unix.Getpagesize()
	vec := make([]byte, (len(b)+page-1)/page)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// testRingTrim reads a USO super-packet the kernel queued on a real
// device, and builds a coalesced run in a write buffer: their pages stay
// while the reader may need them, and TrimBuffers hands back all but the
// first page of each once a call has passed with no packet of more than a
// page.
func testRingTrim(t *testing.T) {
	const name = "tvtrim"
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true, ReadWait: WaitRing})
	od := d.(*OffloadDevice)
	if st := od.Stats(); !st.Ring || !st.USO {
		t.Skipf("io_uring or USO not available here: %+v", st)
	}
	setAddr(t, name, netip.MustParsePrefix("10.87.0.1/24"))
	conn := usoConn(t, net.IPv4(10, 87, 0, 1), 1000)
	arena := make([]byte, 256<<10)
	pkts := make([]GSOPacket, 64)
	deadline := time.Now().Add(readTimeout)
	// superPacket sends 40000 bytes of pattern seed as one USO send and
	// reads until the super-packet comes; it returns its payload.
	superPacket := func(seed int) []byte {
		t.Helper()
		if _, err := conn.WriteToUDPAddrPort(pattern(40000, seed), netip.MustParseAddrPort("10.87.0.2:9")); err != nil {
			t.Fatal(err)
		}
		for time.Now().Before(deadline) {
			n, err := od.ReadGSO(arena, 16, pkts)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkts[:n] {
				if p.Len > 30000 {
					// IPv4 and UDP headers, then the payload.
					return arena[p.Off+28 : p.Off+p.Len]
				}
			}
		}
		t.Fatal("no super-packet read")
		return nil
	}
	superPacket(7)
	rr := od.ring
	page := unix.Getpagesize()
	tail := func(b int) []byte { return rr.slots[b*ringBufSize+page : (b+1)*ringBufSize] }
	slotPages := func() int {
		n := 0
		for i := 0; i < ringSlots; i++ {
			n += resident(t, tail(i))
		}
		return n
	}
	if slotPages() < 30000/page {
		t.Fatalf("%d pages of the slots resident after a super-packet: the read did not go through them", slotPages())
	}

	// A coalesced run of 30 KB built in a write buffer, and written (to
	// /dev/null: only the buffer matters here).
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(null)
	q := od.offloadQueue
	q.ringMu.Lock()
	wb, err := q.ringBuf()
	if err == nil {
		copy(wb, pattern(30000, 3))
		err = q.ringWrite(uintptr(null), wb[:30000])
	}
	if err == nil {
		err = q.ringSettle(true)
	}
	q.ringMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := resident(t, tail(ringSlots)); got < 28000/page {
		t.Fatalf("%d pages of the write buffer resident after a run of 30000 bytes", got)
	}

	if n := od.TrimBuffers(); n != 0 {
		t.Errorf("the first trim after super-packets gave %d bytes: they may come again", n)
	}
	n := od.TrimBuffers()
	if left := slotPages() + resident(t, tail(ringSlots)); left != 0 || n < 58000 {
		t.Errorf("the second trim gave %d bytes and left %d pages beyond the first of a buffer", n, left)
	}
	for b := 0; b < ringSlots+ringWBufs; b++ {
		if b == 0 || b == ringSlots {
			if got := resident(t, rr.slots[b*ringBufSize:b*ringBufSize+page]); got != 1 {
				t.Errorf("buffer %d's first page not resident after the trim", b)
			}
		}
	}
	if n := od.TrimBuffers(); n != 0 {
		t.Errorf("a trim with nothing to hand back gave %d bytes", n)
	}

	// Read again after the trim: the pages come back as needed.
	if payload := superPacket(9); string(payload) != string(pattern(40000, 9)) {
		t.Fatalf("super-packet after the trim: %d bytes of payload, differs", len(payload))
	}
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
