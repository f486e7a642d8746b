package netstack_test

import (
	"cmp"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// replayGSO is a tun.GSODevice that allocates nothing per packet: each
// kick makes ReadGSO hand out pkt (with g) once more, and each write
// is signalled on wrote. pkt and g are set between rounds only (the
// channel operations order them). kind is KindTUN unless set; with out
// set, the last packet of each write is copied there (outLen bytes) and
// its offload state kept in outG, before wrote is signalled. With frames
// set, each packet written is sent there as a copy instead, and wrote is
// not signalled (for writes the stack makes on its own, which may come
// in any number).
type replayGSO struct {
	frames chan []byte
	name   string
	kind   tun.Kind
	pkt    []byte
	g      tun.GSO
	kick   chan struct{}
	wrote  chan int
	done   chan struct{}
	out    []byte
	outLen int
	outG   tun.GSO
	mtu    int // 0: 1500
	// batch, when set, is what a kick makes ReadGSO hand out instead
	// of pkt: every frame of it in one read, as a device read of a
	// busy queue does.
	batch [][]byte
}

func newReplayGSO(name string) *replayGSO {
	return &replayGSO{name: name, kick: make(chan struct{}), wrote: make(chan int, 16), done: make(chan struct{})}
}

func (d *replayGSO) ReadGSO(arena []byte, headroom int, pkts []tun.GSOPacket) (int, error) {
	select {
	case <-d.kick:
	case <-d.done:
		return 0, tun.ErrClosed
	}
	off := max(headroom, 10)
	if d.batch != nil {
		// Laid out as a device read lays out a batch: each frame
		// in a slot of at least tun.SmallSlot, the headroom in
		// front of the next.
		for i, f := range d.batch {
			pkts[i] = tun.GSOPacket{Off: off, Len: copy(arena[off:], f)}
			off = (off + max(len(f), tun.SmallSlot) + headroom + 7) &^ 7
		}
		return len(d.batch), nil
	}
	pkts[0] = tun.GSOPacket{Off: off, Len: copy(arena[off:], d.pkt), GSO: d.g}
	return 1, nil
}

func (d *replayGSO) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-d.done
	return 0, tun.ErrClosed
}

func (d *replayGSO) WriteGSO(bufs [][]byte, gso []tun.GSO, offset int) (int, error) {
	if d.frames != nil {
		return d.Write(bufs, offset)
	}
	if d.out != nil && len(bufs) > 0 {
		d.outLen = copy(d.out, bufs[len(bufs)-1][offset:])
		d.outG = gso[len(bufs)-1]
	}
	d.wrote <- len(bufs)
	return len(bufs), nil
}

func (d *replayGSO) Write(bufs [][]byte, offset int) (int, error) {
	if d.frames != nil {
		for _, b := range bufs {
			d.frames <- append([]byte(nil), b[offset:]...)
		}
		return len(bufs), nil
	}
	if d.out != nil && len(bufs) > 0 {
		d.outLen = copy(d.out, bufs[len(bufs)-1][offset:])
		d.outG = tun.GSO{}
	}
	d.wrote <- len(bufs)
	return len(bufs), nil
}

func (d *replayGSO) BatchSize() int { return 128 }
func (d *replayGSO) Headroom() int  { return 10 }
func (d *replayGSO) MTU() int       { return cmp.Or(d.mtu, 1500) }
func (d *replayGSO) Kind() tun.Kind { return max(d.kind, tun.KindTUN) }
func (d *replayGSO) Name() string   { return d.name }
func (d *replayGSO) Close() error {
	select {
	case <-d.done:
	default:
		close(d.done)
	}
	return nil
}

// TestBypassAllocatesNothing sends super-packets of an established flow
// through a director, read whole from one device, NATed and written whole
// to the other by the bypass, and checks that the round allocates nothing
// anywhere in the process (AllocsPerRun counts every goroutine's).
func TestBypassAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	h = netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: true})
	defer h.Close()
	cli, rs := newReplayGSO("client"), newReplayGSO("rs")
	for _, l := range []struct {
		name string
		dev  tun.Device
		addr string
	}{{"client", cli, "10.0.0.1/24"}, {"rs", rs, "172.16.1.3/24"}} {
		if _, err := h.AddNIC(l.name, l.dev); err != nil {
			t.Fatal(err)
		}
		if err := h.AddAddress(l.name, netip.MustParsePrefix(l.addr)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.AddAddress("client", netip.MustParsePrefix(gVIP.Addr().String()+"/32")); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}, nat.DestConfig{Addr: gRS.Addr(), Port: gRS.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	// Plain channel operations: a timer would allocate. A hang is the
	// test binary's timeout.
	round := func() {
		cli.kick <- struct{}{}
		<-rs.wrote
	}
	syn := ordinary(gCli, gVIP, nattest.SYN, 100, nil)
	cli.pkt, cli.g = syn.pkt, syn.g
	round()
	sp := superPkt(gCli, gVIP, 101, 40, 1400)
	cli.pkt, cli.g = sp.pkt, sp.g
	round() // warm up: the egress is cached on the first packet
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("a super-packet through the bypass allocates %.2f times, want 0", allocs)
	}
	if fp := h.Counters.FastPath.Load(); fp < 200 {
		t.Errorf("FastPath %d, want every round bypassed", fp)
	}
}
