//go:build linux

package tun

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// sandboxEnv marks the re-executed test binary running inside the
	// throw-away user+network namespace.
	sandboxEnv = "TUNVS_IN_SANDBOX"
	// outerNetnsEnv carries the network namespace the outer test ran in
	// (e.g. "net:[4026531840]"), so the inner one can prove it is elsewhere.
	outerNetnsEnv = "TUNVS_OUTER_NETNS"
)

// inSandbox makes sure the calling test creates kernel devices only in a
// private network namespace that disappears with it. In the outer process it
// re-runs just this test under "unshare --user --map-root-user --net",
// reports the result and returns false: the caller must return at once. In
// the re-executed process it checks that the namespace really differs from
// the outer one (refusing to go on otherwise) and returns true.
func inSandbox(t *testing.T) bool {
	t.Helper()
	if os.Getenv(sandboxEnv) == "1" {
		outer := os.Getenv(outerNetnsEnv)
		inner, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatalf("refusing to create devices: cannot read own network namespace: %v", err)
		}
		if outer == "" || inner == outer {
			t.Fatalf("refusing to create devices: network namespace %q is not a private one (outer %q)", inner, outer)
		}
		return true
	}

	outer, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Skipf("cannot read network namespace, not sandboxing: %v", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("no sandbox for kernel devices: %v", err)
	}
	unshareArgs := []string{"--user", "--map-root-user", "--net"}
	// Probe first, so that "cannot create the namespace" (skip) is told
	// apart from "the test failed inside it" (fail).
	if out, err := exec.Command(unshare, append(unshareArgs, "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot create user+network namespace: %v: %s", err, bytes.TrimSpace(out))
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	args := append(unshareArgs, "--", os.Args[0],
		"-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v=true")
	cmd := exec.CommandContext(ctx, unshare, args...)
	cmd.Env = append(os.Environ(), sandboxEnv+"=1", outerNetnsEnv+"="+outer)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sandboxed %s failed: %v\n%s", t.Name(), err, out)
	}
	if bytes.Contains(out, []byte("--- SKIP: "+t.Name())) {
		t.Skipf("sandboxed %s skipped:\n%s", t.Name(), out)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("sandboxed %s did not run:\n%s", t.Name(), out)
	}
	t.Logf("sandboxed run:\n%s", out)
	return false
}

// openOrSkip opens a kernel device, skipping when this system cannot have
// one at all (no /dev/net/tun, or no permission on it), failing otherwise.
func openOrSkip(t *testing.T, cfg Config) Device {
	t.Helper()
	d, err := Open(cfg)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		t.Skipf("cannot create %s device: %v", cfg.Kind, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// setAddr gives interface name the IPv4 address and prefix of p, with
// ioctls so that the test needs no external tools.
func setAddr(t *testing.T, name string, p netip.Prefix) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	addr := p.Addr().As4()
	mask := net.CIDRMask(p.Bits(), 32)
	for _, step := range []struct {
		req uint
		val []byte
	}{{unix.SIOCSIFADDR, addr[:]}, {unix.SIOCSIFNETMASK, mask}} {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := ifr.SetInet4Addr(step.val); err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(fd, step.req, ifr); err != nil {
			t.Fatalf("set address %v on %s: %v", p, name, err)
		}
	}
}

// deviceReader reads d in the background, as a real caller would, until
// Read fails; it then reports the error on errc.
type deviceReader struct {
	pkts chan []byte
	errc chan error
}

func startReader(d Device, bufSize int) *deviceReader {
	r := &deviceReader{pkts: make(chan []byte, 64), errc: make(chan error, 1)}
	go func() {
		bufs := [][]byte{make([]byte, bufSize)}
		sizes := []int{0}
		for {
			n, err := d.Read(bufs, sizes, 0)
			if err != nil {
				r.errc <- err
				return
			}
			if n == 1 {
				r.pkts <- bytes.Clone(bufs[0][:sizes[0]])
			}
		}
	}()
	return r
}

// next returns the first packet for which match is true, skipping others
// (IPv6 router solicitations and the like that a fresh interface sends).
func (r *deviceReader) next(t *testing.T, what string, match func([]byte) bool) []byte {
	t.Helper()
	timeout := time.After(readTimeout)
	for {
		select {
		case p := <-r.pkts:
			if match(p) {
				return p
			}
			t.Logf("skipping %d-byte packet % x", len(p), p[:min(len(p), 48)])
		case err := <-r.errc:
			t.Fatalf("reading device while waiting for %s: %v", what, err)
		case <-timeout:
			t.Fatalf("no %s within %v", what, readTimeout)
		}
	}
}

// ipv4UDP builds an IPv4 UDP packet; the UDP checksum is left zero (none),
// which IPv4 allows.
func ipv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64 // TTL
	p[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// parseIPv4UDP returns the addresses and payload of an IPv4 UDP packet.
func parseIPv4UDP(p []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
		return src, dst, nil, false
	}
	ihl := int(p[0]&0xf) * 4
	if len(p) < ihl+8 {
		return src, dst, nil, false
	}
	s, _ := netip.AddrFromSlice(p[12:16])
	d, _ := netip.AddrFromSlice(p[16:20])
	src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(p[ihl:]))
	dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(p[ihl+2:]))
	return src, dst, p[ihl+8:], true
}

