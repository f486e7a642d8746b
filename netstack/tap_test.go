package netstack_test

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// MACs of the hosts around the director in the bypass rigs.
var (
	macRouter = [6]byte{0x02, 0, 0, 0, 0, 0xc8}
	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macRS     = [6]byte{0x02, 0, 0, 0, 0, 0x05}
	macRS2    = [6]byte{0x02, 0, 0, 0, 0, 0x55}
	macRS3    = [6]byte{0x02, 0, 0, 0, 0, 0x56}
	rsAddr    = netip.MustParseAddr("172.16.1.5")
	dipAddr   = netip.MustParseAddr("172.16.1.3")
)

// bypassRig is a director with the VIP gVIP and the real server gRS on
// replay devices: two (client side, real-server side, each a TUN or a
// TAP) or, hairpin, one TAP on the real servers' segment with the client
// behind a router 172.16.1.200, as in the article's one-armed director.
type bypassRig struct {
	t               testing.TB
	h               *netstack.Host
	inKind, outKind tun.Kind
	in, out         *replayGSO // the same device when hairpin
	// inQ and outQ are every queue of in and out (in and out are the
	// first), for a rig with several queues per device.
	inQ, outQ []*replayGSO
	// The director's MACs on the client and real-server side, and the
	// MAC its client-side frames come from (router or client).
	inMAC, outMAC, peerIn [6]byte
}

func newBypassRig(t testing.TB, inKind, outKind tun.Kind, hairpin bool) *bypassRig {
	t.Helper()
	return newBypassRigQueues(t, inKind, outKind, hairpin, 1)
}

// newBypassRigQueues is newBypassRig with queues queues per device, as
// tun.OffloadDevice has them with Config.Queues.
func newBypassRigQueues(t testing.TB, inKind, outKind tun.Kind, hairpin bool, queues int) *bypassRig {
	t.Helper()
	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	h = netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: true})
	t.Cleanup(func() { h.Close() })
	r := &bypassRig{t: t, h: h, inKind: inKind, outKind: outKind}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nic := func(name string, kind tun.Kind, addrs ...string) ([]*replayGSO, [6]byte) {
		var qs []*replayGSO
		for range queues {
			d := newReplayGSO(name)
			d.kind, d.out = kind, make([]byte, 70000)
			qs = append(qs, d)
		}
		var dev tun.Device = qs[0]
		if queues > 1 {
			dev = &multiReplay{qs[0], qs}
		}
		n, err := h.AddNIC(name, dev)
		must(err)
		for _, a := range addrs {
			must(h.AddAddress(name, netip.MustParsePrefix(a)))
		}
		var mac [6]byte
		copy(mac[:], n.MAC())
		return qs, mac
	}
	vip := gVIP.Addr().String() + "/32"
	if hairpin {
		r.inQ, r.inMAC = nic("lan", inKind, "172.16.1.3/24", vip)
		r.outQ, r.outMAC = r.inQ, r.inMAC
		must(h.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("172.16.1.200"), ""))
		r.peerIn = macRouter
		r.neighbour("lan", "172.16.1.200", macRouter)
		r.neighbour("lan", rsAddr.String(), macRS)
	} else {
		r.inQ, r.inMAC = nic("client", inKind, "10.0.0.1/24", vip)
		r.outQ, r.outMAC = nic("rs", outKind, "172.16.1.3/24")
		r.peerIn = macClient
		if inKind == tun.KindTAP {
			r.neighbour("client", gCli.Addr().String(), macClient)
		}
		if outKind == tun.KindTAP {
			r.neighbour("rs", rsAddr.String(), macRS)
		}
	}
	r.in, r.out = r.inQ[0], r.outQ[0]
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}, nat.DestConfig{Addr: gRS.Addr(), Port: gRS.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	return r
}

// nicID is the stack's id of the NIC called name.
func (r *bypassRig) nicID(name string) tcpip.NICID {
	for id, info := range r.h.Stack().NICInfo() {
		if info.Name == name {
			return id
		}
	}
	r.t.Fatalf("no nic %q", name)
	return 0
}

