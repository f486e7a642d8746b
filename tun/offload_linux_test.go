//go:build linux

package tun

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests of the offload device's Read and Write loops over a SOCK_SEQPACKET
// socket pair standing in for the TUN fd (it keeps packet boundaries, as
// the device does), so they need no privileges and no namespace. The real
// device is tested in offload_device_linux_test.go.

// fakeQueue returns a queue over one end of a socket pair and the other
// end's fd, which plays the kernel.
func fakeQueue(t *testing.T) (*offloadQueue, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Room for a few super-packets in flight.
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	f := os.NewFile(uintptr(fds[0]), "fake-tun")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	q := &offloadQueue{f: f, rc: rc, name: "fake0", mtu: 1500,
		rbuf: make([]byte, readBufSize)}
	t.Cleanup(func() { q.Close(); unix.Close(fds[1]) })
	return q, fds[1]
}

func makeBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

// TestOffloadReadAcrossCalls reads a 10-segment super-packet and a plain
// packet with 3 buffers at a time: no segment may be lost or reordered.
func TestOffloadReadAcrossCalls(t *testing.T) {
	q, peer := fakeQueue(t)
	spec := pktSpec{sport: 5000, dport: 1, seq: 100, ack: 1, flags: tcpFlagACK | tcpFlagPSH, id: 7, payload: pattern(9000, 5)}
	if _, err := unix.Write(peer, gsoPacket(spec.build(), vnetGSOTCPv4, 1000)); err != nil {
		t.Fatal(err)
	}
	plain := pktSpec{udp: true, sport: 9, dport: 10, payload: []byte("hello")}.build()
	if _, err := unix.Write(peer, append(make([]byte, virtioNetHdrLen), plain...)); err != nil {
		t.Fatal(err)
	}
	// Garbage (a GSO header on a non-IP packet) is dropped and counted.
	bad := make([]byte, virtioNetHdrLen+60)
	bad[1] = vnetGSOTCPv4
	if _, err := unix.Write(peer, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(peer, append(make([]byte, virtioNetHdrLen), plain...)); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := makeBufs(3, 1500)
	var got [][]byte
	var counts []int
	for len(got) < 11 {
		n, err := q.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, n)
		for i := 0; i < n; i++ {
			got = append(got, bytes.Clone(bufs[i][16:16+sizes[i]]))
		}
	}
	t.Logf("packets per Read: %v", counts)
	if want := []int{3, 3, 3, 2}; len(counts) != len(want) || counts[3] != 2 {
		t.Errorf("reads returned %v packets, want %v", counts, want)
	}
	var payload []byte
	for i, p := range got[:9] {
		verifyPacket(t, p)
		pt, _ := parseSegAny(p)
		if pt.seq != 100+uint32(i*1000) {
			t.Fatalf("segment %d seq %d", i, pt.seq)
		}
		payload = append(payload, p[pt.hdrLen:]...)
	}
	if !bytes.Equal(payload, spec.payload) {
		t.Fatal("payload differs")
	}
	if !bytes.Equal(got[9], plain) || !bytes.Equal(got[10], plain) {
		t.Fatalf("plain packets differ: % x", got[9])
	}
	c := &q.c
	if c.readSyscalls.Load() != 4 || c.gsoReads.Load() != 1 || c.gsoSegments.Load() != 9 ||
		c.readDrops.Load() != 1 || c.readPackets.Load() != 11 {
		t.Errorf("counters: syscalls %d gso %d segs %d drops %d packets %d", c.readSyscalls.Load(),
			c.gsoReads.Load(), c.gsoSegments.Load(), c.readDrops.Load(), c.readPackets.Load())
	}
	if len(got) != 11 {
		t.Errorf("%d packets, want 11", len(got))
	}
}

// TestOffloadWrite writes two TCP runs around a UDP packet and checks what
// "the kernel" receives: two super-packets and a plain packet.
func TestOffloadWrite(t *testing.T) {
	for _, offset := range []int{16, 4} {
		q, peer := fakeQueue(t)
		run1 := segments(false, 20, 1400, 1000)
		udp := pktSpec{udp: true, sport: 9, dport: 10, payload: []byte("x")}.build()
		run2 := segments(true, 5, 1200, 1200)
		all := append(append(append([][]byte{}, run1...), udp), run2...)
		n, err := q.Write(withOffset(all, offset), offset)
		if err != nil || n != len(all) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		rbuf := make([]byte, readBufSize)
		for i, want := range [][][]byte{run1, {udp}, run2} {
			m, err := unix.Read(peer, rbuf)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			var h virtioHdr
			h.decode(rbuf)
			if len(want) == 1 {
				if h != (virtioHdr{}) || !bytes.Equal(rbuf[virtioNetHdrLen:m], want[0]) {
					t.Fatalf("offset %d: plain packet with header %+v: % x", offset, h, rbuf[:m])
				}
				continue
			}
			if int(h.gsoSize) != parseLen(want[0]) {
				t.Fatalf("offset %d: gso size %d", offset, h.gsoSize)
			}
			segs := splitAll(t, rbuf[:m], 1500)
			if len(segs) != len(want) {
				t.Fatalf("offset %d: super-packet of %d segments, want %d", offset, len(segs), len(want))
			}
			for j := range want {
				if !bytes.Equal(segs[j], want[j]) {
					t.Fatalf("offset %d: segment %d differs", offset, j)
				}
			}
		}
		if m, err := unix.Read(peer, rbuf); err != unix.EAGAIN {
			t.Fatalf("extra message of %d bytes (%v)", m, err)
		}
		c := &q.c
		if c.writeSyscalls.Load() != 3 || c.gsoWrites.Load() != 2 || c.gsoWriteSegs.Load() != 25 || c.writePackets.Load() != 26 {
			t.Errorf("counters: syscalls %d gso %d segs %d packets %d", c.writeSyscalls.Load(),
				c.gsoWrites.Load(), c.gsoWriteSegs.Load(), c.writePackets.Load())
		}
	}
}