// expectClosed checks that the background reader, blocked in Read, was
// woken by Close with ErrClosed, and that later calls fail the same way.
func expectClosed(t *testing.T, d Device, r *deviceReader) {
	t.Helper()
	time.Sleep(20 * time.Millisecond) // let the reader block again
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-r.errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Read after Close = %v, want ErrClosed", err)
		}
	case <-time.After(readTimeout):
		t.Fatal("Close did not unblock a blocked Read")
	}
	if _, err := d.Read([][]byte{make([]byte, 100)}, []int{0}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v, want ErrClosed", err)
	}
	if _, err := d.Write([][]byte{make([]byte, 28)}, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// TestWaterTUN runs a UDP exchange between a kernel socket and a TUN device
// inside a private network namespace (see inSandbox).
func TestWaterTUN(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	d := openOrSkip(t, Config{Name: "tvtest0", Kind: KindTUN, MTU: 1400, Up: true})
	if d.Name() != "tvtest0" || d.Kind() != KindTUN || d.MTU() != 1400 || d.BatchSize() != 1 || d.Headroom() != 0 {
		t.Fatalf("device %q kind %v mtu %d batch %d headroom %d",
			d.Name(), d.Kind(), d.MTU(), d.BatchSize(), d.Headroom())
	}
	local := netip.MustParseAddrPort("10.99.0.1:0")
	remote := netip.MustParseAddrPort("10.99.0.2:9")
	setAddr(t, d.Name(), netip.MustParsePrefix("10.99.0.1/24"))

	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(local))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local = conn.LocalAddr().(*net.UDPAddr).AddrPort()

	r := startReader(d, 2048)
	if _, err := conn.WriteToUDPAddrPort([]byte("ping"), remote); err != nil {
		t.Fatal(err)
	}
	p := r.next(t, "the UDP datagram to "+remote.String(), func(p []byte) bool {
		_, dst, _, ok := parseIPv4UDP(p)
		return ok && dst == remote
	})
	src, _, payload, _ := parseIPv4UDP(p)
	if src != local || string(payload) != "ping" {
		t.Fatalf("packet from %v payload %q, want from %v payload \"ping\"", src, payload, local)
	}

	// Answer as 10.99.0.2 would; written at an offset to check that only
	// the bytes after it reach the kernel.
	reply := append(make([]byte, 4), ipv4UDP(remote, local, []byte("pong"))...)
	if n, err := d.Write([][]byte{reply}, 4); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	conn.SetReadDeadline(time.Now().Add(readTimeout))
	buf := make([]byte, 100)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("kernel socket did not get the reply: %v", err)
	}
	if from != remote || string(buf[:n]) != "pong" {
		t.Fatalf("kernel socket got %q from %v, want \"pong\" from %v", buf[:n], from, remote)
	}

	// The kernel rejects what is not an IP packet; the error names the
	// device.
	if _, err := d.Write([][]byte{{0x00, 1, 2, 3}}, 0); err == nil || !strings.Contains(err.Error(), "tvtest0") {
		t.Fatalf("Write of garbage = %v, want an error naming the device", err)
	}

	expectClosed(t, d, r)
}