// neighbour puts a permanent entry in the director's neighbour table.
func (r *bypassRig) neighbour(nic, addr string, mac [6]byte) {
	r.t.Helper()
	a := netip.MustParseAddr(addr)
	proto, ta := ipv6.ProtocolNumber, tcpip.AddrFrom16(a.As16())
	if a.Is4() {
		proto, ta = ipv4.ProtocolNumber, tcpip.AddrFrom4(a.As4())
	}
	if err := r.h.Stack().AddStaticNeighbor(r.nicID(nic), proto, ta, tcpip.LinkAddress(mac[:])); err != nil {
		r.t.Fatalf("add neighbour %s: %v", addr, err)
	}
}

// neighbourState is the state of addr's entry on the NIC "lan" (Unknown
// when it has none).
func (r *bypassRig) neighbourState(addr netip.Addr) stack.NeighborState {
	ns, err := r.h.Stack().Neighbors(r.nicID("lan"), ipv4.ProtocolNumber)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, n := range ns {
		if n.Addr == tcpip.AddrFrom4(addr.As4()) {
			return n.State
		}
	}
	return stack.Unknown
}

// waitNeighbour waits, up to 5 s, for addr's entry to reach state.
func (r *bypassRig) waitNeighbour(addr netip.Addr, state stack.NeighborState) {
	r.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); r.neighbourState(addr) != state; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("neighbour %v is %v, want %v", addr, r.neighbourState(addr), state)
		}
	}
}

// frame is pkt as it arrives at the director on a device of kind from
// src (TAP: behind an Ethernet header from src to the director's MAC
// dst).
func frame(kind tun.Kind, dst, src [6]byte, pkt []byte) []byte {
	if kind != tun.KindTAP {
		return pkt
	}
	f := make([]byte, 0, 14+len(pkt))
	f = append(f, dst[:]...)
	f = append(f, src[:]...)
	return append(binary.BigEndian.AppendUint16(f, etherType(pkt)), pkt...)
}

// send makes d hand out frame (with g) and waits for the director's next
// write, to dev, which it returns (with its offload state).
func (r *bypassRig) send(d *replayGSO, frame []byte, g tun.GSO, dev *replayGSO) ([]byte, tun.GSO) {
	d.pkt, d.g = frame, g
	d.kick <- struct{}{}
	<-dev.wrote
	return dev.out[:dev.outLen], dev.outG
}

// frameIn is pkt as it arrives from the client side.
func (r *bypassRig) frameIn(pkt []byte) []byte { return frame(r.inKind, r.inMAC, r.peerIn, pkt) }

// fromClient and fromRS are a packet arriving from the client side and
// from the real server.
func (r *bypassRig) fromClient(p gsoIn) ([]byte, tun.GSO) {
	return r.send(r.in, r.frameIn(p.pkt), p.g, r.out)
}

func (r *bypassRig) fromRS(p gsoIn) ([]byte, tun.GSO) {
	return r.send(r.out, frame(r.outKind, r.outMAC, macRS, p.pkt), p.g, r.in)
}

// etherType is the Ethernet type of an IP packet.
func etherType(p []byte) uint16 {
	if p[0]>>4 == 6 {
		return 0x86dd
	}
	return 0x0800
}

// checkEth checks a written TAP frame's Ethernet header and returns its
// IP packet.
func checkEth(t *testing.T, what string, f []byte, dst, src [6]byte) []byte {
	t.Helper()
	if len(f) < 15 {
		t.Fatalf("%s: frame of %d bytes", what, len(f))
	}
	if [6]byte(f[0:6]) != dst || [6]byte(f[6:12]) != src || binary.BigEndian.Uint16(f[12:]) != etherType(f[14:]) {
		t.Fatalf("%s: Ethernet header % x, want to % x from % x, of the packet's IP version", what, f[:14], dst, src)
	}
	return f[14:]
}

// ipDst and ipSrc are an IP packet's addresses.
func ipDst(p []byte) netip.Addr {
	if p[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(p[24:40]))
	}
	return netip.AddrFrom4([4]byte(p[16:20]))
}

func ipSrc(p []byte) netip.Addr {
	if p[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(p[8:24]))
	}
	return netip.AddrFrom4([4]byte(p[12:16]))
}

