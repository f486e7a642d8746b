//go:build linux

package netstack_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// TestEstablishedReroutes is TestEstablishedFollowsRouteChange on real
// devices and kernel TCP, as root and as uid 65534: a client and a real
// server in namespaces of their own, on TUN devices of a director; the
// real server on two links, A and B. A connection is made through the
// director by A; the director's route to the real server is then replaced
// by a more specific one by B, and the connection's next packets must
// reach the real server by B, counted by its kernel on each link.
func TestEstablishedReroutes(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		establishedReroutes(t, netns.NewTopology(t, true))
	})
}

// tunDirector is a director on real TUN devices in the sandbox's first
// namespace, its NAT with one TCP service vip -> rsAddr and the bypass
// on: a client host on link tvrrc, a real server host on two links, A
// (tvrra, its address rsAddr) and B (tvrrb), with an echo server.
type tunDirector struct {
	h           *netstack.Host
	client, rs  *netns.Host
	vip, rsAddr netip.AddrPort
}

func newTUNDirector(t *testing.T, topo *netns.Topology) *tunDirector {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	client, err := topo.AddHost("client")
	must(err)
	rs, err := topo.AddHost("rs")
	must(err)
	// No IPv6 on the hosts' links: their router solicitations would
	// reach the director's stack, which TestShortConnectionsBypassed
	// counts.
	for _, host := range []*netns.Host{client, rs} {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			must(host.Sysctl(k, "1"))
		}
	}

	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	h = netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: true})
	t.Cleanup(func() { h.Close() })
	d := &tunDirector{h: h, client: client, rs: rs,
		vip: netip.MustParseAddrPort("10.85.9.100:80"), rsAddr: netip.MustParseAddrPort("10.86.0.10:8080")}
	links := []struct {
		dev, addr string
		to        *netns.Host
		peer      string
	}{
		{"tvrrc", "10.85.0.1/24", client, "10.85.0.2/24"},
		{"tvrra", "10.86.0.1/24", rs, d.rsAddr.Addr().String() + "/24"},
		{"tvrrb", "10.87.0.1/24", rs, "10.87.0.10/24"},
	}
	for _, l := range links {
		dev, err := tun.Open(tun.Config{Name: l.dev, MTU: 1500, Up: true, Offload: true})
		must(err)
		if _, err := h.AddNIC(l.dev, dev); err != nil {
			dev.Close()
			t.Fatal(err)
		}
		must(h.AddAddress(l.dev, netip.MustParsePrefix(l.addr)))
		must(topo.Root().MoveLink(l.dev, l.to))
		must(l.to.AddAddr(l.dev, l.peer))
		must(l.to.LinkUp(l.dev))
	}
	must(h.AddAddress("tvrrc", netip.PrefixFrom(d.vip.Addr(), 32)))
	must(client.AddRoute("default", "dev", "tvrrc"))
	// The real server answers by A whatever link a packet came in by,
	// and takes on B what is for its address on A (no reverse-path
	// filter: the kernel's default in a new namespace, made sure of).
	must(rs.AddRoute("default", "dev", "tvrra"))
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.tvrrb.rp_filter"} {
		must(rs.Sysctl(k, "0"))
	}
	k := nat.ServiceKey{Proto: nat.ProtoTCP, Addr: d.vip.Addr(), Port: d.vip.Port()}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: k.Proto, Addr: k.Addr, Port: k.Port, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: d.rsAddr.Addr(), Port: d.rsAddr.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	ln, err := rs.ListenEcho("tcp4", d.rsAddr.String())
	must(err)
	t.Cleanup(func() { ln.Close() })
	return d
}

// dial is a connection from the client to the VIP.
func (d *tunDirector) dial(t *testing.T) net.Conn {
	t.Helper()
	var conn net.Conn
	if err := d.client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", d.vip.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return conn
}

