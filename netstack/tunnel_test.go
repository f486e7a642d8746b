package netstack_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/csum/csumtest"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

// tunnelRig is a bypass rig whose real server tunnels (-i) with enc.
func tunnelRig(t testing.TB, inKind, outKind tun.Kind, hairpin bool, enc rules.Encap) *bypassRig {
	t.Helper()
	r := newBypassRig(t, inKind, outKind, hairpin)
	tb := r.h.NAT()
	k := nat.ServiceKey{Proto: 6, Addr: gVIP.Addr(), Port: gVIP.Port()}
	if err := tb.DelDest(k, gRS); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: gRS.Addr(), Port: gVIP.Port(), Weight: 1, Method: rules.Tunnel, Tun: enc}); err != nil {
		t.Fatal(err)
	}
	return r
}

// decap checks an encapsulated packet's outer headers, as
// ip_vs_tunnel_xmit writes them, with checksums computed by the
// reference implementation, and returns the inner packet.
func decap(t *testing.T, what string, o []byte, enc rules.Encap, src, dst netip.Addr, inner []byte) []byte {
	t.Helper()
	if len(o) < 20 || o[0] != 0x45 {
		t.Fatalf("%s: not an IPv4 packet without options: % x", what, o[:min(len(o), 20)])
	}
	if ipSrc(o) != src || ipDst(o) != dst {
		t.Fatalf("%s: outer %v -> %v, want %v -> %v", what, ipSrc(o), ipDst(o), src, dst)
	}
	if csumtest.Checksum(o[:20], 0) != 0 || int(binary.BigEndian.Uint16(o[2:])) != len(o) {
		t.Fatalf("%s: outer header checksum or length wrong: % x (%d bytes)", what, o[:20], len(o))
	}
	if o[8] != inner[8] || o[1] != inner[1] || o[6]&0x40 != inner[6]&0x40 {
		t.Errorf("%s: outer TTL %d, TOS %#x, DF %v; want the inner's %d, %#x, %v", what, o[8], o[1], o[6]&0x40 != 0, inner[8], inner[1], inner[6]&0x40 != 0)
	}
	if inner[6]&0x40 != 0 && binary.BigEndian.Uint16(o[4:]) != 0 {
		t.Errorf("%s: identification %d with DF, want 0 (ip_select_ident)", what, binary.BigEndian.Uint16(o[4:]))
	}
	p := o[20:]
	switch enc.Type {
	case rules.TunIPIP:
		if o[9] != 4 {
			t.Fatalf("%s: protocol %d, want 4", what, o[9])
		}
		return p
	case rules.TunGUE:
		if o[9] != 17 || binary.BigEndian.Uint16(p[2:]) != enc.Port || int(binary.BigEndian.Uint16(p[4:])) != len(p) {
			t.Fatalf("%s: protocol %d, UDP % x; want 17 to port %d", what, o[9], p[:8], enc.Port)
		}
		if sp := binary.BigEndian.Uint16(p[0:]); sp < 32768 || sp > 60999 {
			t.Errorf("%s: UDP source port %d outside 32768-60999", what, sp)
		}
		c := binary.BigEndian.Uint16(p[6:])
		switch {
		case enc.Flags == 0 && c != 0:
			t.Errorf("%s: UDP checksum %#x with --tun-nocsum, want 0", what, c)
		case enc.Flags != 0 && csumtest.Checksum(p, csumtest.Pseudo(o[12:16], o[16:20], 17, len(p))) != 0:
			t.Errorf("%s: UDP checksum %#x wrong", what, c)
		}
		if !bytes.Equal(p[8:12], []byte{0, 4, 0, 0}) {
			t.Fatalf("%s: GUE header % x, want 00 04 00 00", what, p[8:12])
		}
		return p[12:]
	case rules.TunGRE:
		want, n := []byte{0, 0, 0x08, 0}, 4
		if enc.Flags&rules.TunCsum != 0 {
			want[0], n = 0x80, 8
			if csumtest.Checksum(p, 0) != 0 {
				t.Errorf("%s: GRE checksum wrong", what)
			}
		}
		if o[9] != 47 || !bytes.Equal(p[:4], want) {
			t.Fatalf("%s: protocol %d, GRE % x; want 47, % x", what, o[9], p[:4], want)
		}
		return p[n:]
	}
	t.Fatalf("%s: type %v", what, enc.Type)
	return nil
}

