package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// readTimeout bounds every blocking Read in these tests so that a bug shows
// up as a failure, not as a hung test binary.
const readTimeout = 5 * time.Second

// readResult is what a Read run in a goroutine returned.
type readResult struct {
	n    int
	err  error
	pkts [][]byte
}

// readAsync runs one Read on d with batch buffers of size bytes each.
func readAsync(d Device, batch, size int) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, size)
		}
		sizes := make([]int, batch)
		n, err := d.Read(bufs, sizes, 0)
		r := readResult{n: n, err: err}
		for i := 0; i < n; i++ {
			r.pkts = append(r.pkts, bufs[i][:sizes[i]])
		}
		ch <- r
	}()
	return ch
}

// readWithin reads one batch from d or fails the test after readTimeout.
func readWithin(t *testing.T, d Device, batch int) readResult {
	t.Helper()
	select {
	case r := <-readAsync(d, batch, 16384):
		return r
	case <-time.After(readTimeout):
		t.Fatalf("read on %s did not return within %v", d.Name(), readTimeout)
		return readResult{}
	}
}

// expectNoPacket fails if anything is queued for d's reader. In-memory
// Writes deliver synchronously, so once they returned this is exact and no
// waiting (or stray reader) is needed.
func expectNoPacket(t *testing.T, d Device) {
	t.Helper()
	q := d.(*MemDevice).rx
	q.mu.Lock()
	n := q.n
	q.mu.Unlock()
	if n != 0 {
		t.Fatalf("%s: %d unexpected packets queued", d.Name(), n)
	}
}

func memStats(t *testing.T, d Device) Stats {
	t.Helper()
	m, ok := d.(*MemDevice)
	if !ok {
		t.Fatalf("%s is %T, not *MemDevice", d.Name(), d)
	}
	return m.Stats()
}

func TestPairRoundTrip(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })
	if a.Kind() != KindTUN || a.MTU() != 1500 || a.BatchSize() < 1 || a.Headroom() != 0 {
		t.Fatalf("a: kind %v mtu %d batch %d headroom %d", a.Kind(), a.MTU(), a.BatchSize(), a.Headroom())
	}

	// Write with an offset and check that only bytes after it travel and
	// that the writer keeps its buffer (the pair copies).
	out := []byte("XXhello")
	if n, err := a.Write([][]byte{out}, 2); n != 1 || err != nil {
		t.Fatalf("a.Write = %d, %v", n, err)
	}
	copy(out, "YYYYYYY")
	r := readWithin(t, b, 4)
	if r.err != nil || r.n != 1 || string(r.pkts[0]) != "hello" {
		t.Fatalf("b.Read = %d, %v, %q; want 1 packet \"hello\"", r.n, r.err, r.pkts)
	}

	// The other direction, reading at an offset.
	if _, err := b.Write([][]byte{[]byte("world")}, 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	sizes := make([]int, 1)
	n, err := a.Read([][]byte{buf}, sizes, 10)
	if err != nil || n != 1 || string(buf[10:10+sizes[0]]) != "world" {
		t.Fatalf("a.Read = %d, %v, %q", n, err, buf[10:10+sizes[0]])
	}
	if st := memStats(t, a); st.Delivered != 1 || st.Dropped() != 0 {
		t.Errorf("a stats %+v, want 1 delivered", st)
	}
}

func TestPairBatchAndOrder(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })

	const total = 100
	for i := 0; i < total; i++ {
		p := make([]byte, 4)
		binary.BigEndian.PutUint32(p, uint32(i))
		if _, err := a.Write([][]byte{p}, 0); err != nil {
			t.Fatal(err)
		}
	}
	// All 100 are queued: a Read with 64 buffers gets exactly 64 without
	// blocking, the next one the remaining 36, in write order.
	next := uint32(0)
	for _, want := range []int{64, total - 64} {
		r := readWithin(t, b, 64)
		if r.err != nil || r.n != want {
			t.Fatalf("Read = %d, %v; want %d packets", r.n, r.err, want)
		}
		for _, p := range r.pkts {
			if got := binary.BigEndian.Uint32(p); got != next {
				t.Fatalf("packet %d out of order: got %d", next, got)
			}
			next++
		}
	}

	// A multi-buffer Write counts every packet.
	if n, err := a.Write([][]byte{{1}, {2}, {3}}, 0); n != 3 || err != nil {
		t.Fatalf("Write batch = %d, %v", n, err)
	}
	if r := readWithin(t, b, 8); r.n != 3 || !bytes.Equal(bytes.Join(r.pkts, nil), []byte{1, 2, 3}) {
		t.Fatalf("Read after batch write = %d, %v, %v", r.n, r.err, r.pkts)
	}
}

