package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// bulkPort is the port of the bulk service the tests and benchmarks add
// to the lab: the VIP's and the real servers'.
const bulkPort = 5001

// bulkRules are the article's rules for port 80 and the same service on
// bulkPort (one real server each).
func bulkRules(t testing.TB) []admin.Command {
	t.Helper()
	var lines []string
	for _, port := range []int{80, bulkPort} {
		lines = append(lines, fmt.Sprintf("-A -t %s:%d -s rr", VIP, port),
			fmt.Sprintf("-a -t %s:%d -r %s:%d -m", VIP, port, RealServerAddr(0), port))
	}
	cmds, err := admin.ParseRules(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return cmds
}

// bulkLab is the in-process lab with one real server that also swallows
// whatever is sent to it on bulkPort, telling each connection's total on
// got.
func bulkLab(t testing.TB, cfg Config) (l *Lab, got <-chan int64) {
	t.Helper()
	cfg.Servers, cfg.Rules = 1, bulkRules(t)
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ln, err := l.Servers[0].ListenTCP(netip.AddrPortFrom(RealServerAddr(0), bulkPort))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan int64, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			ch <- n
		}
	}()
	return l, ch
}

// sendBulk sends n chunks of size bytes from the lab's client to the VIP's
// bulk service on one connection and waits until the real server has them
// all.
func sendBulk(t testing.TB, l *Lab, got <-chan int64, n, size int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := l.Client.DialTCP(ctx, netip.AddrPortFrom(VIP, bulkPort))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	for range n {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case total := <-got:
		if want := int64(n) * int64(size); total != want {
			t.Fatalf("the real server got %d bytes, want %d", total, want)
		}
	case <-ctx.Done():
		t.Fatal("the real server did not get everything in time")
	}
	c.Close()
}

// What `tunvs lab` runs (the zero Config) takes the bypass, as `tunvs run`
// does: after the first packets of the first connection, while the
// director's stack resolves the client's and the real server's MACs on
// the lab's Ethernet segments, every packet of the bulk transfer and of
// the HTTP requests skips the stack. With NoBypass (--bypass=false) none
// does.
func TestLabTakesBypass(t *testing.T) {
	for _, noBypass := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoBypass=%v", noBypass), func(t *testing.T) {
			l, got := bulkLab(t, Config{NoBypass: noBypass})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for range 3 {
				if body, err := l.Get(ctx); err != nil || body != RealServerName(0) {
					t.Fatalf("GET: %q, %v", body, err)
				}
			}
			sendBulk(t, l, got, 64, 64<<10) // 4 MiB
			// The hosts' windows fit the switch ports' rings: a bulk
			// transfer loses nothing there (hostRcvBuf).
			for i, sw := range l.switches {
				if st := sw.Stats(); st.Dropped() != 0 {
					t.Errorf("switch %d dropped frames: %+v", i, st)
				}
			}
			c := &l.Director.Host.Counters
			fast, delivered := c.FastPath.Load(), c.Delivered.Load()
			t.Logf("bypassed: %d, through the stack: %d", fast, delivered)
			switch {
			case noBypass && fast != 0:
				t.Errorf("%d packets bypassed with NoBypass, want none", fast)
			case !noBypass && (fast == 0 || delivered > fast/10):
				t.Errorf("%d packets bypassed and %d through the stack: want the established flows on the bypass", fast, delivered)
			}
		})
	}
}