// TestTAPBypass sends a connection's packets across a director on TAP
// devices, two of them and one (hairpin), and checks that they skip the
// stack with the Ethernet header rewritten from the neighbour table,
// super-frames whole; that a neighbour's new MAC is used as soon as the
// stack has it; and that a flow whose neighbour the stack forgets goes
// through the stack, which resolves it by ARP, and back to the bypass
// with the address learnt.
func TestTAPBypass(t *testing.T) {
	for _, hairpin := range []bool{false, true} {
		t.Run(fmt.Sprintf("hairpin=%v", hairpin), func(t *testing.T) {
			r := newBypassRig(t, tun.KindTAP, tun.KindTAP, hairpin)
			h := r.h
			out, _ := r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
			if ip := checkEth(t, "SYN to the real server", out, macRS, r.outMAC); ipDst(ip) != gRS.Addr() {
				t.Fatalf("SYN went to %v", ipDst(ip))
			}
			back, _ := r.fromRS(ordinary(gRS, gCli, nattest.SYN|nattest.ACK, 500, nil))
			if ip := checkEth(t, "SYN-ACK to the client", back, r.peerIn, r.inMAC); ipDst(ip) != gCli.Addr() || ipSrc(ip) != gVIP.Addr() {
				t.Fatalf("SYN-ACK % x", ip[:20])
			}
			sp := superPkt(gCli, gVIP, 101, 40, 1400)
			out, g := r.fromClient(sp)
			checkEth(t, "super-frame", out, macRS, r.outMAC)
			if g.Type != tun.GSOTCPv4 || len(out) != 14+len(sp.pkt) {
				t.Fatalf("super-frame written as %d bytes with %+v, want whole (%d bytes)", len(out), g, 14+len(sp.pkt))
			}
			if fp, del := h.Counters.FastPath.Load(), h.Counters.Delivered.Load(); fp != 3 || del != 0 {
				t.Fatalf("FastPath %d, Delivered %d: want every packet bypassed", fp, del)
			}
			if s := h.Counters.GSOSplit.Load(); s != 0 {
				t.Fatalf("%d super-packets cut up", s)
			}

			// The real server's MAC changes (a permanent entry
			// replaced): the next frame goes to the new one.
			rsNIC := "rs"
			if hairpin {
				rsNIC = "lan"
			}
			r.neighbour(rsNIC, rsAddr.String(), macRS2)
			out, _ = r.fromClient(superPkt(gCli, gVIP, 101+56000, 40, 1400))
			checkEth(t, "after the MAC changed", out, macRS2, r.outMAC)

			// Forgotten: the packet goes to the stack, which asks
			// by ARP.
			if err := h.Stack().RemoveNeighbor(r.nicID(rsNIC), ipv4.ProtocolNumber, tcpip.AddrFrom4(rsAddr.As4())); err != nil {
				t.Fatal(err)
			}
			fp := h.Counters.FastPath.Load()
			arp, _ := r.fromClient(ordinary(gCli, gVIP, nattest.ACK, 112001, []byte("after")))
			if len(arp) < 42 || binary.BigEndian.Uint16(arp[12:]) != 0x0806 || [6]byte(arp[0:6]) != [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} ||
				netip.AddrFrom4([4]byte(arp[38:42])) != rsAddr {
				t.Fatalf("with the neighbour unknown, wrote % x, want an ARP request for %v", arp[:min(len(arp), 42)], rsAddr)
			}
			if got := h.Counters.FastPath.Load(); got != fp {
				t.Fatalf("a packet for an unknown neighbour was bypassed")
			}
			// The real server answers from a third MAC: the stack
			// sends what it queued, and the bypass takes over.
			reply := arpReply(r.outMAC, macRS3, rsAddr, dipAddr)
			queued, _ := r.send(r.out, reply, tun.GSO{}, r.out)
			if ip := checkEth(t, "the queued packet", queued, macRS3, r.outMAC); ipDst(ip) != gRS.Addr() {
				t.Fatalf("queued packet to %v", ipDst(ip))
			}
			out, _ = r.fromClient(ordinary(gCli, gVIP, nattest.ACK, 112006, []byte("bypassed")))
			checkEth(t, "after ARP", out, macRS3, r.outMAC)
			if got := h.Counters.FastPath.Load(); got != fp+1 {
				t.Fatalf("FastPath %d after the neighbour was learnt, want %d", got, fp+1)
			}
		})
	}
}