func TestPairReadBlocksUntilPacket(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })
	ch := readAsync(b, 8, 2048)
	select {
	case r := <-ch:
		t.Fatalf("Read returned before any write: %d, %v", r.n, r.err)
	case <-time.After(20 * time.Millisecond):
	}
	if _, err := a.Write([][]byte{[]byte("x")}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.n != 1 || r.err != nil {
			t.Fatalf("Read = %d, %v", r.n, r.err)
		}
	case <-time.After(readTimeout):
		t.Fatal("blocked Read not woken by Write")
	}
}

func TestPairDropWhenFull(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })
	const extra = 10
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < memQueueLen+extra; i++ {
			if _, err := a.Write([][]byte{{byte(i)}}, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(readTimeout):
		t.Fatal("Write blocked on a full queue")
	}
	st := memStats(t, a)
	if st.Delivered != memQueueLen || st.DroppedFull != extra {
		t.Fatalf("stats %+v, want %d delivered and %d dropped full", st, memQueueLen, extra)
	}
	// The oldest packets survive (tail drop), and the queue works again
	// once drained.
	got := 0
	for got < memQueueLen {
		r := readWithin(t, b, 64)
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, p := range r.pkts {
			if p[0] != byte(got) {
				t.Fatalf("packet %d is %d", got, p[0])
			}
			got++
		}
	}
	if _, err := a.Write([][]byte{{42}}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, b, 1); r.n != 1 || r.pkts[0][0] != 42 {
		t.Fatalf("after drain: %d, %v, %v", r.n, r.err, r.pkts)
	}
}

func TestPairMTU(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		max  int
	}{{KindTUN, 1280}, {KindTAP, 1280 + 14}} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			a, b := NewPair(tc.kind, 1280)
			t.Cleanup(func() { a.Close() })
			ok := make([]byte, tc.max)
			ok[0] = 0xaa
			big := make([]byte, tc.max+1)
			if n, err := a.Write([][]byte{big, ok}, 0); n != 2 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			r := readWithin(t, b, 8)
			if r.n != 1 || len(r.pkts[0]) != tc.max || r.pkts[0][0] != 0xaa {
				t.Fatalf("Read = %d, %v; want the one %d-byte packet", r.n, r.err, tc.max)
			}
			if st := memStats(t, a); st.DroppedTooBig != 1 || st.Delivered != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestPairRunts(t *testing.T) {
	a, b := NewPair(KindTAP, 1500)
	t.Cleanup(func() { a.Close() })
	if _, err := a.Write([][]byte{{}, make([]byte, 13), make([]byte, 14)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, b, 8); r.n != 1 || len(r.pkts[0]) != 14 {
		t.Fatalf("Read = %d, %v, %v", r.n, r.err, r.pkts)
	}
	if st := memStats(t, a); st.DroppedRunt != 2 {
		t.Fatalf("stats %+v, want 2 runts", st)
	}
}

func TestPairShortBuffer(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })
	if _, err := a.Write([][]byte{make([]byte, 10), make([]byte, 100), make([]byte, 10)}, 0); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 50), make([]byte, 50), make([]byte, 50)}
	sizes := make([]int, 3)
	// The first packet fits; the second does not, so the batch stops
	// before it.
	if n, err := b.Read(bufs, sizes, 0); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want 1, nil", n, err)
	}
	// Now it is first: dropped and reported.
	if n, err := b.Read(bufs, sizes, 0); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("Read = %d, %v; want io.ErrShortBuffer", n, err)
	}
	if n, err := b.Read(bufs, sizes, 0); n != 1 || err != nil || sizes[0] != 10 {
		t.Fatalf("Read = %d, %v, size %d", n, err, sizes[0])
	}
}

