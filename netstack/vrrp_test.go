package netstack_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
	"github.com/tunvs/tunvs/vrrp"
)

// What a VRRP router needs of a TAP NIC: its protocol's packets handed
// over, frames for other hosts' MACs dropped (and counted) as the kernel
// drops PACKET_OTHERHOST, a virtual MAC the NIC takes and sends from
// (its own still received), raw frames out, and virtual addresses that
// leave the subnet's route alone.
func TestVRRPOnTAP(t *testing.T) {
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	h := r.h
	inject := func(f []byte) {
		r.in.pkt, r.in.g = f, tun.GSO{}
		r.in.kick <- struct{}{}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s", what)
			}
		}
	}

	got := make(chan []byte, 4)
	h.SetVRRP(func(link string, l3 []byte) { got <- append([]byte(link+" "), l3...) })
	vipA := gVIP.Addr()
	adv := vrrp.AppendAdvertFrame(nil, &vrrp.Advert{VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vipA}},
		vrrp.MAC{2, 0, 0, 0, 0, 4}, netip.MustParseAddr("172.16.1.4"))
	inject(adv)
	select {
	case g := <-got:
		if !bytes.Equal(g, append([]byte("lan "), adv[14:]...)) {
			t.Fatalf("handed % x", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the advert was not handed over")
	}

	vmac := vrrp.VirtualMAC(51, false)
	syn := nattest.TCP(gCli, gVIP, nattest.SYN, 0)
	before := h.Counters.OtherHost.Load()
	inject(frame(tun.KindTAP, vmac, macRouter, syn))
	waitFor("a frame for another MAC counted", func() bool { return h.Counters.OtherHost.Load() == before+1 })
	if r.h.NAT().Len() != 0 {
		t.Fatal("a frame for another MAC was NATed")
	}

	if err := h.SetLinkMAC("lan", vmac[:], nil); err != nil {
		t.Fatal(err)
	}
	out, _ := r.send(r.in, frame(tun.KindTAP, vmac, macRouter, syn), tun.GSO{}, r.out)
	checkEth(t, "SYN to the virtual MAC, to the real server", out, macRS, vmac)
	// The NIC's own MAC is still its own.
	syn2 := nattest.TCP(netip.AddrPortFrom(gCli.Addr(), gCli.Port()+1), gVIP, nattest.SYN, 0)
	out, _ = r.send(r.in, frame(tun.KindTAP, r.inMAC, macRouter, syn2), tun.GSO{}, r.out)
	checkEth(t, "SYN to the own MAC, to the real server", out, macRS, vmac)
	if err := h.SetLinkMAC("lan", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.SetLinkMAC("nope", nil, nil); err == nil {
		t.Fatal("a MAC set on a NIC that does not exist")
	}

	if err := h.WriteFrame("lan", adv); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.out.wrote:
		if !bytes.Equal(r.out.out[:r.out.outLen], adv) {
			t.Fatalf("wrote % x", r.out.out[:r.out.outLen])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the frame was not written")
	}

	routes := func() int { return len(h.Stack().GetRouteTable()) }
	n := routes()
	p := netip.MustParsePrefix("172.16.1.254/24")
	if err := h.AddVirtualAddress("lan", p); err != nil {
		t.Fatal(err)
	}
	if routes() != n {
		t.Fatalf("a virtual address in the DIP's subnet added a route: %d, was %d", routes(), n)
	}
	if err := h.RemoveVirtualAddress("lan", p); err != nil {
		t.Fatal(err)
	}
	if routes() != n {
		t.Fatalf("removing the virtual address took the DIP's subnet route: %d, was %d", routes(), n)
	}
	if err := h.RemoveVirtualAddress("lan", p); err == nil {
		t.Fatal("an address removed twice")
	}
}
