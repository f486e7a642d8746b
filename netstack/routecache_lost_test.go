package netstack

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/waitfor"
)

// A lost device's NIC is disabled (lost): the route by it, looked up and
// cached before, is no longer the way to its segment.
func TestRouteCacheFollowsLostNIC(t *testing.T) {
	h := New(Config{OnLinkLost: func(string, error, int) {}})
	defer h.Close()
	d := newFailingDev(syscall.ENODEV)
	n, err := h.AddNIC("a", d)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddAddress("a", netip.MustParsePrefix("10.9.0.1/24")); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddr("10.9.0.5")
	if m := h.EgressMTU(dst); m != 1500 {
		t.Fatalf("EgressMTU(%v) = %d, want 1500", dst, m)
	}
	d.fail.Store(true)
	for deadline := time.Now().Add(5 * time.Second); !n.Gone(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the NIC was not found gone")
		}
	}
	// Gone is set first (it makes lost run once), the routes are
	// changed just after: wait for them. Without the change the cached
	// route would stay for good.
	waitfor.Until(t, 5*time.Second, fmt.Sprintf("EgressMTU(%v) to be 0 after its NIC was lost", dst), func() bool { return h.EgressMTU(dst) == 0 })
}