func TestPairCloseUnblocks(t *testing.T) {
	for _, closeA := range []bool{true, false} {
		a, b := NewPair(KindTUN, 1500)
		ra := readAsync(a, 4, 2048)
		rb := readAsync(b, 4, 2048)
		time.Sleep(10 * time.Millisecond) // let both block
		if closeA {
			a.Close()
		} else {
			b.Close()
		}
		for _, ch := range []<-chan readResult{ra, rb} {
			select {
			case r := <-ch:
				if !errors.Is(r.err, ErrClosed) {
					t.Fatalf("blocked Read after Close = %d, %v; want ErrClosed", r.n, r.err)
				}
			case <-time.After(readTimeout):
				t.Fatal("Close did not unblock Read")
			}
		}
		for _, d := range []Device{a, b} {
			if _, err := d.Write([][]byte{{1}}, 0); !errors.Is(err, ErrClosed) {
				t.Fatalf("%s: Write after Close = %v", d.Name(), err)
			}
			if _, err := d.Read([][]byte{make([]byte, 10)}, []int{0}, 0); !errors.Is(err, ErrClosed) {
				t.Fatalf("%s: Read after Close = %v", d.Name(), err)
			}
			if err := d.Close(); err != nil {
				t.Fatalf("second Close = %v", err)
			}
		}
	}
}

func TestPairConcurrent(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	const perDir = 5000
	var wg sync.WaitGroup
	var received [2]atomic.Uint64
	for i, pair := range [][2]Device{{a, b}, {b, a}} {
		w, r := pair[0], pair[1]
		wg.Add(2)
		go func() {
			defer wg.Done()
			bufs := [][]byte{make([]byte, 64), make([]byte, 64)}
			for j := 0; j < perDir/2; j++ {
				binary.BigEndian.PutUint32(bufs[0], uint32(2*j))
				binary.BigEndian.PutUint32(bufs[1], uint32(2*j+1))
				if _, err := w.Write(bufs, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			bufs := make([][]byte, r.BatchSize())
			for k := range bufs {
				bufs[k] = make([]byte, 2048)
			}
			sizes := make([]int, len(bufs))
			last := -1
			for {
				n, err := r.Read(bufs, sizes, 0)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				for k := 0; k < n; k++ {
					v := int(binary.BigEndian.Uint32(bufs[k]))
					if v <= last {
						t.Errorf("reordered: %d after %d", v, last)
					}
					last = v
				}
				received[i].Add(uint64(n))
			}
		}()
	}
	// Every packet written is either read or dropped (queue full) and
	// none is duplicated; wait for that, then close to release readers.
	deadline := time.Now().Add(readTimeout)
	for {
		sa, sb := memStats(t, a), memStats(t, b)
		if received[0].Load()+sa.Dropped() == perDir && received[1].Load()+sb.Dropped() == perDir {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all packets accounted for: read %d %d, stats %+v %+v",
				received[0].Load(), received[1].Load(), sa, sb)
		}
		time.Sleep(time.Millisecond)
	}
	a.Close()
	wg.Wait()
	sa, sb := memStats(t, a), memStats(t, b)
	if received[0].Load() != sa.Delivered || received[1].Load() != sb.Delivered {
		t.Fatalf("read %d %d, delivered a→b %d b→a %d", received[0].Load(), received[1].Load(), sa.Delivered, sb.Delivered)
	}
}

func TestPairZeroAlloc(t *testing.T) {
	a, b := NewPair(KindTUN, 1500)
	t.Cleanup(func() { a.Close() })
	out := [][]byte{make([]byte, 1400)}
	in := make([][]byte, b.BatchSize())
	for i := range in {
		in[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(in))
	roundTrip := func() {
		if _, err := a.Write(out, 0); err != nil {
			panic(err)
		}
		if n, err := b.Read(in, sizes, 0); n != 1 || err != nil {
			panic("read failed")
		}
	}
	// Warm up: every slot of the ring gets its buffer once.
	for i := 0; i < 2*memQueueLen; i++ {
		roundTrip()
	}
	if allocs := testing.AllocsPerRun(1000, roundTrip); allocs != 0 {
		t.Fatalf("Write+Read allocates %.1f times per round trip, want 0", allocs)
	}
}

// frame builds an Ethernet frame from src to dst with a one-byte payload.
func frame(dst, src [6]byte, payload byte) []byte {
	f := make([]byte, 15)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], 0x88b5) // local experimental
	f[14] = payload
	return f
}