// decTTL is what decrement_ttl leaves of an IPv4 packet.
func decTTL(p []byte) []byte {
	q := append([]byte(nil), p...)
	q[8]--
	q[10], q[11] = 0, 0
	binary.BigEndian.PutUint16(q[10:], csumtest.Checksum(q[:20], 0))
	return q
}

var encaps = []rules.Encap{
	{Type: rules.TunIPIP},
	{Type: rules.TunGUE, Port: 6080},
	{Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum},
	{Type: rules.TunGUE, Port: 5555, Flags: rules.TunRemCsum},
	{Type: rules.TunGRE},
	{Type: rules.TunGRE, Flags: rules.TunCsum},
}

// Tunnelling from and to TUN and TAP links, one-armed too: the client's
// packet, TTL decremented, inside a packet from the director's address
// on the real server's link to the real server; never delivered to the
// stack that owns the VIP.
func TestTunnelEncapsulates(t *testing.T) {
	for _, l := range []struct {
		in, out tun.Kind
		hairpin bool
	}{{tun.KindTUN, tun.KindTUN, false}, {tun.KindTUN, tun.KindTAP, false}, {tun.KindTAP, tun.KindTUN, false}, {tun.KindTAP, tun.KindTAP, false}, {tun.KindTAP, tun.KindTAP, true}} {
		for _, enc := range encaps {
			r := tunnelRig(t, l.in, l.out, l.hairpin, enc)
			what := l.in.String() + "->" + l.out.String() + " " + enc.Type.String()
			for i, flags := range []uint8{nattest.SYN, nattest.ACK, nattest.ACK | nattest.PSH} {
				p := ordinary(gCli, gVIP, flags, uint32(100+i), []byte("hello, real server"))
				p.pkt[1] = 0x2b // DSCP 10, ECN CE: outside ECT(0)
				binary.BigEndian.PutUint16(p.pkt[10:], 0)
				binary.BigEndian.PutUint16(p.pkt[10:], csumtest.Checksum(p.pkt[:20], 0))
				want := decTTL(p.pkt)
				out, g := r.fromClient(p)
				if g.Pending() {
					t.Fatalf("%s: written with offload state %+v", what, g)
				}
				if l.out == tun.KindTAP {
					out = checkEth(t, what, out, macRS, r.outMAC)
				}
				wantOuter := append([]byte(nil), want...)
				wantOuter[1] = 0x2a
				inner := decap(t, what, out, enc, dipAddr, rsAddr, wantOuter)
				if !bytes.Equal(inner, want) {
					t.Fatalf("%s: inner packet\n% x\nwant\n% x", what, inner, want)
				}
			}
			h := r.h
			if s, d, del := h.Counters.TunnelSent.Load(), h.Counters.TunnelDrops.Load(), h.Counters.Delivered.Load(); s != 3 || d != 0 || del != 0 {
				t.Errorf("%s: TunnelSent %d, TunnelDrops %d, Delivered %d; want 3, 0, 0", what, s, d, del)
			}
			c, _ := h.NAT().Lookup(6, gCli, gVIP)
			if c == nil || !c.Tunnelled() || c.State() != nat.StateEstablished {
				t.Fatalf("%s: connection %+v", what, c)
			}
		}
	}
}

