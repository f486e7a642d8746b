//go:build linux

package tun

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestQueueSteering checks, on a real two-queue device, what netstack's
// bypass relies on when it writes a packet back out of the device it came
// from by the other queue: the kernel sends a flow's packets to the queue
// that last wrote packets of that flow, in either direction
// (tun_flow_update and tun_automq_select_queue in drivers/net/tun.c, with
// the symmetric hash). Sixteen flows are written, alternately by each
// queue; every reply must come back on the queue its flow was written by
// (by the hash alone, all sixteen would be a 1 in 65536 chance).
func TestQueueSteering(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	d := openOrSkip(t, Config{Name: "tvsteer%d", MTU: 1500, Up: true, Offload: true, Queues: 2})
	qs := d.(*OffloadDevice).Queues()
	setAddr(t, d.Name(), netip.MustParsePrefix("10.77.0.1/24"))
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The echo: what arrives goes back to its sender.
	go func() {
		b := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			conn.WriteToUDPAddrPort(b[:n], from)
		}
	}()
	type got struct {
		queue int
		dst   netip.AddrPort
	}
	replies := make(chan got, 64)
	readQueues(qs, func(i int, p []byte) {
		if _, dst, _, ok := parseIPv4UDP(p); ok {
			replies <- got{i, dst}
		}
	})
	const flows = 16
	server := netip.MustParseAddrPort("10.77.0.1:7")
	for i := range flows {
		peer := netip.AddrPortFrom(netip.MustParseAddr("10.77.0.2"), uint16(20000+i))
		p := ipv4UDP(peer, server, []byte(fmt.Sprint("flow ", i)))
		if _, err := qs[i%2].Write([][]byte{append(make([]byte, 16), p...)}, 16); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-replies:
			if g.dst != peer {
				t.Fatalf("flow %d: a reply to %v", i, g.dst)
			}
			if g.queue != i%2 {
				t.Errorf("flow %d, written by queue %d: its reply came on queue %d", i, i%2, g.queue)
			}
		case <-time.After(readTimeout):
			t.Fatalf("flow %d: no reply within %v", i, readTimeout)
		}
	}
}

// TestQueuesAppearTogether opens a new device with four queues: its name
// must not exist until every queue is attached (a device moved to another
// namespace as soon as it appears would leave the later queues to make a
// device of their own), and afterwards every queue must be on it, with no
// temporary device left behind.
func TestQueuesAppearTogether(t *testing.T) {
	if !inSandbox(t) {
		return
	}
	const name = "tvtogether"
	var early []int
	queueAttached = func(i int) {
		if ok, err := linkExists(name); err != nil || ok {
			early = append(early, i)
		}
	}
	defer func() { queueAttached = nil }()
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true, Queues: 4})
	if len(early) != 0 {
		t.Errorf("%s existed while its queues were being attached (after queues %v)", name, early)
	}
	qs := d.(*OffloadDevice).Queues()
	if len(qs) != 4 {
		t.Fatalf("%d queues", len(qs))
	}
	for i, q := range d.(*OffloadDevice).queues {
		var got string
		err := q.rc.Control(func(fd uintptr) {
			ifr, err := unix.NewIfreq("")
			if err == nil {
				err = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
			}
			if err != nil {
				t.Errorf("queue %d: TUNGETIFF: %v", i, err)
			}
			got = ifr.Name()
		})
		if err != nil || got != name {
			t.Errorf("queue %d is on %q (%v), want %q", i, got, err, name)
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if strings.HasPrefix(ifc.Name, "tvq") {
			t.Errorf("temporary device %s left behind", ifc.Name)
		}
	}
	// Attaching to a device that exists goes by its own name.
	if n, staged, err := stagedName(name, 2); err != nil || staged || n != name {
		t.Errorf("stagedName of an existing device = %q, %v, %v", n, staged, err)
	}
}