func establishedReroutes(t *testing.T, topo *netns.Topology) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	d := newTUNDirector(t, topo)
	h, rs, rsAddr := d.h, d.rs, d.rsAddr
	conn := d.dial(t)
	defer conn.Close()
	rd := bufio.NewReader(conn)
	// echo sends n lines, each after the echo of the one before (so that
	// each is a packet of its own), and reads them back.
	echo := func(what string, n int) {
		t.Helper()
		must(conn.SetDeadline(time.Now().Add(10 * time.Second)))
		for i := range n {
			line := fmt.Sprintf("%s %d\n", what, i)
			if _, err := io.WriteString(conn, line); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got, err := rd.ReadString('\n')
			if err != nil || got != line {
				t.Fatalf("%s: echo %q, %v; want %q", what, got, err, line)
			}
		}
	}
	echo("by A", 3)
	a0, b0 := rxPackets(t, rs, "tvrra"), rxPackets(t, rs, "tvrrb")

	const lines = 20
	must(h.AddRoute(netip.PrefixFrom(rsAddr.Addr(), 32), netip.Addr{}, "tvrrb"))
	echo("by B", lines)
	a1, b1 := rxPackets(t, rs, "tvrra"), rxPackets(t, rs, "tvrrb")
	t.Logf("the real server received %d packets by A and %d by B after the route change", a1-a0, b1-b0)
	// The client's ACKs of the echoes may be delayed and ride on the
	// next line: at least a packet a line by B. By A: nothing of the
	// connection (a stray packet of the director's own stack allowed).
	if b1-b0 < lines || a1-a0 > 2 {
		t.Fatalf("after the route change the real server received %d packets by A and %d by B; want none by A, %d or more by B", a1-a0, b1-b0, lines)
	}
	if fp := h.Counters.FastPath.Load(); fp < 2*lines {
		t.Errorf("FastPath %d: the connection's packets did not take the bypass", fp)
	}
}

// TestShortConnectionsBypassed checks which packets of a short
// connection the bypass carries: all of them. Through a director on real
// TUN devices, as root and as uid 65534, kernel TCP at both ends makes
// connections that each send a line, read its echo and close (SYN,
// SYN-ACK, the handshake's ACK, the data, both FINs and the last ACK);
// none reaches the director's stack (tunvs_host_delivered_total), each
// leaves by the bypass (tunvs_host_fast_path_total).
func TestShortConnectionsBypassed(t *testing.T) {
	netns.InSandboxes(t, func(t *testing.T) {
		shortConnectionsBypassed(t, netns.NewTopology(t, true))
	})
}

func shortConnectionsBypassed(t *testing.T, topo *netns.Topology) {
	d := newTUNDirector(t, topo)
	h := d.h
	del0, fp0 := h.Counters.Delivered.Load(), h.Counters.FastPath.Load()
	const conns = 5
	var ports []netip.AddrPort
	for i := range conns {
		c := d.dial(t)
		ports = append(ports, netip.MustParseAddrPort(c.LocalAddr().String()))
		line := fmt.Sprintf("connection %d\n", i)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("echo %q, %v; want %q", got, err, line)
		}
		c.Close()
	}
	// The client closed first: its last ACK puts the director's entry
	// in TIME_WAIT, as the kernel's IPVS state table does.
	waitfor.Until(t, 10*time.Second, "every connection in TIME_WAIT", func() bool {
		for _, p := range ports {
			c, _ := h.NAT().Lookup(nat.ProtoTCP, p, d.vip)
			if c == nil || c.State() != nat.StateTimeWait {
				return false
			}
		}
		return true
	})
	del, fp := h.Counters.Delivered.Load()-del0, h.Counters.FastPath.Load()-fp0
	t.Logf("%d connections: %d packets by the bypass, %d to the stack", conns, fp, del)
	if del != 0 || fp < 8*conns {
		t.Fatalf("%d connections: %d packets to the stack, %d by the bypass; want none and at least %d", conns, del, fp, 8*conns)
	}
}

// rxPackets is the number of packets host's kernel received on dev.
func rxPackets(t *testing.T, host *netns.Host, dev string) uint64 {
	t.Helper()
	l, err := host.LinkStats(dev)
	if err != nil {
		t.Fatal(err)
	}
	return l.RX.Packets
}
