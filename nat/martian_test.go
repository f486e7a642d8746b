package nat_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// SYNs to a service from sources the kernel drops before IPVS are
// dropped, counted by reason, and given no entry; a client's SYN still
// opens its connection.
func TestMartianSources(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	twoServers6(e.tb)
	e.tb.SetLocalAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd01::1")})
	for _, c := range []struct {
		src  string
		want nat.DropReason
	}{
		{"0.0.0.0", nat.DropMartian},
		{"0.1.2.3", nat.DropMartian},
		{"127.0.0.1", nat.DropMartian},
		{"224.0.0.1", nat.DropMartian},
		{"239.255.255.250", nat.DropMartian},
		{"255.255.255.255", nat.DropMartian},
		{"240.0.0.1", nat.DropMartian},
		{"172.16.1.100", nat.DropOwnSource}, // the VIP
		{"10.0.0.1", nat.DropOwnSource},     // the DIP
		{"::", nat.DropMartian},
		{"::1", nat.DropMartian},
		{"ff02::1", nat.DropMartian},
		{"::ffff:10.0.0.10", nat.DropMartian},
		{"fd00::100", nat.DropOwnSource}, // the IPv6 VIP
		{"fd01::1", nat.DropOwnSource},   // the IPv6 DIP
	} {
		src := netip.MustParseAddr(c.src)
		dst := vip
		if !src.Is4() {
			dst = vip6
		}
		before := e.tb.Drops(c.want)
		r := e.tb.Process(nattest.TCP(netip.AddrPortFrom(src, 40000), dst, S, 0), &e.p, e.now)
		if r.Verdict != nat.Drop || r.Reason != c.want {
			t.Errorf("SYN from %s: %v %v, want drop %v", c.src, r.Verdict, r.Reason, c.want)
		}
		if e.tb.Drops(c.want) != before+1 {
			t.Errorf("SYN from %s: %v not counted", c.src, c.want)
		}
	}
	if e.tb.Len() != 0 {
		t.Fatalf("%d entries made for martians", e.tb.Len())
	}
	if r := e.in(cli, S); r.Verdict != nat.Forward {
		t.Errorf("client SYN: %+v", r)
	}
	if r := e.tb.Process(nattest.TCP(cli6, vip6, S, 0), &e.p, e.now); r.Verdict != nat.Forward {
		t.Errorf("IPv6 client SYN: %+v", r)
	}
	// A real server's address is not the director's: fib_validate_source
	// accepts it, and IPVS schedules a real server that connects to a VIP
	// like any client.
	for _, src := range []string{"172.16.1.5", "fd00::5"} {
		a := netip.MustParseAddr(src)
		dst := vip
		if a.Is6() {
			dst = vip6
		}
		if r := e.tb.Process(nattest.TCP(netip.AddrPortFrom(a, 40001), dst, S, 0), &e.p, e.now); r.Verdict != nat.Forward {
			t.Errorf("SYN from real server %s: %+v", src, r)
		}
	}
	// A martian to an address that is no service is the stack's.
	if r := e.tb.Process(nattest.TCP(nattest.AP("127.0.0.1:1"), nattest.AP("10.0.0.1:22"), S, 0), &e.p, e.now); r.Verdict != nat.Pass {
		t.Errorf("martian to a non-service: %+v", r)
	}
}

// withRouting inserts an 8-byte IPv6 Routing header of type typ with no
// segments left after the IPv6 header of b (the TCP checksum does not
// change: the final destination is the IPv6 destination).
func withRouting(b []byte, typ uint8) []byte {
	out := make([]byte, 0, len(b)+8)
	out = append(out, b[:40]...)
	out = append(out, b[6], 0, typ, 0, 0, 0, 0, 0)
	out = append(out, b[40:]...)
	out[6] = 43
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:])+8)
	return out
}

// IPv6 packets to a service with a Routing header of types 0 to 4 are
// dropped (ipv6_rthdr_rcv), not DNATed.
func TestRoutingHeaderToService(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers6)
	for typ := uint8(0); typ <= 4; typ++ {
		r := e.tb.Process(withRouting(nattest.TCP(cli6, vip6, S, 0), typ), &e.p, e.now)
		if r.Verdict != nat.Drop || r.Reason != nat.DropRoutingHeader {
			t.Errorf("routing type %d: %v %v", typ, r.Verdict, r.Reason)
		}
	}
	if n := e.tb.Drops(nat.DropRoutingHeader); n != 5 || e.tb.Len() != 0 {
		t.Errorf("%d counted, %d entries", n, e.tb.Len())
	}
}

// The martian checks run only for packets that find no connection: the
// per-packet path of an established one still allocates nothing.
func TestMartianCheckEstablishedNoAlloc(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	e.tb.SetLocalAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.1")})
	e.in(cli, S)
	pkt := nattest.TCP(cli, vip, A, 0)
	buf := make([]byte, len(pkt))
	var p nat.Packet
	if n := testing.AllocsPerRun(100, func() {
		copy(buf, pkt)
		e.tb.Process(buf, &p, e.now)
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
	// A martian SYN's drop allocates nothing either.
	m := nattest.TCP(nattest.AP("127.0.0.1:1"), vip, S, 0)
	if n := testing.AllocsPerRun(100, func() {
		copy(buf, m)
		e.tb.Process(buf[:len(m)], &p, e.now)
	}); n != 0 {
		t.Errorf("%v allocations per martian", n)
	}
}