// A super-packet is cut up first (no virtio-net GSO type describes an
// encapsulated one), each piece encapsulated and written on its own.
func TestTunnelSegmentsSuperPackets(t *testing.T) {
	for _, enc := range encaps {
		r := tunnelRig(t, tun.KindTUN, tun.KindTUN, false, enc)
		r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
		r.out.frames = make(chan []byte, 16)
		sp := superPkt(gCli, gVIP, 101, 3, 1000)
		r.in.pkt, r.in.g = sp.pkt, sp.g
		r.in.kick <- struct{}{}
		var payload []byte
		for i := range 3 {
			select {
			case f := <-r.out.frames:
				inner := decap(t, enc.Type.String(), f, enc, dipAddr, rsAddr, f[nat.EncapLen(enc, false):])
				if len(inner) != 20+20+1000 || csumtest.Checksum(inner[20:], csumtest.Pseudo(inner[12:16], inner[16:20], 6, len(inner)-20)) != 0 {
					t.Fatalf("%v: piece %d: %d bytes, or TCP checksum not finished", enc.Type, i, len(inner))
				}
				payload = append(payload, inner[40:]...)
			case <-time.After(5 * time.Second):
				t.Fatalf("%v: %d pieces written, want 3", enc.Type, i)
			}
		}
		if !bytes.Equal(payload, sp.pkt[40:]) {
			t.Errorf("%v: the pieces' payload is not the super-packet's", enc.Type)
		}
	}
}

// The path MTU: a DF packet too big for the route's MTU less the
// encapsulation gets "fragmentation needed" with that MTU, from the VIP
// (ensure_mtu_is_adequate); one without DF goes out in outer fragments
// (ip_fragment, the outer header without DF).
func TestTunnelPMTU(t *testing.T) {
	for _, enc := range encaps {
		r := tunnelRig(t, tun.KindTUN, tun.KindTUN, false, enc)
		r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
		mtu := 1500 - nat.EncapLen(enc, false)
		big := gsoIn{pkt: nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: mtu + 1, DF: true})}
		icmp, _ := r.send(r.in, big.pkt, tun.GSO{}, r.in)
		if len(icmp) < 28 || icmp[9] != 1 || icmp[20] != 3 || icmp[21] != 4 || int(binary.BigEndian.Uint16(icmp[26:])) != mtu || ipSrc(icmp) != gVIP.Addr() {
			t.Fatalf("%v: wrote % x, want ICMP frag needed, MTU %d, from the VIP", enc.Type, icmp[:min(len(icmp), 28)], mtu)
		}
		// At the MTU it goes.
		fits := gsoIn{pkt: nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: mtu, DF: true})}
		if out, _ := r.fromClient(fits); len(out) != 1500 {
			t.Fatalf("%v: %d bytes written, want 1500", enc.Type, len(out))
		}
		// Without DF: in fragments.
		r.out.frames = make(chan []byte, 16)
		nodf := nattest.Build(nattest.Seg{Src: gCli, Dst: gVIP, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: 1, Size: 2000})
		r.in.pkt, r.in.g = nodf, tun.GSO{}
		r.in.kick <- struct{}{}
		var whole []byte
		for off := 0; ; {
			var f []byte
			select {
			case f = <-r.out.frames:
			case <-time.After(5 * time.Second):
				t.Fatalf("%v: fragment at %d not written", enc.Type, off)
			}
			fo := binary.BigEndian.Uint16(f[6:])
			if len(f) > 1500 || int(fo&0x1fff)*8 != off || csumtest.Checksum(f[:20], 0) != 0 || fo&0x4000 != 0 {
				t.Fatalf("%v: fragment % x (%d bytes), want offset %d", enc.Type, f[:20], len(f), off)
			}
			whole = append(whole, f[20:]...)
			off += len(f) - 20
			if fo&0x2000 == 0 {
				break
			}
		}
		o := append(append([]byte(nil), nodf[:20]...), whole...)
		binary.BigEndian.PutUint16(o[2:], uint16(len(o)))
		o[6], o[8], o[9] = 0, nodf[8]-1, map[rules.TunType]byte{rules.TunIPIP: 4, rules.TunGUE: 17, rules.TunGRE: 47}[enc.Type]
		copy(o[12:16], dipAddr.AsSlice())
		copy(o[16:20], rsAddr.AsSlice())
		o[10], o[11] = 0, 0
		binary.BigEndian.PutUint16(o[4:], 0)
		if inner := o[nat.EncapLen(enc, false):]; !bytes.Equal(inner, decTTL(nodf)) {
			t.Errorf("%v: reassembled inner packet differs", enc.Type)
		}
	}
}