// The bypass as the in-process lab has it, between the ports of two
// tun.Switch segments (in-memory TAP devices, no offloads): a packet of an
// established connection read from the client's segment, NATed and written
// to the real server's, with its Ethernet header rewritten, allocates
// nothing. Raw ports stand in for the client and the real server, so that
// only the director and the switches run (the lab's gVisor hosts allocate
// for every packet they receive).
func TestLabBypassAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	clientNet, labNet := tun.NewSwitch(), tun.NewSwitch()
	defer clientNet.Close()
	defer labNet.Close()
	rs := netip.MustParseAddr("172.16.1.50")
	cmds, err := admin.ParseRules(strings.NewReader(fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r %s:80 -m", VIP, VIP, rs)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDirector(Config{MTU: 1500}, cmds, clientNet, labNet)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cliPort, rsPort := clientNet.Port("client", 1500), labNet.Port("rs", 1500)
	cliMAC := [6]byte{0x02, 0, 0, 0, 0, 0x10}
	rsMAC := [6]byte{0x02, 0, 0, 0, 0, 0x50}
	eth0, err := d.Host.NICByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	eth1, err := d.Host.NICByName("eth1")
	if err != nil {
		t.Fatal(err)
	}
	// The real server's MAC as ARP would have given it; the switch
	// learns its port from a first frame, so the director's frames to it
	// go to that port alone.
	if err := d.Host.Stack().AddStaticNeighbor(nicID(t, d.Host, "eth1"), ipv4.ProtocolNumber, tcpip.AddrFrom4(rs.As4()), tcpip.LinkAddress(rsMAC[:])); err != nil {
		t.Fatal(err)
	}
	hello := ethFrame([6]byte{0x02, 0, 0, 0, 0, 0xff}, rsMAC, nattest.Echo(rs, DIP.Addr(), 64))
	if _, err := rsPort.Write([][]byte{hello}, 0); err != nil {
		t.Fatal(err)
	}

	cli := netip.AddrPortFrom(ClientAddr.Addr(), 40000)
	vip := netip.AddrPortFrom(VIP, 80)
	dirMAC := [6]byte([]byte(eth0.MAC()))
	syn := ethFrame(dirMAC, cliMAC, nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.SYN, Seq: 100, DF: true}))
	data := ethFrame(dirMAC, cliMAC, nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.ACK | nattest.PSH, Seq: 101, Ack: 1, Payload: make([]byte, 1400), DF: true}))
	in := [][]byte{nil}
	out, sizes := [][]byte{make([]byte, 1600)}, []int{0}
	// round sends frame from the client and reads the real server's port
	// until the NATed packet is there (the director's stack may send
	// frames of its own).
	round := func(frame []byte) {
		in[0] = frame
		if _, err := cliPort.Write(in, 0); err != nil {
			panic(err)
		}
		for {
			if _, err := rsPort.Read(out, sizes, 0); err != nil {
				panic(err)
			}
			f := out[0][:sizes[0]]
			if len(f) > 34 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && bytes.Equal(f[30:34], rs.AsSlice()) {
				return
			}
		}
	}
	round(syn)
	// The hop is cached on the connection's first packets; a switch
	// port's receive ring allocates each of its 256 slots on first use
	// (tun.queue), then reuses them: steady state is what is measured.
	for range 600 {
		round(data)
	}
	fp := d.Host.Counters.FastPath.Load()
	if allocs := testing.AllocsPerRun(300, func() { round(data) }); allocs != 0 {
		t.Errorf("a packet through the bypass over tun.Switch allocates %.2f times, want 0", allocs)
	}
	if got := d.Host.Counters.FastPath.Load() - fp; got < 300 {
		t.Errorf("FastPath grew by %d, want every round bypassed", got)
	}
	if f := out[0][:sizes[0]]; !bytes.Equal(f[0:6], rsMAC[:]) || !bytes.Equal(f[6:12], []byte(eth1.MAC())) {
		t.Errorf("written from %x to %x, want from the director's eth1 %x to the real server %x", f[6:12], f[0:6], []byte(eth1.MAC()), rsMAC)
	}
}

// nicID is the stack's id of h's NIC called name.
func nicID(t *testing.T, h *netstack.Host, name string) tcpip.NICID {
	t.Helper()
	for id, info := range h.Stack().NICInfo() {
		if info.Name == name {
			return id
		}
	}
	t.Fatalf("no NIC %q", name)
	return 0
}

// ethFrame is pkt (IPv4) in an Ethernet frame from src to dst.
func ethFrame(dst, src [6]byte, pkt []byte) []byte {
	f := make([]byte, 14, 14+len(pkt))
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	return append(f, pkt...)
}