// arpReply is an ARP reply from (mac, ip) to (dstMAC, dstIP).
func arpReply(dstMAC, mac [6]byte, ip, dstIP netip.Addr) []byte {
	f := make([]byte, 0, 42)
	f = append(f, dstMAC[:]...)
	f = append(f, mac[:]...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2)
	f = append(f, mac[:]...)
	a := ip.As4()
	f = append(f, a[:]...)
	f = append(f, dstMAC[:]...)
	b := dstIP.As4()
	return append(f, b[:]...)
}

// TestTAPBypassAllocatesNothing is TestBypassAllocatesNothing for a
// one-armed director on a TAP: super-frames in and out of the same
// device, the Ethernet header rewritten, nothing allocated.
func TestTAPBypassAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	sp := superPkt(gCli, gVIP, 101, 40, 1400)
	r.fromClient(sp) // warm up: the hop is cached on the first packets
	frame := r.frameIn(sp.pkt)
	round := func() { r.send(r.in, frame, sp.g, r.out) }
	fp := r.h.Counters.FastPath.Load()
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("a super-frame through the TAP bypass allocates %.2f times, want 0", allocs)
	}
	if got := r.h.Counters.FastPath.Load() - fp; got < 200 {
		t.Errorf("FastPath grew by %d, want every round bypassed", got)
	}
}

