package netstack_test

import (
	"fmt"
	"testing"

	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// multiReplay is a device with several queues, each a replayGSO, as
// tun.OffloadDevice is with Config.Queues: the device itself is its first
// queue.
type multiReplay struct {
	*replayGSO
	qs []*replayGSO
}

func (m *multiReplay) Queues() []tun.Device {
	ds := make([]tun.Device, len(m.qs))
	for i, q := range m.qs {
		ds[i] = q
	}
	return ds
}

func (m *multiReplay) Close() error {
	for _, q := range m.qs {
		q.Close()
	}
	return nil
}

// TestBypassQueues checks which queue the bypass writes to on devices with
// two queues. Back out of the device a packet came from (the article's
// one-armed director) it is the other queue, so that the kernel, which
// steers a flow to the queue that last wrote it, hands each direction of a
// connection to a reader of its own; from one device to another it is the
// reader's own.
func TestBypassQueues(t *testing.T) {
	for _, hairpin := range []bool{true, false} {
		t.Run(fmt.Sprintf("hairpin=%v", hairpin), func(t *testing.T) {
			r := newBypassRigQueues(t, tun.KindTAP, tun.KindTAP, hairpin, 2)
			// send reads a frame on queue from of the device in and
			// reports the queue of out it was written to.
			send := func(in, out []*replayGSO, from int, f []byte, g tun.GSO) int {
				t.Helper()
				in[from].pkt, in[from].g = f, g
				in[from].kick <- struct{}{}
				select {
				case <-out[0].wrote:
					return 0
				case <-out[1].wrote:
					return 1
				}
			}
			fromRS := func(q int, p gsoIn) int {
				return send(r.outQ, r.inQ, q, frame(tun.KindTAP, r.outMAC, macRS, p.pkt), p.g)
			}
			fromClient := func(q int, p gsoIn) int {
				return send(r.inQ, r.outQ, q, r.frameIn(p.pkt), p.g)
			}
			want := func(q int) int {
				if hairpin {
					return 1 - q
				}
				return q
			}
			if got := fromClient(0, ordinary(gCli, gVIP, nattest.SYN, 100, nil)); got != want(0) {
				t.Fatalf("SYN read on queue 0 written to queue %d, want %d", got, want(0))
			}
			if got := fromRS(want(0), ordinary(gRS, gCli, nattest.SYN|nattest.ACK, 500, nil)); got != 0 {
				t.Fatalf("SYN-ACK read on queue %d written to queue %d, want 0", want(0), got)
			}
			if got := fromClient(1, superPkt(gCli, gVIP, 101, 40, 1400)); got != want(1) {
				t.Fatalf("super-frame read on queue 1 written to queue %d, want %d", got, want(1))
			}
			if fp, del := r.h.Counters.FastPath.Load(), r.h.Counters.Delivered.Load(); fp != 3 || del != 0 {
				t.Fatalf("FastPath %d, Delivered %d: want every packet bypassed", fp, del)
			}
		})
	}
}