// TestTunnelAllocatesNothing: a tunnelled packet, and a tunnelled
// super-packet cut into pieces, allocate nothing.
func TestTunnelAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	for _, enc := range []rules.Encap{{Type: rules.TunIPIP}, {Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum}, {Type: rules.TunGRE, Flags: rules.TunCsum}} {
		r := tunnelRig(t, tun.KindTAP, tun.KindTAP, true, enc)
		r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
		p := ordinary(gCli, gVIP, nattest.ACK, 101, []byte("data"))
		r.fromClient(p)
		frame := r.frameIn(p.pkt)
		if allocs := testing.AllocsPerRun(200, func() { r.send(r.in, frame, p.g, r.out) }); allocs != 0 {
			t.Errorf("%v: a tunnelled frame allocates %.2f times, want 0", enc.Type, allocs)
		}
	}
	r := tunnelRig(t, tun.KindTUN, tun.KindTUN, false, rules.Encap{Type: rules.TunGUE, Port: 6080})
	r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	sp := superPkt(gCli, gVIP, 101, 3, 1000)
	send := func() {
		r.in.pkt, r.in.g = sp.pkt, sp.g
		r.in.kick <- struct{}{}
		for range 3 {
			<-r.out.wrote
		}
	}
	send()
	if allocs := testing.AllocsPerRun(100, send); allocs != 0 {
		t.Errorf("a tunnelled super-packet allocates %.2f times, want 0", allocs)
	}
}

// BenchmarkTunnel is the cost of one tunnelled packet (read, NAT,
// encapsulation, write) of 1400 bytes, for each encapsulation, from a
// TUN to a TUN and across one TAP (hairpin), and of a 40-segment
// super-packet cut into 40 encapsulated packets (the figure per
// super-packet). The replay devices hand packets over by channel, as in
// BenchmarkBypass.
func BenchmarkTunnel(b *testing.B) {
	for _, rig := range []struct {
		name    string
		in, out tun.Kind
		hairpin bool
	}{
		{"tun", tun.KindTUN, tun.KindTUN, false},
		{"tap-hairpin", tun.KindTAP, tun.KindTAP, true},
	} {
		for _, enc := range []rules.Encap{{Type: rules.TunIPIP}, {Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum}, {Type: rules.TunGRE, Flags: rules.TunCsum}} {
			for _, p := range []struct {
				name   string
				pkt    gsoIn
				pieces int
			}{
				{"packet", ordinary(gCli, gVIP, nattest.ACK, 101, data(1400, 1)), 1},
				{"super40x1400", superPkt(gCli, gVIP, 101, 40, 1400), 40},
			} {
				if p.pieces > 1 && rig.in == tun.KindTAP {
					continue
				}
				b.Run(rig.name+"/"+enc.Type.String()+"/"+p.name, func(b *testing.B) {
					r := tunnelRig(b, rig.in, rig.out, rig.hairpin, enc)
					r.fromClient(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
					frame := r.frameIn(p.pkt.pkt)
					send := func() {
						r.in.pkt, r.in.g = frame, p.pkt.g
						r.in.kick <- struct{}{}
						for range p.pieces {
							<-r.out.wrote
						}
					}
					send()
					sent := r.h.Counters.TunnelSent.Load()
					b.ReportAllocs()
					b.SetBytes(int64(len(frame)))
					b.ResetTimer()
					for range b.N {
						send()
					}
					b.StopTimer()
					if got := r.h.Counters.TunnelSent.Load() - sent; got != uint64(b.N*p.pieces) {
						b.Fatalf("%d of %d packets sent encapsulated", got, b.N*p.pieces)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/packet")
				})
			}
		}
	}
}
