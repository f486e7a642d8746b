package netstack_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// TestBypassGroupsFlows: a batch read from the article's one-armed TAP,
// two connections' segments interleaved in it, is written with each
// connection's segments together and in their order (tun.FlowOrder), so
// that the device coalesces each connection's run into one super-packet.
// Written in the order read, no two segments of a connection would be
// neighbours.
func TestBypassGroupsFlows(t *testing.T) {
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	cliB := nattest.AP("10.0.0.11:40001")
	for _, c := range []netip.AddrPort{gCli, cliB} {
		r.fromClient(ordinary(c, gVIP, nattest.SYN, 100, nil))
	}
	var batch [][]byte
	for i := range 3 {
		for _, c := range []netip.AddrPort{gCli, cliB} {
			p := ordinary(c, gVIP, nattest.ACK, uint32(101+100*i), data(100, i))
			batch = append(batch, r.frameIn(p.pkt))
		}
	}
	r.in.frames = make(chan []byte, len(batch))
	r.in.batch = batch
	r.in.kick <- struct{}{}
	var got []string
	for range batch {
		select {
		case f := <-r.in.frames:
			ip := checkEth(t, "a segment to the real server", f, macRS, r.outMAC)
			l4 := ip[int(ip[0]&0xf)*4:]
			got = append(got, fmt.Sprintf("%v/%d", ipSrc(ip), binary.BigEndian.Uint32(l4[4:])))
		case <-time.After(10 * time.Second):
			t.Fatalf("written so far: %v", got)
		}
	}
	want := "[10.0.0.10/101 10.0.0.10/201 10.0.0.10/301 10.0.0.11/101 10.0.0.11/201 10.0.0.11/301]"
	if fmt.Sprint(got) != want {
		t.Errorf("written %v, want %s", got, want)
	}
	if fp := r.h.Counters.FastPath.Load(); fp != 2+uint64(len(batch)) {
		t.Errorf("FastPath %d, want every packet bypassed", fp)
	}
}

// TestBypassGroupsFlowsAllocatesNothing: grouping a batch of interleaved
// connections on the one-armed TAP allocates nothing once warm.
func TestBypassGroupsFlowsAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	var batch [][]byte
	for c := range 4 {
		cli := netip.AddrPortFrom(gCli.Addr(), uint16(40000+c))
		r.fromClient(ordinary(cli, gVIP, nattest.SYN, 100, nil))
		for i := range 8 {
			batch = append(batch, r.frameIn(ordinary(cli, gVIP, nattest.ACK, uint32(101+100*i), data(100, i)).pkt))
		}
	}
	// Interleaved: the first segment of each connection, then the
	// second of each, and so on.
	var mixed [][]byte
	for i := range 8 {
		for c := range 4 {
			mixed = append(mixed, batch[c*8+i])
		}
	}
	r.in.batch = mixed
	round := func() {
		r.in.kick <- struct{}{}
		<-r.in.wrote
	}
	round()
	fp := r.h.Counters.FastPath.Load()
	if allocs := testing.AllocsPerRun(100, round); allocs != 0 {
		t.Errorf("a batch of %d interleaved segments allocates %.2f times, want 0", len(mixed), allocs)
	}
	if got := r.h.Counters.FastPath.Load() - fp; got < 100*uint64(len(mixed)) {
		t.Errorf("FastPath grew by %d, want every segment bypassed", got)
	}
}
