package netstack_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// peer is the far end of a link: it writes and reads raw frames.
type peer struct {
	t   *testing.T
	dev tun.Device
}

func (p peer) send(b []byte) {
	p.t.Helper()
	if _, err := p.dev.Write([][]byte{append([]byte(nil), b...)}, 0); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next frame matching f, within a second.
func (p peer) recv(f func([]byte) bool) []byte {
	p.t.Helper()
	ch := make(chan []byte, 1)
	go func() {
		bufs := [][]byte{make([]byte, 2048)}
		sizes := []int{0}
		for {
			n, err := p.dev.Read(bufs, sizes, 0)
			if err != nil {
				close(ch)
				return
			}
			if n > 0 && f(bufs[0][:sizes[0]]) {
				ch <- append([]byte(nil), bufs[0][:sizes[0]]...)
				return
			}
		}
	}()
	select {
	case b, ok := <-ch:
		if !ok {
			p.t.Fatal("device closed")
		}
		return b
	case <-time.After(2 * time.Second):
		p.t.Fatal("no matching packet")
	}
	return nil
}

// director: NIC "c" to the client on a TUN pair, NIC "r" to the servers.
func director(t *testing.T, kind tun.Kind, bypass bool) (*netstack.Host, peer, peer, *nat.Table) {
	tb := nat.New(nat.Config{})
	h := netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: bypass})
	t.Cleanup(func() { h.Close() })
	ca, cb := tun.NewPair(kind, 1500)
	ra, rb := tun.NewPair(kind, 1500)
	for _, l := range []struct {
		name string
		dev  tun.Device
		addr []string
	}{
		{"c", ca, []string{"10.0.0.1/24", "172.16.1.100/32", "fd00:1::1/64"}},
		{"r", ra, []string{"172.16.1.3/24", "fd00:2::3/64"}},
	} {
		if _, err := h.AddNIC(l.name, l.dev); err != nil {
			t.Fatal(err)
		}
		for _, a := range l.addr {
			if err := h.AddAddress(l.name, netip.MustParsePrefix(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tb.AddService(nat.ServiceConfig{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80, Scheduler: "rr"})
	tb.AddDest(nat.ServiceKey{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80}, nat.DestConfig{Addr: netip.MustParseAddr("172.16.1.5"), Port: 8080, Weight: 1})
	return h, peer{t, cb}, peer{t, rb}, tb
}

func isICMP4(typ byte) func([]byte) bool {
	return func(b []byte) bool { return len(b) > 20 && b[0]>>4 == 4 && b[9] == 1 && b[20] == typ }
}

func TestPingDIPAndVIP(t *testing.T) {
	_, c, _, _ := director(t, tun.KindTUN, true)
	cli := netip.MustParseAddr("10.0.0.10")
	for _, dst := range []string{"10.0.0.1", "172.16.1.100", "172.16.1.3"} {
		c.send(nattest.Echo(cli, netip.MustParseAddr(dst), 64))
		r := c.recv(isICMP4(0))
		if got := netip.AddrFrom4([4]byte(r[12:16])); got.String() != dst {
			t.Errorf("echo reply from %v, want %s", got, dst)
		}
	}
	c.send(nattest.Echo(netip.MustParseAddr("fd00:1::10"), netip.MustParseAddr("fd00:1::1"), 64))
	c.recv(func(b []byte) bool { return len(b) > 40 && b[0]>>4 == 6 && b[6] == 58 && b[40] == 129 })
}

// A packet routed through the director (not to a service) has its TTL
// decremented; one arriving with TTL 1 gets a time exceeded.
func TestForwardingTTL(t *testing.T) {
	_, c, r, _ := director(t, tun.KindTUN, true)
	cli, srv := netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("172.16.1.9")
	c.send(nattest.Echo(cli, srv, 64))
	got := r.recv(isICMP4(8))
	if got[8] != 63 {
		t.Errorf("forwarded TTL %d, want 63", got[8])
	}
	c.send(nattest.Echo(cli, srv, 1))
	te := c.recv(isICMP4(11))
	if netip.AddrFrom4([4]byte(te[16:20])) != cli {
		t.Error("time exceeded not sent to the client")
	}
}

// A service connection end to end at the packet level, with and without
// the bypass: DNAT towards the server, SNAT back.
func TestNATThroughHost(t *testing.T) {
	for _, bypass := range []bool{true, false} {
		_, c, r, tb := director(t, tun.KindTUN, bypass)
		cli := nattest.AP("10.0.0.10:40000")
		vip := nattest.AP("172.16.1.100:80")
		rip := nattest.AP("172.16.1.5:8080")
		c.send(nattest.TCP(cli, vip, nattest.SYN, 0))
		isTCP := func(b []byte) bool { return len(b) >= 40 && b[0]>>4 == 4 && b[9] == 6 }
		syn := r.recv(isTCP)
		if netip.AddrFrom4([4]byte(syn[16:20])) != rip.Addr() || binary.BigEndian.Uint16(syn[22:]) != 8080 {
			t.Fatalf("bypass=%v: SYN went to %v:%d", bypass, netip.AddrFrom4([4]byte(syn[16:20])), binary.BigEndian.Uint16(syn[22:]))
		}
		r.send(nattest.TCP(rip, cli, nattest.SYN|nattest.ACK, 0))
		sa := c.recv(isTCP)
		if netip.AddrFrom4([4]byte(sa[12:16])) != vip.Addr() || binary.BigEndian.Uint16(sa[20:]) != 80 || sa[8] != 63 {
			t.Fatalf("bypass=%v: SYN-ACK from %v:%d ttl %d", bypass, netip.AddrFrom4([4]byte(sa[12:16])), binary.BigEndian.Uint16(sa[20:]), sa[8])
		}
		if tb.Len() != 1 {
			t.Errorf("%d connections", tb.Len())
		}
	}
}

// No server available: the client gets a port unreachable, as from IPVS.
func TestNoDestUnreachable(t *testing.T) {
	_, c, _, tb := director(t, tun.KindTUN, true)
	tb.EditDest(nat.ServiceKey{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80}, nat.DestConfig{Addr: netip.MustParseAddr("172.16.1.5"), Port: 8080, Weight: 0})
	c.send(nattest.TCP(nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.SYN, 0))
	u := c.recv(isICMP4(3))
	if u[21] != 3 {
		t.Errorf("ICMP code %d, want 3 (port unreachable)", u[21])
	}
}

// On a TAP the director answers ARP for the DIP and the VIP and neighbour
// solicitations for its IPv6 addresses.
func TestTAPNeighbours(t *testing.T) {
	h, c, _, _ := director(t, tun.KindTAP, false)
	n, _ := h.NICByName("c")
	mac := []byte{0x02, 0, 0, 0, 0, 0x10}
	for _, target := range []string{"10.0.0.1", "172.16.1.100"} {
		f := make([]byte, 42)
		copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(f[6:12], mac)
		binary.BigEndian.PutUint16(f[12:], 0x0806)
		a := f[14:]
		binary.BigEndian.PutUint16(a[0:], 1)
		binary.BigEndian.PutUint16(a[2:], 0x0800)
		a[4], a[5] = 6, 4
		binary.BigEndian.PutUint16(a[6:], 1) // request
		copy(a[8:14], mac)
		copy(a[14:18], []byte{10, 0, 0, 10})
		tgt := netip.MustParseAddr(target).As4()
		copy(a[24:28], tgt[:])
		c.send(f)
		reply := c.recv(func(b []byte) bool {
			return len(b) >= 42 && binary.BigEndian.Uint16(b[12:]) == 0x0806 && binary.BigEndian.Uint16(b[20:]) == 2
		})
		if !bytes.Equal(reply[22:28], []byte(n.MAC())) || !bytes.Equal(reply[28:32], tgt[:]) {
			t.Errorf("ARP reply for %s: %x", target, reply[14:42])
		}
	}
	// Neighbour solicitation for fd00:1::1.
	target := netip.MustParseAddr("fd00:1::1").As16()
	src := netip.MustParseAddr("fd00:1::10").As16()
	snm := [16]byte{0xff, 0x02, 15: 0}
	snm[11], snm[12], snm[13], snm[14], snm[15] = 1, 0xff, target[13], target[14], target[15]
	f := make([]byte, 14+40+32)
	copy(f[0:6], []byte{0x33, 0x33, 0xff, target[13], target[14], target[15]})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 32)
	ip[6], ip[7] = 58, 255
	copy(ip[8:24], src[:])
	copy(ip[24:40], snm[:])
	m := ip[40:]
	m[0] = 135
	copy(m[8:24], target[:])
	m[24], m[25] = 1, 1 // source link-layer address option
	copy(m[26:32], mac)
	binary.BigEndian.PutUint16(m[2:], nattest.Checksum(m, nattest.PseudoSum(ip[8:24], ip[24:40], 58, len(m))))
	c.send(f)
	na := c.recv(func(b []byte) bool {
		return len(b) >= 14+40+24 && binary.BigEndian.Uint16(b[12:]) == 0x86dd && b[14+6] == 58 && b[14+40] == 136
	})
	if !bytes.Equal(na[14+40+8:14+40+24], target[:]) {
		t.Errorf("neighbour advertisement for the wrong target: %x", na[14+40+8:14+40+24])
	}
}
