//go:build linux

package tun_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/tun"
)

// TestReadThread checks Config.ReadWait WaitThread, WaitPoll and
// WaitArmed on real devices, in a fresh namespace made by root and by uid
// 65534: the readers, each waiting in ppoll (WaitThread: on its own
// locked thread) or on its epoll instance (WaitArmed), deliver what the
// kernel sends; Close wakes them, and their goroutines (and the locked
// threads) end with them; a device destroyed under a waiting reader
// wakes it with EBADFD, the error the netstack takes for a lost device.
func TestReadThread(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		for _, w := range []struct {
			name string
			wait tun.ReadWait
		}{{"thread", tun.WaitThread}, {"poll", tun.WaitPoll}, {"armed", tun.WaitArmed}, {"ring", tun.WaitRing}} {
			t.Run(w.name+"/deliver-close", func(t *testing.T) { readThreadDeliverClose(t, w.wait) })
			t.Run(w.name+"/gone", func(t *testing.T) { readThreadGone(t, w.wait) })
		}
	})
}

// threadReader reads one queue with ReadGSO until it fails, checking,
// if locked, that every read returns on the thread the queue's reader is
// locked to.
type threadReader struct {
	marks chan string
	errc  chan error
}

// threadID is what a ReadThread queue tells of its reader's thread.
type threadID interface{ ReadThreadID() int }

func startThreadReader(q tun.Device, locked bool) *threadReader {
	r := &threadReader{marks: make(chan string, 256), errc: make(chan error, 1)}
	g := q.(tun.GSODevice)
	go func() {
		arena := make([]byte, 256<<10)
		pkts := make([]tun.GSOPacket, 64)
		for {
			n, err := g.ReadGSO(arena, 16, pkts)
			if id := q.(threadID).ReadThreadID(); locked && id != 0 {
				if got := unix.Gettid(); got != id {
					r.errc <- fmt.Errorf("read returned on thread %d, the reader's is %d", got, id)
					return
				}
			}
			if err != nil {
				r.errc <- err
				return
			}
			for _, p := range pkts[:n] {
				payload, ok := parseUDP(arena[p.Off : p.Off+p.Len])
				if ok && strings.HasPrefix(string(payload), "thread ") {
					r.marks <- string(payload)
				}
			}
		}
	}()
	return r
}

// parseUDP returns the payload of an IPv4 UDP packet (the kernel's
// other packets on a new link, IPv6 neighbour discovery and the like,
// are not).
func parseUDP(p []byte) (payload []byte, ok bool) {
	if len(p) < 28 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
		return nil, false
	}
	return p[int(p[0]&0xf)*4+8:], true
}

