package netstack_test

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// sourceReplay is a replay device that gives out writers of its own
// (tun.WriterSource), which count their writes.
type sourceReplay struct {
	*replayGSO
	made, writes atomic.Int32
}

func (d *sourceReplay) NewWriter() (tun.GSOWriter, error) {
	d.made.Add(1)
	return countingWriter{d}, nil
}

type countingWriter struct{ d *sourceReplay }

func (w countingWriter) WriteGSO(bufs [][]byte, gso []tun.GSO, offset int) (int, error) {
	w.d.writes.Add(1)
	return w.d.replayGSO.WriteGSO(bufs, gso, offset)
}

// The bypass writes to a device that gives out writers (tun.WriterSource)
// through a writer of the reader's own, made once and kept, rather than
// through the device under the queue's lock.
func TestBypassWritesByOwnWriter(t *testing.T) {
	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	h = netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: true})
	t.Cleanup(func() { h.Close() })
	cli, rs := newReplayGSO("client"), newReplayGSO("rs")
	cli.out, rs.out = make([]byte, 70000), make([]byte, 70000)
	src := &sourceReplay{replayGSO: cli}
	for _, n := range []struct {
		name  string
		dev   tun.Device
		addrs []string
	}{
		{"client", src, []string{"10.0.0.1/24", gVIP.Addr().String() + "/32"}},
		{"rs", rs, []string{"172.16.1.3/24"}},
	} {
		if _, err := h.AddNIC(n.name, n.dev); err != nil {
			t.Fatal(err)
		}
		for _, a := range n.addrs {
			if err := h.AddAddress(n.name, netip.MustParsePrefix(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	k := nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: gRS.Addr(), Port: gRS.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	r := &bypassRig{t: t, h: h, inKind: tun.KindTUN, outKind: tun.KindTUN, in: cli, out: rs}
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	for i, flags := range []uint8{nattest.SYN | nattest.ACK, nattest.ACK} {
		back, _ := r.fromRS(ordinary(gRS, gCli, flags, uint32(500+i), nil))
		if ipDst(back) != gCli.Addr() || ipSrc(back) != gVIP.Addr() {
			t.Fatalf("reply %d: % x", i, back[:20])
		}
	}
	if m, w := src.made.Load(), src.writes.Load(); m != 1 || w != 2 {
		t.Fatalf("%d writers made, %d writes through them; want 1 and 2", m, w)
	}
	if fp := h.Counters.FastPath.Load(); fp != 3 {
		t.Fatalf("FastPath %d, want 3", fp)
	}
}
