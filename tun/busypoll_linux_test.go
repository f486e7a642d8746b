//go:build linux

package tun_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/tun"
)

// TestBusyPoll checks Config.BusyPoll on a real offload device: a reader
// that is spinning when a packet arrives takes it without waiting in the
// poller (BusyPollHits), and one whose poll runs out waits there
// (BusyPollWaits) and still gets the next packet. The assertions are on
// the device's counters, not on time.
func TestBusyPoll(t *testing.T) {
	if !tun.InSandbox(t) {
		return
	}
	for _, tc := range []struct {
		name string
		poll time.Duration
		hits bool // else waits
	}{
		{"hit", 5 * time.Second, true},
		{"wait", time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "tvbusy" + tc.name
			d := tun.OpenOrSkip(t, tun.Config{Name: name, MTU: 1500, Up: true, Offload: true, BusyPoll: tc.poll})
			od, ok := d.(*tun.OffloadDevice)
			if !ok {
				t.Fatalf("offload device is a %T", d)
			}
			gd := d.(tun.GSODevice)
			tun.SetAddr(t, name, netip.MustParsePrefix("10.82.0.1/24"))
			c, err := net.Dial("udp4", "10.82.0.2:9")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			arena := make([]byte, 256<<10)
			pkts := make([]tun.GSOPacket, 16)
			// A stray packet from the kernel (IPv6 neighbour
			// discovery on a new link) can be waiting when a round
			// starts, and end the read without the poll the test
			// wants: each round reads until its own datagram, so the
			// next starts with the device empty, and there are a few
			// rounds.
			for round := 0; round < 20; round++ {
				mark := []byte(fmt.Sprintf("busy poll round %d", round))
				done := readUntil(gd, arena, pkts, func(p []byte) bool { return bytes.HasSuffix(p, mark) })
				// Let the reader find the device empty and spin
				// (or, with 1 ms, give up and wait).
				time.Sleep(50 * time.Millisecond)
				if _, err := c.Write(mark); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					t.Fatal("the reader never returned the datagram")
				}
				st := od.Stats()
				if tc.hits && st.BusyPollHits > 0 || !tc.hits && st.BusyPollWaits > 0 {
					t.Logf("round %d: %d hits, %d waits", round, st.BusyPollHits, st.BusyPollWaits)
					return
				}
			}
			st := od.Stats()
			t.Errorf("busy poll %v: %d hits, %d waits after 20 rounds; want some %s (%+v)", tc.poll, st.BusyPollHits, st.BusyPollWaits, map[bool]string{true: "hits", false: "waits"}[tc.hits], st)
		})
	}
}