// testMACs returns the broadcast address and three locally administered
// unicast addresses (functions, not package variables, so that no test can
// change them for another).
func testMACs() (bcast, m1, m2, m3 [6]byte) {
	return [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		[6]byte{0x02, 0, 0, 0, 0, 1},
		[6]byte{0x02, 0, 0, 0, 0, 2},
		[6]byte{0x02, 0, 0, 0, 0, 3}
}

func TestSwitchLearningAndFlooding(t *testing.T) {
	macBroadcast, mac1, mac2, mac3 := testMACs()
	s := NewSwitch()
	t.Cleanup(func() { s.Close() })
	p1, p2, p3 := s.Port("p1", 1500), s.Port("p2", 1500), s.Port("p3", 1500)
	if p1.Kind() != KindTAP || p1.Name() != "p1" {
		t.Fatalf("port kind %v name %q", p1.Kind(), p1.Name())
	}

	// Broadcast from mac1 on p1: flooded to p2 and p3, not echoed to p1.
	if _, err := p1.Write([][]byte{frame(macBroadcast, mac1, 1)}, 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Device{p2, p3} {
		if r := readWithin(t, p, 8); r.n != 1 || r.pkts[0][14] != 1 {
			t.Fatalf("%s: %d, %v, %v", p.Name(), r.n, r.err, r.pkts)
		}
	}

	// mac1 is now known behind p1: a frame to it from p2 goes only there.
	if _, err := p2.Write([][]byte{frame(mac1, mac2, 2)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, p1, 8); r.n != 1 || r.pkts[0][14] != 2 {
		t.Fatalf("p1: %d, %v, %v", r.n, r.err, r.pkts)
	}

	// Unknown unicast (mac3 never spoke) is flooded to p1 and p3.
	if _, err := p2.Write([][]byte{frame(mac3, mac2, 3)}, 0); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Device{p1, p3} {
		if r := readWithin(t, p, 8); r.n != 1 || r.pkts[0][14] != 3 {
			t.Fatalf("%s: %d, %v, %v", p.Name(), r.n, r.err, r.pkts)
		}
	}

	// mac2 was learnt behind p2 from the frames above: p3's reply goes
	// only to p2.
	if _, err := p3.Write([][]byte{frame(mac2, mac3, 4)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, p2, 8); r.n != 1 || r.pkts[0][14] != 4 {
		t.Fatalf("p2: %d, %v, %v", r.n, r.err, r.pkts)
	}

	// Nothing else was delivered anywhere: in particular p3 did not get
	// the frame for mac1 and nobody got an echo.
	for _, p := range []Device{p1, p2, p3} {
		expectNoPacket(t, p)
	}
	// 2 + 1 + 2 + 1 copies.
	if st := s.Stats(); st.Delivered != 6 || st.Dropped() != 0 {
		t.Fatalf("switch stats %+v", st)
	}
}

func TestSwitchNoHairpin(t *testing.T) {
	macBroadcast, mac1, mac2, _ := testMACs()
	s := NewSwitch()
	t.Cleanup(func() { s.Close() })
	p1, p2 := s.Port("p1", 1500), s.Port("p2", 1500)
	// mac1 and mac2 both behind p1 (two hosts on one segment).
	if _, err := p1.Write([][]byte{frame(macBroadcast, mac1, 1), frame(macBroadcast, mac2, 2)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, p2, 8); r.n != 2 {
		t.Fatalf("p2: %d, %v", r.n, r.err)
	}
	// A frame between them stays on p1's segment: not sent anywhere.
	if _, err := p1.Write([][]byte{frame(mac2, mac1, 3)}, 0); err != nil {
		t.Fatal(err)
	}
	expectNoPacket(t, p1)
	expectNoPacket(t, p2)
}

func TestSwitchMove(t *testing.T) {
	macBroadcast, mac1, _, mac3 := testMACs()
	s := NewSwitch()
	t.Cleanup(func() { s.Close() })
	p1, p2, p3 := s.Port("p1", 1500), s.Port("p2", 1500), s.Port("p3", 1500)
	p1.Write([][]byte{frame(macBroadcast, mac1, 1)}, 0)
	readWithin(t, p2, 8)
	readWithin(t, p3, 8)
	// mac1 shows up on p2 (a VM migrated): frames follow it there.
	p2.Write([][]byte{frame(macBroadcast, mac1, 2)}, 0)
	readWithin(t, p1, 8)
	readWithin(t, p3, 8)
	p3.Write([][]byte{frame(mac1, mac3, 3)}, 0)
	if r := readWithin(t, p2, 8); r.n != 1 || r.pkts[0][14] != 3 {
		t.Fatalf("p2: %d, %v, %v", r.n, r.err, r.pkts)
	}
	expectNoPacket(t, p1)
}

func TestSwitchPortClose(t *testing.T) {
	macBroadcast, mac1, mac2, mac3 := testMACs()
	s := NewSwitch()
	p1, p2, p3 := s.Port("p1", 1500), s.Port("p2", 1500), s.Port("p3", 1500)
	p1.Write([][]byte{frame(macBroadcast, mac1, 1)}, 0)
	readWithin(t, p2, 8)
	readWithin(t, p3, 8)

	blocked := readAsync(p1, 4, 2048)
	time.Sleep(10 * time.Millisecond)
	p1.Close()
	select {
	case r := <-blocked:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("Read on closed port = %v", r.err)
		}
	case <-time.After(readTimeout):
		t.Fatal("port Close did not unblock Read")
	}
	if _, err := p1.Write([][]byte{frame(macBroadcast, mac1, 1)}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write on closed port = %v", err)
	}
	// mac1 was forgotten with its port: a frame to it is flooded to the
	// remaining port, and the switch keeps working.
	p2.Write([][]byte{frame(mac1, mac2, 2)}, 0)
	if r := readWithin(t, p3, 8); r.n != 1 || r.pkts[0][14] != 2 {
		t.Fatalf("p3: %d, %v, %v", r.n, r.err, r.pkts)
	}

	// Switch Close closes the remaining ports and later ones.
	blocked = readAsync(p2, 4, 2048)
	s.Close()
	select {
	case r := <-blocked:
		if !errors.Is(r.err, ErrClosed) {
			t.Fatalf("Read after switch Close = %v", r.err)
		}
	case <-time.After(readTimeout):
		t.Fatal("switch Close did not unblock Read")
	}
	late := s.Port("late", 1500)
	if _, err := late.Write([][]byte{frame(macBroadcast, mac3, 1)}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write on port of closed switch = %v", err)
	}
}

func TestSwitchPerPortMTU(t *testing.T) {
	macBroadcast, mac1, _, _ := testMACs()
	s := NewSwitch()
	t.Cleanup(func() { s.Close() })
	big, small := s.Port("big", 9000), s.Port("small", 1500)
	other := s.Port("other", 9000)
	f := make([]byte, 9000+14)
	copy(f, macBroadcast[:])
	copy(f[6:], mac1[:])
	if _, err := big.Write([][]byte{f}, 0); err != nil {
		t.Fatal(err)
	}
	if r := readWithin(t, other, 8); r.n != 1 || len(r.pkts[0]) != len(f) {
		t.Fatalf("other: %d, %v", r.n, r.err)
	}
	expectNoPacket(t, small)
	if st := memStats(t, big); st.Delivered != 1 || st.DroppedTooBig != 1 {
		t.Fatalf("big stats %+v", st)
	}
	// Runts never reach the switch logic.
	if _, err := small.Write([][]byte{make([]byte, 13)}, 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DroppedRunt != 1 || st.DroppedTooBig != 1 {
		t.Fatalf("switch stats %+v", st)
	}
}

func TestSwitchConcurrent(t *testing.T) {
	macBroadcast, _, _, _ := testMACs()
	s := NewSwitch()
	const nPorts, perPort = 4, 500
	ports := make([]Device, nPorts)
	macs := make([][6]byte, nPorts)
	for i := range ports {
		ports[i] = s.Port("p", 1500)
		macs[i] = [6]byte{0x02, 0, 0, 0, 1, byte(i)}
	}
	var readers, writers sync.WaitGroup
	for i, p := range ports {
		readers.Add(1)
		go func() {
			defer readers.Done()
			bufs := make([][]byte, p.BatchSize())
			for k := range bufs {
				bufs[k] = make([]byte, 1514)
			}
			sizes := make([]int, len(bufs))
			for {
				n, err := p.Read(bufs, sizes, 0)
				if errors.Is(err, ErrClosed) {
					return
				}
				for k := 0; k < n; k++ {
					if bytes.Equal(bufs[k][6:12], macs[i][:]) {
						t.Errorf("port %d got its own frame", i)
					}
				}
			}
		}()
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := 0; j < perPort; j++ {
				dst := macBroadcast
				if j%2 == 1 {
					dst = macs[(i+1)%nPorts]
				}
				if _, err := p.Write([][]byte{frame(dst, macs[i], byte(j))}, 0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Attach and detach ports while traffic flows.
	for k := 0; k < 50; k++ {
		s.Port("churn", 1500).Close()
	}
	writers.Wait()
	s.Close()
	readers.Wait()
	if st := s.Stats(); st.Delivered == 0 {
		t.Fatalf("nothing delivered: %+v", st)
	}
}