func readThreadDeliverClose(t *testing.T, wait tun.ReadWait) {
	base := runtime.NumGoroutine()
	// Nothing but the test's datagrams on the device: a packet the
	// kernel sends of its own (IPv6's router solicitations and MLD
	// reports) would wake a waiting reader as Close is to, and a Close
	// that woke nobody would pass.
	noIPv6(t)
	const name = "tvthread"
	d := tun.OpenOrSkip(t, tun.Config{Name: name, MTU: 1500, Up: true, Offload: true, Queues: 2, ReadWait: wait})
	od := d.(*tun.OffloadDevice)
	tun.SetAddr(t, name, netip.MustParsePrefix("10.83.0.1/24"))
	var readers []*threadReader
	for _, q := range od.Queues() {
		readers = append(readers, startThreadReader(q, wait == tun.WaitThread))
	}
	// Sixteen flows (the kernel spreads them over the two queues by
	// hash), a datagram each per round; between rounds the readers find
	// their queues empty and sleep in ppoll.
	var conns []net.Conn
	for i := range 16 {
		c, err := net.Dial("udp4", fmt.Sprintf("10.83.0.2:%d", 1000+i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The readers find their queues empty and wait, each on its thread.
	tids := map[int]bool{}
	for i, q := range od.Queues() {
		waitfor.Until(t, 30*time.Second, fmt.Sprintf("queue %d's reader to wait", i), func() bool { return q.(threadID).ReadThreadID() != 0 })
		tids[q.(threadID).ReadThreadID()] = true
	}
	if wait == tun.WaitThread && len(tids) != 2 {
		t.Fatalf("reader threads %v, want two", tids)
	}
	pending := map[string]bool{}
	for round := range 3 {
		time.Sleep(20 * time.Millisecond)
		for i, c := range conns {
			m := fmt.Sprintf("thread flow %d round %d", i, round)
			pending[m] = true
			if _, err := c.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
		}
	}
	timeout := time.After(30 * time.Second)
	total := len(pending)
	for len(pending) > 0 {
		var m string
		select {
		case m = <-readers[0].marks:
		case m = <-readers[1].marks:
		case err := <-readers[0].errc:
			t.Fatalf("queue 0: %v", err)
		case err := <-readers[1].errc:
			t.Fatalf("queue 1: %v", err)
		case <-timeout:
			t.Fatalf("%d of %d datagrams read", total-len(pending), total)
		}
		if !pending[m] {
			t.Fatalf("unexpected or repeated datagram %q", m)
		}
		delete(pending, m)
	}
	st := od.Stats()
	if st.ReadWaits == 0 {
		t.Errorf("the readers never waited in ppoll: %+v", st)
	}
	if wait == tun.WaitRing && (!st.Ring || st.RingEnters == 0) {
		// Not a fallback that passes for io_uring.
		t.Errorf("WaitRing readers not on io_uring: %+v", st)
	}
	for id := range tids {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", id)); wait == tun.WaitThread && err != nil {
			t.Fatalf("reader thread %d: %v", id, err)
		}
	}

	time.Sleep(20 * time.Millisecond) // both asleep in ppoll again
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for i, r := range readers {
		select {
		case err := <-r.errc:
			if !errors.Is(err, tun.ErrClosed) {
				t.Errorf("queue %d after Close: %v, want ErrClosed", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Close did not wake queue %d's reader", i)
		}
	}
	// The goroutines returned locked: their threads are gone. (A
	// WaitPoll reader's thread goes back to the runtime.)
	waitfor.Until(t, 30*time.Second, "the reader threads to end", func() bool {
		if wait != tun.WaitThread {
			return true
		}
		for id := range tids {
			if !threadEnded(id) {
				t.Logf("thread %d (pid %d) still there", id, os.Getpid())
				return false
			}
		}
		return true
	})
	waitfor.Until(t, 30*time.Second, fmt.Sprintf("goroutines back to %d", base), func() bool { return runtime.NumGoroutine() <= base })
}

// threadEnded reports whether thread id of this process has ended. The
// main thread is the exception: the runtime never ends it (mexit parks
// it for good when a goroutine locked to it returns), and the process
// has it anyway.
func threadEnded(id int) bool {
	if id == os.Getpid() {
		return true
	}
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", id))
	return err != nil
}

func readThreadGone(t *testing.T, wait tun.ReadWait) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skipf("no ip(8): %v", err)
	}
	const name = "tvgone"
	d := tun.OpenOrSkip(t, tun.Config{Name: name, MTU: 1500, Up: true, Offload: true, ReadWait: wait})
	q := d.(*tun.OffloadDevice).Queues()[0]
	r := startThreadReader(q, wait == tun.WaitThread)
	waitfor.Until(t, 30*time.Second, "the reader to wait", func() bool { return q.(threadID).ReadThreadID() != 0 })
	tid := q.(threadID).ReadThreadID()
	// The reader is in ppoll (or about to be: the wakeup is not lost
	// either way, tun_chr_poll answering EPOLLERR from then on).
	time.Sleep(20 * time.Millisecond)
	if out, err := exec.Command(ip, "link", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v: %s", err, out)
	}
	select {
	case err := <-r.errc:
		if !errors.Is(err, syscall.EBADFD) {
			t.Fatalf("reader after the device went: %v, want EBADFD", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the device's destruction did not wake the reader")
	}
	waitfor.Until(t, 30*time.Second, "the reader thread to end", func() bool {
		return wait != tun.WaitThread || threadEnded(tid)
	})
	if err := d.Close(); err != nil {
		t.Fatalf("Close after the device went: %v", err)
	}
}

// A reader that waits in ppoll allocates nothing: each round's datagram
// is sent by a helper goroutine only once the round has started, so the
// reader mostly finds its queue empty and waits (ReadWaits counts it).
func TestReadThreadAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	if !tun.InSandbox(t) {
		return
	}
	for _, w := range []struct {
		name string
		wait tun.ReadWait
	}{{"thread", tun.WaitThread}, {"armed", tun.WaitArmed}, {"ring", tun.WaitRing}} {
		t.Run(w.name, func(t *testing.T) { readWaitAllocs(t, w.wait) })
	}
}

func readWaitAllocs(t *testing.T, wait tun.ReadWait) {
	d := tun.OpenOrSkip(t, tun.Config{Name: "tvalloc1", MTU: 1500, Up: true, Offload: true, ReadWait: wait})
	od := d.(*tun.OffloadDevice)
	dev := d.(tun.GSODevice)
	tun.SetAddr(t, d.Name(), netip.MustParsePrefix("10.85.0.1/24"))
	c, err := net.Dial("udp4", "10.85.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 100)
	kick := make(chan struct{})
	defer close(kick)
	go func() {
		for range kick {
			if _, err := c.Write(payload); err != nil {
				return
			}
		}
	}()
	arena := make([]byte, 256<<10)
	pkts := make([]tun.GSOPacket, 16)
	// On io_uring, each packet also goes back out through the deferred
	// writer, with the next round's wait (the kernel then drops it: it is
	// for no address of its own, and the namespace does not forward).
	var w tun.GSOWriter
	if wait == tun.WaitRing {
		var ok bool
		if w, ok = d.(tun.DeferredWriterSource).NewDeferredWriter(dev); !ok {
			t.Fatalf("a WaitRing device without a deferred writer: %+v", od.Stats())
		}
	}
	out := make([][]byte, 16)
	gso := make([]tun.GSO, 16)
	round := func() {
		kick <- struct{}{}
		n, err := dev.ReadGSO(arena, 16, pkts)
		if err != nil {
			t.Fatal(err)
		}
		if w == nil {
			return
		}
		for i, p := range pkts[:n] {
			out[i], gso[i] = arena[p.Off-16:p.Off+p.Len], p.GSO
		}
		if _, err := w.WriteGSO(out[:n], gso[:n], 16); err != nil {
			t.Fatal(err)
		}
	}
	round() // warm up: the thread locked, first-use callbacks
	before := od.Stats().ReadWaits
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("ReadGSO waiting allocates %.1f times per round, want 0", allocs)
	}
	runtime.ReadMemStats(&ms1)
	waits := od.Stats().ReadWaits - before
	if waits == 0 {
		t.Error("the reader never waited")
	}
	// AllocsPerRun truncates its average: where a few rounds found
	// their packet already queued and did not wait, an allocation per
	// wait averages under one and reads as 0.
	if n := ms1.Mallocs - ms0.Mallocs; n >= waits {
		t.Errorf("%d allocations in %d waits", n, waits)
	}
	if st := od.Stats(); w != nil && (st.RingWrites < 200 || st.WriteSyscalls != 0) {
		t.Errorf("deferred writer: %d packets written through the ring and %d write(2)s, want at least 200 and none", st.RingWrites, st.WriteSyscalls)
	}
}

// TestReadArmed checks what WaitArmed is for, on a real device as root
// and as uid 65534: the device's fd is in no epoll set of the runtime's
// (with WaitPoller it is, which the test checks too), only in its own
// epoll instance, and there it is armed (EPOLLIN) only while a reader
// waits: after the packet that woke the reader, and while nobody reads,
// packets find it disarmed and wake no thread.
func TestReadArmed(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		d := tun.OpenOrSkip(t, tun.Config{Name: "tvpoller", MTU: 1500, Up: true, Offload: true})
		if w := epollWatchers(t, tun.DeviceFd(d)); len(w) != 1 {
			t.Fatalf("a WaitPoller device's fd is watched by %d epoll sets, want 1 (the runtime's)", len(w))
		}
		readArmed(t)
	})
}

func readArmed(t *testing.T) {
	noIPv6(t) // only the test's datagrams wake the reader and count as waits
	const name = "tvarmed"
	d := tun.OpenOrSkip(t, tun.Config{Name: name, MTU: 1500, Up: true, Offload: true, ReadWait: tun.WaitArmed})
	tun.SetAddr(t, name, netip.MustParsePrefix("10.86.0.1/24"))
	dev, ep := tun.ArmedFds(d)
	if dev == 0 || ep == 0 {
		t.Fatal("no epoll instance for a WaitArmed device")
	}
	armed := func() bool {
		t.Helper()
		w := epollWatchers(t, dev)
		ev, ok := w[ep]
		if len(w) != 1 || !ok {
			t.Fatalf("the device's fd %d is watched by %v, want only its own epoll instance %d", dev, w, ep)
		}
		return ev&unix.EPOLLIN != 0
	}
	if armed() {
		t.Fatal("armed before any reader waited")
	}
	c, err := net.Dial("udp4", "10.86.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q := d.(*tun.OffloadDevice).Queues()[0]
	g := d.(tun.GSODevice)
	arena := make([]byte, 256<<10)
	pkts := make([]tun.GSOPacket, 16)
	// ReadGSO until a datagram of ours.
	readOne := func() <-chan error {
		return readUntil(g, arena, pkts, func(p []byte) bool {
			pl, ok := parseUDP(p)
			return ok && string(pl) == "armed"
		})
	}
	errc := readOne()
	waitfor.Until(t, 30*time.Second, "the reader to wait", func() bool { return q.(threadID).ReadThreadID() != 0 })
	waitfor.Until(t, 30*time.Second, "the device armed while its reader waits", armed)
	if _, err := c.Write([]byte("armed")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting reader was not woken")
	}
	if armed() {
		t.Fatal("still armed after the packet that woke the reader")
	}
	// Nobody reads: packets come and find it disarmed.
	for range 5 {
		if _, err := c.Write([]byte("busy")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if armed() {
		t.Fatal("armed while nobody waits")
	}
	// The next reader reads what queued meanwhile without waiting, then
	// waits, armed, for the next datagram.
	waits := d.(*tun.OffloadDevice).Stats().ReadWaits
	errc = readOne()
	waitfor.Until(t, 30*time.Second, "the device armed again", armed)
	if _, err := c.Write([]byte("armed")); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := d.(*tun.OffloadDevice).Stats().ReadWaits; got != waits+1 {
		t.Errorf("ReadWaits grew by %d, want 1", got-waits)
	}
}

// epollWatchers returns, for each epoll instance of this process that
// watches fd, the events it watches it for (/proc/self/fdinfo of the
// instance: "tfd: FD events: MASK", fs/eventpoll.c's ep_show_fdinfo).
func epollWatchers(t *testing.T, fd int) map[int]uint32 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	w := map[int]uint32{}
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			var tfd int
			var ev uint32
			if n, _ := fmt.Sscanf(line, "tfd: %d events: %x", &tfd, &ev); n == 2 && tfd == fd {
				var ep int
				fmt.Sscan(e.Name(), &ep)
				w[ep] = ev
			}
		}
	}
	return w
}

// readUntil reads g with ReadGSO on a goroutine of its own until a
// packet that match accepts, and sends nil then, or the first error.
func readUntil(g tun.GSODevice, arena []byte, pkts []tun.GSOPacket, match func([]byte) bool) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for {
			n, err := g.ReadGSO(arena, 16, pkts)
			if err != nil {
				errc <- err
				return
			}
			for _, p := range pkts[:n] {
				if match(arena[p.Off : p.Off+p.Len]) {
					errc <- nil
					return
				}
			}
		}
	}()
	return errc
}

// noIPv6 disables IPv6 on the devices made after it in the test's
// namespace (a sandbox's own: see netns.InSandboxes). A kernel without
// IPv6 (no /proc/sys/net/ipv6) sends none anyway.
func noIPv6(t *testing.T) {
	t.Helper()
	for _, k := range []string{"all", "default"} {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
}
