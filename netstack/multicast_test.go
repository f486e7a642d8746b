package netstack_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// TestMulticast: a datagram to 224.0.0.81 (and to an IPv6 group) sent out
// of one host's link reaches a listener that joined the group on the other
// host's, with the sender's link address as its source and TTL 1; the
// sender hears no copy of its own.
func TestMulticast(t *testing.T) {
	a := netstack.New(netstack.Config{})
	b := netstack.New(netstack.Config{})
	t.Cleanup(func() { a.Close(); b.Close() })
	da, db := tun.NewPair(tun.KindTUN, 1500)
	for _, h := range []struct {
		h    *netstack.Host
		dev  tun.Device
		addr []string
	}{{a, da, []string{"10.2.0.1/24", "fd02::1/64"}}, {b, db, []string{"10.2.0.2/24", "fd02::2/64"}}} {
		if _, err := h.h.AddNIC("sync0", h.dev); err != nil {
			t.Fatal(err)
		}
		for _, p := range h.addr {
			if err := h.h.AddAddress("sync0", netip.MustParsePrefix(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if mtu, err := a.LinkMTU("sync0"); err != nil || mtu != 1500 {
		t.Fatalf("mtu %d %v", mtu, err)
	}
	if _, err := a.LinkMTU("nope"); err == nil {
		t.Fatal("unknown link has an MTU")
	}
	for _, g := range []string{"224.0.0.81:8848", "[ff02::81]:8848"} {
		group := netip.MustParseAddrPort(g)
		l, err := b.MulticastListener("sync0", group)
		if err != nil {
			t.Fatal(err)
		}
		self, err := a.MulticastListener("sync0", group)
		if err != nil {
			t.Fatal(err)
		}
		w, err := a.MulticastSender("sync0", group, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("hello " + g)); err != nil {
			t.Fatal(err)
		}
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := l.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "hello "+g {
			t.Fatalf("%s: received %q from %v: %v", g, buf[:n], from, err)
		}
		if want := map[bool]string{true: "fd02::1", false: "10.2.0.1"}[group.Addr().Is6()]; netip.MustParseAddrPort(from.String()).Addr().String() != want {
			t.Errorf("%s: from %v, want %s", g, from, want)
		}
		self.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, _, err := self.ReadFrom(buf); err == nil {
			t.Errorf("%s: the sender heard itself: %q", g, buf[:n])
		}
		w.Close()
		l.Close()
		self.Close()
	}
}
