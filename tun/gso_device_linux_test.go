//go:build linux

package tun_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/tun"
)

// TestGSOPathAllocatesNothing reads packets a kernel socket sends into an
// offload device with ReadGSO and writes them back out with WriteGSO, as
// the director's bypass does, and checks that the round allocates nothing.
func TestGSOPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	if !tun.InSandbox(t) {
		return
	}
	d := tun.OpenOrSkip(t, tun.Config{Name: "tvalloc0", MTU: 1500, Up: true, Offload: true})
	defer d.Close()
	dev, ok := d.(tun.GSODevice)
	if !ok {
		t.Fatalf("offload device %T is not a GSODevice", d)
	}
	tun.SetAddr(t, d.Name(), netip.MustParsePrefix("10.81.0.1/24"))
	c, err := net.Dial("udp4", "10.81.0.2:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1200)
	arena := make([]byte, 256<<10)
	pkts := make([]tun.GSOPacket, 16)
	bufs := make([][]byte, 0, 16)
	gsos := make([]tun.GSO, 0, 16)
	const headroom = 16
	sawUDP := false
	round := func() {
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		n, err := dev.ReadGSO(arena, headroom, pkts)
		if err != nil {
			t.Fatal(err)
		}
		bufs, gsos = bufs[:0], gsos[:0]
		for _, p := range pkts[:n] {
			pkt := arena[p.Off : p.Off+p.Len]
			if len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == 17 {
				sawUDP = true
			}
			bufs = append(bufs, arena[p.Off-headroom:p.Off+p.Len])
			gsos = append(gsos, p.GSO)
		}
		if _, err := dev.WriteGSO(bufs, gsos, headroom); err != nil {
			t.Fatal(err)
		}
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	round() // warm up: first-use callbacks, the poller registration
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("ReadGSO+WriteGSO allocate %.1f times per round, want 0", allocs)
	}
	if !sawUDP {
		t.Error("never read the UDP datagrams the kernel sent")
	}
}
