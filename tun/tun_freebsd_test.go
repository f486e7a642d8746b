//go:build freebsd

package tun

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The TUNSIFHEAD framing, over a datagram socket pair standing in for the
// device (one packet a read, as tun(4)): Write puts the address family
// from the version nibble ahead of the packet, Read takes it off, and a
// packet moves without allocating. Runs on FreeBSD only (make cross
// compiles and vets it elsewhere).
func TestBSDTunFraming(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	dev, peer := os.NewFile(uintptr(fds[0]), "dev"), os.NewFile(uintptr(fds[1]), "peer")
	defer dev.Close()
	defer peer.Close()
	d, err := newBSDTun(dev, "test0")
	if err != nil {
		t.Fatal(err)
	}
	v4 := []byte{0x45, 0, 0, 20, 1, 2, 3, 4}
	if _, err := d.Write(v4); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, err := peer.Read(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0, 0, 0, unix.AF_INET}, v4...); !bytes.Equal(got[:n], want) {
		t.Errorf("written %x, want %x", got[:n], want)
	}
	v6 := append([]byte{0, 0, 0, unix.AF_INET6}, 0x60, 0, 0, 0)
	if _, err := peer.Write(v6); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err = d.Read(buf); err != nil || !bytes.Equal(buf[:n], v6[4:]) {
		t.Errorf("read %x, %v; want %x", buf[:n], err, v6[4:])
	}
	if _, err := d.Write([]byte{0x15, 0}); err == nil {
		t.Error("a packet of IP version 1 was written")
	}
	if a := testing.AllocsPerRun(100, func() {
		d.Write(v4)
		peer.Read(got)
	}); a != 0 {
		t.Errorf("%v allocations a packet", a)
	}
}
