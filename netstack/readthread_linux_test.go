//go:build linux

package netstack_test

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// The NIC's readers on a device opened with tun.Config.ReadWait WaitThread (each
// asleep in ppoll on its own locked thread) deliver what the kernel sends
// to the stack, and Host.Close stops them: their goroutines return and
// their threads end. On real TUN devices in a fresh namespace, made by
// root and by uid 65534.
func TestReadThreadReaders(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		readThreadReaders(t, netns.NewTopology(t, true))
	})
}

func readThreadReaders(t *testing.T, topo *netns.Topology) {
	base := runtime.NumGoroutine()
	h := netstack.New(netstack.Config{})
	closed := false
	defer func() {
		if !closed {
			h.Close()
		}
	}()
	const name = "tvrt0"
	dev, err := tun.Open(tun.Config{Name: name, MTU: 1500, Up: true, Offload: true, Queues: 2, ReadWait: tun.WaitThread})
	if err != nil {
		t.Fatal(err)
	}
	od, ok := dev.(*tun.OffloadDevice)
	if !ok {
		dev.Close()
		t.Fatalf("offload device is a %T", dev)
	}
	if _, err := h.AddNIC(name, dev); err != nil {
		dev.Close()
		t.Fatal(err)
	}
	if err := h.AddAddress(name, netip.MustParsePrefix("10.84.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := topo.Root().AddAddr(name, "10.84.0.1/24"); err != nil {
		t.Fatal(err)
	}
	type threadID interface{ ReadThreadID() int }
	var tids []int
	for i, q := range od.Queues() {
		waitfor.Until(t, 5*time.Second, fmt.Sprintf("queue %d's reader to wait in ppoll", i), func() bool { return q.(threadID).ReadThreadID() != 0 })
		tids = append(tids, q.(threadID).ReadThreadID())
	}
	if tids[0] == tids[1] {
		t.Fatalf("both readers on thread %d", tids[0])
	}
	// Datagrams of sixteen flows to the stack's address (it answers
	// port unreachable): over both queues, each read after a wait.
	before := h.Counters.Delivered.Load()
	for round := range 3 {
		time.Sleep(10 * time.Millisecond)
		for i := range 16 {
			c, err := net.Dial("udp4", fmt.Sprintf("10.84.0.2:%d", 2000+i))
			if err != nil {
				t.Fatal(err)
			}
			_, err = fmt.Fprintf(c, "round %d", round)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	waitfor.Until(t, 5*time.Second, "48 datagrams delivered", func() bool { return h.Counters.Delivered.Load()-before >= 48 })
	if st := od.Stats(); st.ReadWaits == 0 || h.ReadWaits() < st.ReadWaits {
		t.Errorf("waits: device %d, host %d (%+v)", st.ReadWaits, h.ReadWaits(), st)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	// Close waited for the readers: their threads end with them (but
	// the main thread, which the runtime never ends and the process has
	// anyway).
	waitfor.Until(t, 5*time.Second, "the reader threads to end", func() bool {
		for _, id := range tids {
			if id == os.Getpid() {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", id)); err == nil {
				return false
			}
		}
		return true
	})
	waitfor.Until(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", base), func() bool { return runtime.NumGoroutine() <= base })
}