// BenchmarkBypass is the cost of one packet through the bypass (read,
// NAT, Ethernet rewrite on TAP, write), for a 1400-byte packet and a
// 40-segment super-packet, on TUN, on TAP, on one TAP (hairpin) and
// between a TUN and a TAP both ways. The
// replay devices hand the packet over by channel, so the figure includes
// two goroutine handoffs per packet that a kernel device does not have.
func BenchmarkBypass(b *testing.B) {
	for _, rig := range []struct {
		name    string
		in, out tun.Kind
		hairpin bool
	}{
		{"tun", tun.KindTUN, tun.KindTUN, false},
		{"tap", tun.KindTAP, tun.KindTAP, false},
		{"tap-hairpin", tun.KindTAP, tun.KindTAP, true},
		{"tun-to-tap", tun.KindTUN, tun.KindTAP, false},
		{"tap-to-tun", tun.KindTAP, tun.KindTUN, false},
	} {
		for _, p := range []struct {
			name string
			pkt  gsoIn
		}{
			{"packet", ordinary(gCli, gVIP, nattest.ACK, 101, data(1400, 1))},
			{"super40x1400", superPkt(gCli, gVIP, 101, 40, 1400)},
		} {
			b.Run(rig.name+"/"+p.name, func(b *testing.B) {
				r := newBypassRig(b, rig.in, rig.out, rig.hairpin)
				r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
				r.fromClient(p.pkt)
				frame := r.frameIn(p.pkt.pkt)
				fp := r.h.Counters.FastPath.Load()
				b.ReportAllocs()
				b.SetBytes(int64(len(frame)))
				b.ResetTimer()
				for range b.N {
					r.send(r.in, frame, p.pkt.g, r.out)
				}
				b.StopTimer()
				if got := r.h.Counters.FastPath.Load() - fp; got != uint64(b.N) {
					b.Fatalf("%d of %d packets bypassed", got, b.N)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/packet")
			})
		}
	}
}

// TestTAPBypassRevalidates is the bypass's life with a neighbour whose
// MAC changes without a word: learnt by ARP, the entry goes STALE (no
// confirmation for a reachable time); the bypass, which keeps using it,
// makes the stack probe it by unicast ARP as a kernel does; unanswered,
// the entry is given up, the next packet goes through the stack, whose
// broadcast ARP finds the new MAC, and the bypass goes on with it.
func TestTAPBypassRevalidates(t *testing.T) {
	r := newBypassRig(t, tun.KindTAP, tun.KindTAP, true)
	h := r.h
	lan := r.in
	lan.frames = make(chan []byte, 64)
	// A short NUD life (the sweep that sends the stale entries for
	// confirmation runs every 250 ms).
	if err := h.Stack().RemoveNeighbor(r.nicID("lan"), ipv4.ProtocolNumber, tcpip.AddrFrom4(rsAddr.As4())); err != nil {
		t.Fatal(err)
	}
	nud := stack.DefaultNUDConfigurations()
	nud.BaseReachableTime, nud.LearnBaseReachableTime = 300*time.Millisecond, false
	nud.MinRandomFactor, nud.MaxRandomFactor = 1, 1
	nud.RetransmitTimer, nud.LearnRetransmitTimer = 100*time.Millisecond, false
	nud.DelayFirstProbeTime = 50 * time.Millisecond
	if err := h.Stack().SetNUDConfigurations(r.nicID("lan"), ipv4.ProtocolNumber, nud); err != nil {
		t.Fatal(err)
	}
	kick := func(f []byte) {
		lan.pkt, lan.g = f, tun.GSO{}
		lan.kick <- struct{}{}
	}
	// next returns the next frame written that match accepts, within 5 s.
	next := func(what string, match func(f []byte) bool) []byte {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case f := <-lan.frames:
				if match(f) {
					return f
				}
			case <-deadline:
				t.Fatalf("no %s written", what)
			}
		}
	}
	isARP := func(dst [6]byte) func([]byte) bool {
		return func(f []byte) bool {
			return len(f) >= 42 && [6]byte(f[0:6]) == dst && binary.BigEndian.Uint16(f[12:]) == 0x0806 &&
				binary.BigEndian.Uint16(f[20:]) == 1 && netip.AddrFrom4([4]byte(f[38:42])) == rsAddr
		}
	}
	isIPTo := func(dst [6]byte) func([]byte) bool {
		return func(f []byte) bool {
			return len(f) >= 34 && [6]byte(f[0:6]) == dst && binary.BigEndian.Uint16(f[12:]) == 0x0800 && ipDst(f[14:]) == gRS.Addr()
		}
	}
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	seq := uint32(100)
	fromClient := func(flags uint8, payload string) {
		kick(r.frameIn(ordinary(gCli, gVIP, flags, seq, []byte(payload)).pkt))
		seq += uint32(len(payload))
		if flags&nattest.SYN != 0 {
			seq++
		}
	}

	// Learnt by ARP: the SYN waits in the stack for the answer.
	fromClient(nattest.SYN, "")
	next("ARP request", isARP(bcast))
	kick(arpReply(r.outMAC, macRS, rsAddr, dipAddr))
	next("SYN to the real server", isIPTo(macRS))

	// Stale: the bypass still sends to the MAC, and the stack probes it.
	r.waitNeighbour(rsAddr, stack.Stale)
	fp := h.Counters.FastPath.Load()
	fromClient(nattest.ACK, "stale")
	next("packet to the stale MAC", isIPTo(macRS))
	if h.Counters.FastPath.Load() != fp+1 {
		t.Fatal("a packet to a stale neighbour did not take the bypass")
	}
	next("unicast ARP probe of the stale neighbour", isARP(macRS))

	// Unanswered, the entry is given up: the stack resolves again, by
	// broadcast, and learns the new MAC; the bypass follows.
	r.waitNeighbour(rsAddr, stack.Unreachable)
	fp = h.Counters.FastPath.Load()
	fromClient(nattest.ACK, "gone")
	next("ARP request after the probes failed", isARP(bcast))
	if h.Counters.FastPath.Load() != fp {
		t.Fatal("a packet to an unreachable neighbour took the bypass")
	}
	kick(arpReply(r.outMAC, macRS2, rsAddr, dipAddr))
	next("queued packet to the new MAC", isIPTo(macRS2))
	fromClient(nattest.ACK, "new")
	next("bypassed packet to the new MAC", isIPTo(macRS2))
	if h.Counters.FastPath.Load() != fp+1 {
		t.Fatalf("FastPath %d, want %d: the bypass did not take the new MAC", h.Counters.FastPath.Load(), fp+1)
	}
}