func parseLen(p []byte) int {
	pt, _ := parseSegAny(p)
	return pt.payload
}

// TestOffloadClose checks that Close wakes a blocked Read with ErrClosed.
func TestOffloadClose(t *testing.T) {
	q, _ := fakeQueue(t)
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := makeBufs(4, 1500)
		_, err := q.Read(bufs, sizes, 16)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Read")
	}
	if _, err := q.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v", err)
	}
}

// readQueues reads every queue in a goroutine of its own until it is
// closed, calling fn with the queue's index and each packet (valid until
// fn returns).
func readQueues(qs []Device, fn func(queue int, pkt []byte)) {
	for i, q := range qs {
		go func() {
			bufs, sizes := makeBufs(q.BatchSize(), 1500)
			for {
				n, err := q.Read(bufs, sizes, 16)
				if err != nil {
					return
				}
				for j := 0; j < n; j++ {
					fn(i, bufs[j][16:16+sizes[j]])
				}
			}
		}()
	}
}

// usoConn is a UDP socket on ip whose sends are cut into datagrams of
// size bytes by the kernel (UDP_SEGMENT): one send is one USO
// super-packet where the device takes them. It is closed with the test.
func usoConn(t *testing.T, ip net.IP, size int) *net.UDPConn {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc, _ := conn.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, size) })
	if serr != nil {
		t.Fatalf("UDP_SEGMENT: %v", serr)
	}
	return conn
}

// TestOffloadKernelUDP sends UDP from kernel sockets to a real offload
// device in a private network namespace: with UDP_SEGMENT one send is a
// USO super-packet (when the kernel accepted TUN_F_USO*), which Read must
// split into checksummed datagrams; with two queues the datagrams of many
// flows are spread over both, and Queues reads them all.
func TestOffloadKernelUDP(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	d := openOrSkip(t, Config{Name: "tvoffq%d", MTU: 1500, Up: true, Offload: true, Queues: 2})
	od, ok := d.(*OffloadDevice)
	if !ok {
		t.Fatalf("Open returned %T", d)
	}
	qs := od.Queues()
	if len(qs) != 2 || qs[1].Name() != d.Name() || qs[1].MTU() != 1500 || d.Name() != "tvoffq0" {
		t.Fatalf("%d queues, names %q %q", len(qs), d.Name(), qs[len(qs)-1].Name())
	}
	setAddr(t, d.Name(), netip.MustParsePrefix("10.76.0.1/24"))
	remote := netip.MustParseAddrPort("10.76.0.2:9")

	type got struct {
		queue int
		pkt   []byte
	}
	pkts := make(chan got, 1024)
	readQueues(qs, func(i int, p []byte) { pkts <- got{i, bytes.Clone(p)} })
	collect := func(want int, match func([]byte) bool) []got {
		var out []got
		timeout := time.After(readTimeout)
		for len(out) < want {
			select {
			case g := <-pkts:
				if match(g.pkt) {
					out = append(out, g)
				}
			case <-timeout:
				t.Fatalf("%d of %d packets within %v", len(out), want, readTimeout)
			}
		}
		return out
	}
	toRemote := func(p []byte) bool {
		_, dst, _, ok := parseIPv4UDP(p)
		return ok && dst == remote
	}

	// 1. USO: one sendmsg of 10 x 1000 bytes.
	conn := usoConn(t, net.IPv4(10, 76, 0, 1), 1000)
	data := pattern(10000, 4)
	if _, err := conn.WriteToUDPAddrPort(data, remote); err != nil {
		t.Fatal(err)
	}
	var payload []byte
	for _, g := range collect(10, toRemote) {
		verifyPacket(t, g.pkt)
		_, _, p, _ := parseIPv4UDP(g.pkt)
		if len(p) != 1000 {
			t.Fatalf("datagram of %d bytes, want 1000", len(p))
		}
		payload = append(payload, p...)
	}
	if !bytes.Equal(payload, data) {
		t.Fatal("USO payload differs")
	}
	s := od.Stats()
	t.Logf("after the USO send: %+v", s)
	if s.USO && s.GSOReads == 0 {
		t.Error("USO is on but the kernel sent no super-packet")
	}

	// 2. Many flows over two queues.
	const flows = 64
	for i := 0; i < flows; i++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 76, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDPAddrPort([]byte("flow"), remote); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	perQueue := make([]int, len(qs))
	for _, g := range collect(flows, toRemote) {
		verifyPacket(t, g.pkt)
		perQueue[g.queue]++
	}
	t.Logf("%d flows read per queue: %v", flows, perQueue)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for i, q := range qs {
		if _, err := q.Read([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("queue %d Read after Close = %v", i, err)
		}
	}
}