// TestWaterTAP brings up a TAP device in a private network namespace and
// answers the kernel's ARP request, then receives the UDP frame it held.
func TestWaterTAP(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	d := openOrSkip(t, Config{Name: "tvtap0", Kind: KindTAP, MTU: 1400, Up: true})
	if d.Kind() != KindTAP || d.MTU() != 1400 {
		t.Fatalf("device kind %v mtu %d", d.Kind(), d.MTU())
	}
	setAddr(t, d.Name(), netip.MustParsePrefix("10.98.0.1/24"))
	local := netip.MustParseAddr("10.98.0.1")
	remote := netip.MustParseAddrPort("10.98.0.2:9")

	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := startReader(d, 2048)
	if _, err := conn.WriteToUDPAddrPort([]byte("ping"), remote); err != nil {
		t.Fatal(err)
	}

	// Ethernet (14) + ARP for IPv4 over Ethernet (28).
	const etherARP, etherIPv4 = 0x0806, 0x0800
	target := remote.Addr().As4()
	arp := r.next(t, "an ARP request for "+remote.Addr().String(), func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == etherARP &&
			binary.BigEndian.Uint16(f[20:]) == 1 && bytes.Equal(f[38:42], target[:])
	})
	if !bytes.Equal(arp[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) {
		t.Fatalf("ARP request not broadcast: % x", arp[:14])
	}
	kernelMAC := arp[6:12]

	// Reply that 10.98.0.2 is at peerMAC; the kernel then sends the UDP
	// datagram it queued, to that MAC.
	peerMAC := []byte{0x02, 0, 0, 0, 0x98, 0x02}
	f := make([]byte, 42)
	copy(f[0:6], kernelMAC)
	copy(f[6:12], peerMAC)
	binary.BigEndian.PutUint16(f[12:], etherARP)
	binary.BigEndian.PutUint16(f[14:], 1)         // hardware: Ethernet
	binary.BigEndian.PutUint16(f[16:], etherIPv4) // protocol: IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 2) // reply
	copy(f[22:28], peerMAC)
	copy(f[28:32], target[:])
	copy(f[32:38], kernelMAC)
	copy(f[38:42], arp[28:32]) // the asker's IP
	if _, err := d.Write([][]byte{f}, 0); err != nil {
		t.Fatalf("Write ARP reply: %v", err)
	}
	udp := r.next(t, "the UDP frame to "+remote.String(), func(f []byte) bool {
		if len(f) < 14 || binary.BigEndian.Uint16(f[12:]) != etherIPv4 {
			return false
		}
		_, dst, _, ok := parseIPv4UDP(f[14:])
		return ok && dst == remote
	})
	if !bytes.Equal(udp[0:6], peerMAC) {
		t.Fatalf("UDP frame to % x, want the MAC from the ARP reply % x", udp[0:6], peerMAC)
	}

	expectClosed(t, d, r)
}

// TestOpenInvalid checks argument validation, which happens before any
// system call and so is safe to run anywhere.
func TestOpenInvalid(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "tvx0", Kind: Kind(9)},
		{Name: "tvx0", MTU: -1},
		{Name: strings.Repeat("x", unix.IFNAMSIZ)},
	} {
		if d, err := Open(cfg); err == nil {
			d.Close()
			t.Errorf("Open(%+v) succeeded", cfg)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", cfg.Name)) {
			t.Errorf("Open(%+v) error %q does not name the device", cfg, err)
		}
	}
}

// TestOpenLinkFallback opens TUN and TAP links the way tunvs run does:
// with the offloads they are OffloadDevices of their kind; when the
// kernel refuses the offload device (here: more queues than a TUN/TAP
// may have, MAX_TAP_QUEUES 256 in drivers/net/tun.c) the link is the
// plain device, with the refusal told to the warning; an error the plain
// device has too (a name too long) is returned.
func TestOpenLinkFallback(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	for _, kind := range []Kind{KindTUN, KindTAP} {
		var warned []error
		warn := func(err error) { warned = append(warned, err) }
		d, err := OpenLink(Config{Name: "tvlink%d", Kind: kind, MTU: 1500, Up: true, Offload: true}, warn)
		if err != nil {
			t.Fatal(err)
		}
		if od, ok := d.(*OffloadDevice); !ok || od.Kind() != kind || len(warned) != 0 {
			t.Fatalf("%v with offloads: %T of kind %v, warnings %v", kind, d, d.Kind(), warned)
		}
		d.Close()

		d, err = OpenLink(Config{Name: "tvlink%d", Kind: kind, MTU: 1500, Up: true, Offload: true, Queues: 300}, warn)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.(*waterDevice); !ok || d.Kind() != kind || len(warned) != 1 {
			t.Fatalf("%v with offloads refused: %T of kind %v, warnings %v", kind, d, d.Kind(), warned)
		}
		t.Logf("%v: refused as %v", kind, warned[0])
		d.Close()

		if _, err := OpenLink(Config{Name: "tvlink-name-far-too-long", Kind: kind, Offload: true}, warn); err == nil || len(warned) != 1 {
			t.Fatalf("%v with a bad name: err %v, warnings %v", kind, err, warned)
		}
	}
}