// TestTAPBypassIPv6 is the one-armed director over IPv6: the next hops'
// MACs come from the stack's NDP entries, the frames keep their IPv6
// type, and super-frames go out whole.
func TestTAPBypassIPv6(t *testing.T) {
	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	h = netstack.New(netstack.Config{NAT: tb, Forwarding: true, Bypass: true})
	defer h.Close()
	lan := newReplayGSO("lan")
	lan.kind, lan.out = tun.KindTAP, make([]byte, 70000)
	nic, err := h.AddNIC("lan", lan)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"fd00:2::3/64", gVIP6.Addr().String() + "/128"} {
		if err := h.AddAddress("lan", netip.MustParsePrefix(a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.AddRoute(netip.MustParsePrefix("::/0"), netip.MustParseAddr("fd00:2::200"), ""); err != nil {
		t.Fatal(err)
	}
	r := &bypassRig{t: t, h: h, inKind: tun.KindTAP, outKind: tun.KindTAP, in: lan, out: lan, peerIn: macRouter}
	copy(r.inMAC[:], nic.MAC())
	r.outMAC = r.inMAC
	r.neighbour("lan", "fd00:2::200", macRouter)
	r.neighbour("lan", gRS6.Addr().String(), macRS)
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: gVIP6.Addr(), Port: gVIP6.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: gVIP6.Addr(), Port: gVIP6.Port()}, nat.DestConfig{Addr: gRS6.Addr(), Port: gRS6.Port(), Weight: 1}); err != nil {
		t.Fatal(err)
	}
	out, _ := r.fromClient(ordinary(gCli6, gVIP6, nattest.SYN, 100, nil))
	if ip := checkEth(t, "SYN to the real server", out, macRS, r.outMAC); ipDst(ip) != gRS6.Addr() {
		t.Fatalf("SYN went to %v", ipDst(ip))
	}
	back, _ := r.fromRS(ordinary(gRS6, gCli6, nattest.SYN|nattest.ACK, 500, nil))
	if ip := checkEth(t, "SYN-ACK to the client", back, macRouter, r.inMAC); ipDst(ip) != gCli6.Addr() || ipSrc(ip) != gVIP6.Addr() {
		t.Fatalf("SYN-ACK from %v to %v", ipSrc(ip), ipDst(ip))
	}
	sp := superPkt(gCli6, gVIP6, 101, 40, 1400)
	out, g := r.fromClient(sp)
	checkEth(t, "super-frame", out, macRS, r.outMAC)
	if g.Type != tun.GSOTCPv6 || len(out) != 14+len(sp.pkt) {
		t.Fatalf("super-frame written as %d bytes with %+v, want whole", len(out), g)
	}
	if fp, del := h.Counters.FastPath.Load(), h.Counters.Delivered.Load(); fp != 3 || del != 0 {
		t.Fatalf("FastPath %d, Delivered %d: want every packet bypassed", fp, del)
	}
}

// TestBypassTUNAndTAP crosses a director between a TUN (client side) and
// a TAP (real servers' side): towards the TAP the Ethernet header is put
// in the headroom in front of the packet, super-packets whole; back, it
// is left behind.
func TestBypassTUNAndTAP(t *testing.T) {
	r := newBypassRig(t, tun.KindTUN, tun.KindTAP, false)
	out, _ := r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	if ip := checkEth(t, "SYN to the real server", out, macRS, r.outMAC); ipDst(ip) != gRS.Addr() {
		t.Fatalf("SYN went to %v", ipDst(ip))
	}
	back, _ := r.fromRS(ordinary(gRS, gCli, nattest.SYN|nattest.ACK, 500, nil))
	if back[0]>>4 != 4 || ipDst(back) != gCli.Addr() || ipSrc(back) != gVIP.Addr() {
		t.Fatalf("SYN-ACK to the TUN: % x", back[:min(len(back), 20)])
	}
	sp := superPkt(gCli, gVIP, 101, 40, 1400)
	out, g := r.fromClient(sp)
	checkEth(t, "super-packet", out, macRS, r.outMAC)
	if g.Type != tun.GSOTCPv4 || len(out) != 14+len(sp.pkt) {
		t.Fatalf("super-packet written as %d bytes with %+v, want whole", len(out), g)
	}
	if fp, del := r.h.Counters.FastPath.Load(), r.h.Counters.Delivered.Load(); fp != 3 || del != 0 {
		t.Fatalf("FastPath %d, Delivered %d: want every packet bypassed", fp, del)
	}
}
