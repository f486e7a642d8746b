//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestStandbyQueue checks Detach and Attach on a real two-queue device in
// a fresh namespace (root, and uid 65534 in a user namespace of its own),
// on io_uring and on Go's poller: a detached queue gets none of the
// kernel's packets (every flow goes to the other), its reader waits
// without an error, and once attached again it gets its share; Close
// ends a reader that waits detached.
func TestStandbyQueue(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		t.Run("ring", func(t *testing.T) { testStandby(t, WaitRing, 0) })
		t.Run("poller", func(t *testing.T) { testStandby(t, WaitPoller, 1) })
	})
}

func testStandby(t *testing.T, mode ReadWait, n int) {
	name := fmt.Sprintf("tvsb%d", n)
	d := openOrSkip(t, Config{Name: name, MTU: 1500, Up: true, Offload: true, Queues: 2, ReadWait: mode})
	od := d.(*OffloadDevice)
	qs := od.Queues()
	sb, ok := qs[1].(Standby)
	if !ok {
		t.Fatalf("queue %T is not a Standby", qs[1])
	}
	if err := sb.Detach(); err != nil {
		t.Fatal(err)
	}
	if sb.Attached() {
		t.Fatal("Attached after Detach")
	}
	prefix := fmt.Sprintf("10.88.%d.", n)
	setAddr(t, name, netip.MustParsePrefix(prefix+"1/24"))

	type got struct {
		queue int
		port  uint16
	}
	pkts := make(chan got, 1024)
	errs := make(chan error, 2)
	for i, q := range qs {
		go func() {
			arena := make([]byte, 256<<10)
			gp := make([]GSOPacket, 64)
			for {
				n, err := q.(GSODevice).ReadGSO(arena, 16, gp)
				if err != nil {
					errs <- fmt.Errorf("queue %d: %w", i, err)
					return
				}
				for _, p := range gp[:n] {
					if _, dst, _, ok := parseIPv4UDP(arena[p.Off : p.Off+p.Len]); ok && dst.Port() == 9 {
						pkts <- got{i, uint16(p.Len)}
					}
				}
			}
		}()
	}
	// flows sends a datagram from each of 32 sockets (32 flows) and
	// counts where they arrive.
	flows := func() [2]int {
		var per [2]int
		for range 32 {
			c, err := net.Dial("udp4", prefix+"2:9")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Write([]byte("standby"))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
		}
		timeout := time.After(readTimeout)
		for per[0]+per[1] < 32 {
			select {
			case g := <-pkts:
				per[g.queue]++
			case err := <-errs:
				t.Fatalf("a reader stopped: %v", err)
			case <-timeout:
				t.Fatalf("%d of 32 datagrams read", per[0]+per[1])
			}
		}
		return per
	}

	if per := flows(); per[1] != 0 {
		t.Errorf("detached queue read %d of 32 flows", per[1])
	}
	if err := sb.Attach(); err != nil {
		t.Fatal(err)
	}
	if per := flows(); per[1] == 0 || per[0] == 0 {
		t.Errorf("attached queues read %v of 32 flows: not spread", per)
	}
	// Detached while its reader waits in the poller or a round.
	if err := sb.Detach(); err != nil {
		t.Fatal(err)
	}
	if per := flows(); per[1] != 0 {
		t.Errorf("queue detached again read %d of 32 flows", per[1])
	}
	select {
	case err := <-errs:
		t.Fatalf("a reader stopped: %v", err)
	default:
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("reader ended with %v, want ErrClosed", err)
			}
		case <-time.After(readTimeout):
			t.Fatal("a reader still waits after Close")
		}
	}
	if err := sb.Attach(); !errors.Is(err, ErrClosed) {
		t.Errorf("Attach after Close: %v", err)
	}
}
