package nat_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

var ppVIP = nattest.AP("172.16.1.102:80")

func TestAppendProxyHeader(t *testing.T) {
	c4, v4 := nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80")
	c6, v6 := nattest.AP("[fd01::10]:40000"), nattest.AP("[fd00::100]:443")
	v2 := func(famProto byte, addrs ...[]byte) []byte {
		b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21")
		b = append(b, famProto)
		n := 0
		for _, a := range addrs {
			n += len(a)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		for _, a := range addrs {
			b = append(b, a...)
		}
		return b
	}
	ip := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	ports := func(a, b uint16) []byte {
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, a), b)
	}
	for _, c := range []struct {
		name     string
		v        int
		src, dst netip.AddrPort
		want     []byte
	}{
		{"v1 TCP4", 1, c4, v4, []byte("PROXY TCP4 10.0.0.10 172.16.1.100 40000 80\r\n")},
		{"v1 TCP6", 1, c6, v6, []byte("PROXY TCP6 fd01::10 fd00::100 40000 443\r\n")},
		{"v1 mapped", 1, netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.10"), 1), v4,
			[]byte("PROXY TCP4 10.0.0.10 172.16.1.100 1 80\r\n")},
		{"v1 UNKNOWN mixed", 1, c4, v6, []byte("PROXY UNKNOWN\r\n")},
		{"v1 UNKNOWN invalid", 1, netip.AddrPort{}, v4, []byte("PROXY UNKNOWN\r\n")},
		{"v1 longest", 1, nattest.AP("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), nattest.AP("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
			[]byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")},
		{"v2 TCP4", 2, c4, v4, v2(0x11, ip("10.0.0.10"), ip("172.16.1.100"), ports(40000, 80))},
		{"v2 TCP6", 2, c6, v6, v2(0x21, ip("fd01::10"), ip("fd00::100"), ports(40000, 443))},
		{"v2 UNSPEC", 2, c4, v6, v2(0x00)},
	} {
		got := nat.AppendProxyHeader(nil, c.v, c.src, c.dst)
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if len(got) > nat.ProxyMaxLen {
			t.Errorf("%s: %d bytes, over ProxyMaxLen", c.name, len(got))
		}
		if n, ver := nat.ClientProxyHeaderLen(append(got, "GET / HTTP/1.1\r\n"...)); n != len(got) || ver != c.v {
			t.Errorf("%s: ClientProxyHeaderLen = %d, %d", c.name, n, ver)
		}
	}
	var buf [nat.ProxyMaxLen]byte
	if n := testing.AllocsPerRun(100, func() { nat.AppendProxyHeader(buf[:0], 1, c6, v6) }); n != 0 {
		t.Fatalf("AppendProxyHeader: %v allocations", n)
	}
}

func TestClientProxyHeaderLen(t *testing.T) {
	for _, c := range []struct {
		data   string
		n, ver int
	}{
		{"GET / HTTP/1.1\r\n", 0, 0},
		{"PROXY TCP4 1.2.3.4", 0, 0}, // incomplete
		{"PROXY UNKNOWN\r\nX", 15, 1},
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", 0, 0}, // addresses missing
		{"\r\n\r\n\x00\r\nQUIT\n\x21\x00\x00\x00", 16, 2},
		{"\r\n\r\n\x00\r\nQUIT\n\x11\x00\x00\x00", 0, 0}, // version 1 in a v2 signature
	} {
		if n, v := nat.ClientProxyHeaderLen([]byte(c.data)); n != c.n || v != c.ver {
			t.Errorf("%q: %d, %d; want %d, %d", c.data, n, v, c.n, c.ver)
		}
	}
}

// proxyFlow sets up a full-NAT service with the PROXY protocol setting
// svcPP (and the real server's own srvPP), opens a connection with a
// handshake whose SYN-ACK announces MSS 1460, and returns the table, the
// connection's local tuple and the MSS the client saw.
func proxyFlow(t *testing.T, v6 bool, svcPP, srvPP rules.ProxyProtocol) (*nat.Table, netip.AddrPort, netip.AddrPort, netip.AddrPort, uint16) {
	t.Helper()
	v, c, rs, lads := vip, cli, rs1, lad4
	if v6 {
		v, c, rs, lads = vip6, cli6, rs6, lad6
	}
	tb := nat.New(nat.Config{Seed: 3})
	k := nat.ServiceKey{Proto: 6, Addr: v.Addr(), Port: v.Port()}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: v.Addr(), Port: v.Port(), Scheduler: "rr", LocalAddrs: lads, ProxyProtocol: svcPP}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: rs, Port: 8080, Weight: 1, Method: rules.FullNAT, ProxyProtocol: srvPP}); err != nil {
		t.Fatal(err)
	}
	var p nat.Packet
	r := tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: S, Seq: 1000}), &p, 1)
	if r.Verdict != nat.Forward || r.Proxy {
		t.Fatalf("SYN: %+v", r)
	}
	l := r.Conn.Local()
	rsap := netip.AddrPortFrom(rs, 8080)
	r = tb.Process(nattest.Build(nattest.Seg{Src: rsap, Dst: l, Proto: 6, Flags: S | A, Seq: 5000, Ack: 1001,
		Options: []byte{2, 4, 0x05, 0xb4}}), &p, 2)
	if r.Verdict != nat.Forward || !p.VerifyL4Checksum() {
		t.Fatalf("SYN-ACK: %+v", r)
	}
	mss := binary.BigEndian.Uint16(p.B[p.L4+22:])
	return tb, c, v, l, mss
}

func TestProxyProtocolFlow(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, setting := range []rules.ProxyProtocol{rules.ProxyV1, rules.ProxyV2} {
			t.Run(fmt.Sprintf("v6=%v/%v", v6, setting), func(t *testing.T) {
				tb, c, v, l, mss := proxyFlow(t, v6, setting, rules.ProxyUnset)
				hdr := nat.AppendProxyHeader(nil, setting.Version(), c, v)
				h := uint32(len(hdr))
				if mss != 1460-uint16(h) {
					t.Fatalf("MSS %d, want %d", mss, 1460-h)
				}
				var p nat.Packet
				// The client's ACK of the SYN-ACK carries no data:
				// no header.
				r := tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001, Ack: 5001}), &p, 3)
				if r.Verdict != nat.Forward || r.Proxy || p.Seq() != 1001 {
					t.Fatalf("bare ACK: %+v seq %d", r, p.Seq())
				}
				req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				first := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A | nattest.PSH, Seq: 1001, Ack: 5001, Payload: req})
				var sent [2][]byte
				for i := range sent {
					// The first segment and its retransmission.
					r = tb.Process(append([]byte(nil), first...), &p, 4)
					if r.Verdict != nat.Forward || !r.Proxy {
						t.Fatalf("first data (%d): %+v", i, r)
					}
					dst := make([]byte, 2000)
					n := nat.InsertProxy(dst, &p, r.Conn)
					if n != len(first)+len(hdr) {
						t.Fatalf("InsertProxy: %d bytes, want %d", n, len(first)+len(hdr))
					}
					if !p.VerifyL4Checksum() || (!v6 && !nattest.IPv4HeaderOK(dst[:n])) || !nattest.L4ChecksumOK(dst[:n]) {
						t.Fatal("checksums after InsertProxy")
					}
					if p.Seq() != 1001 || !bytes.Equal(p.Payload(), append(append([]byte(nil), hdr...), req...)) {
						t.Fatalf("seq %d payload %q", p.Seq(), p.Payload())
					}
					if p.Src() != l.Addr() || p.SrcPort != l.Port() {
						t.Fatalf("source %v:%d", p.Src(), p.SrcPort)
					}
					sent[i] = dst[:n]
				}
				if !bytes.Equal(sent[0], sent[1]) {
					t.Fatal("the retransmission differs")
				}
				if tb.ProxyHeaders() != 2 {
					t.Fatalf("ProxyHeaders %d", tb.ProxyHeaders())
				}
				// The next segment is shifted by the header.
				next := uint32(1001 + len(req))
				r = tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: next, Ack: 5001, Payload: []byte("more")}), &p, 5)
				if r.Proxy || p.Seq() != next+h || !p.VerifyL4Checksum() {
					t.Fatalf("second segment: %+v seq %d", r, p.Seq())
				}
				// A router on the real server's side says the
				// segment was too big: the client must find its own
				// number in the quote.
				icmp := make([]byte, 1500)
				router := netip.MustParseAddr("172.16.1.254")
				if v6 {
					router = netip.MustParseAddr("fd00::254")
				}
				n := nat.BuildTooBig(icmp, &p, router, 1400)
				var ip nat.Packet
				if r := tb.Process(icmp[:n], &ip, 5); r.Verdict != nat.Forward || r.Dir != nat.DirOut {
					t.Fatalf("ICMP: %+v", r)
				}
				in := ip.Inner
				if q := binary.BigEndian.Uint32(ip.B[in.L4+4:]); q != next || !ip.VerifyL4Checksum() || ip.InnerSrc() != c.Addr() {
					t.Fatalf("ICMP quotes seq %d from %v, want %d from %v; checksum ok %v", q, ip.InnerSrc(), next, c.Addr(), ip.VerifyL4Checksum())
				}
				// The real server acknowledges everything and SACKs
				// a later range; the client sees its own numbers.
				rs := r.Conn.Dest()
				ack := next + h + 4
				sack := []byte{1, 1, 5, 10}
				sack = binary.BigEndian.AppendUint32(sack, ack+100)
				sack = binary.BigEndian.AppendUint32(sack, ack+200)
				r = tb.Process(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs.Addr, 8080), Dst: l, Proto: 6, Flags: A, Seq: 5001, Ack: ack, Options: sack}), &p, 6)
				if r.Verdict != nat.Forward || p.Ack() != next+4 || !p.VerifyL4Checksum() {
					t.Fatalf("reply: %+v ack %d, want %d", r, p.Ack(), next+4)
				}
				if s := binary.BigEndian.Uint32(p.B[p.L4+24:]); s != next+4+100 {
					t.Fatalf("SACK left edge %d, want %d", s, next+4+100)
				}
				// An ack of the header alone acknowledges nothing of
				// the client's.
				r = tb.Process(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs.Addr, 8080), Dst: l, Proto: 6, Flags: A, Seq: 5001, Ack: 1001 + h}), &p, 7)
				if p.Ack() != 1001 {
					t.Fatalf("ack of the header alone: %d", p.Ack())
				}
			})
		}
	}
}

// A real server set to "disable" in a service with the PROXY protocol
// gets plain full NAT; a client's own header is passed on by an insecure
// setting of its version, and replaced otherwise.
func TestProxyProtocolSettings(t *testing.T) {
	tb, c, v, _, mss := proxyFlow(t, false, rules.ProxyV1, rules.ProxyDisable)
	if mss != 1460 {
		t.Fatalf("disabled: MSS %d", mss)
	}
	var p nat.Packet
	r := tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001, Ack: 5001, Payload: []byte("GET")}), &p, 3)
	if r.Proxy || !r.Conn.FullNAT() {
		t.Fatalf("disabled: %+v", r)
	}
	own := append(nat.AppendProxyHeader(nil, 1, nattest.AP("1.2.3.4:5"), nattest.AP("6.7.8.9:10")), "GET"...)
	for _, s := range []rules.ProxyProtocol{rules.ProxyV1Insecure, rules.ProxyV1, rules.ProxyV2Insecure} {
		tb, c, v, _, _ := proxyFlow(t, false, s, rules.ProxyUnset)
		r := tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001, Ack: 5001, Payload: own}), &p, 3)
		if s == rules.ProxyV1Insecure {
			if r.Proxy || !bytes.Equal(p.Payload(), own) {
				t.Fatalf("%v: %+v %q", s, r, p.Payload())
			}
			continue
		}
		if !r.Proxy {
			t.Fatalf("%v: no header", s)
		}
		dst := make([]byte, 2000)
		n := nat.InsertProxy(dst, &p, r.Conn)
		want := append(nat.AppendProxyHeader(nil, s.Version(), c, v), "GET"...)
		if n == 0 || !bytes.Equal(p.Payload(), want) || !nattest.L4ChecksumOK(dst[:n]) {
			t.Fatalf("%v: %q, want %q", s, p.Payload(), want)
		}
		// The shift is the net growth.
		r = tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001 + uint32(len(own)), Ack: 5001, Payload: []byte("x")}), &p, 4)
		if d := p.Seq() - (1001 + uint32(len(own))); int(int32(d)) != len(want)-len(own) {
			t.Fatalf("%v: shift %d, want %d", s, int32(d), len(want)-len(own))
		}
	}
}

func TestProxyProtocolTooBig(t *testing.T) {
	tb := nat.New(nat.Config{Seed: 3, EgressMTU: func(netip.Addr) int { return 1500 }})
	k := nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr", LocalAddrs: lad4, ProxyProtocol: rules.ProxyV2}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(k, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, Method: rules.FullNAT}); err != nil {
		t.Fatal(err)
	}
	var p nat.Packet
	tb.Process(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: S, Seq: 1000}), &p, 1)
	// A full-sized first segment (the client ignored the MSS) cannot
	// take the 28-byte header: the client is told to send 28 less.
	r := tb.Process(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Seq: 1001, Size: 1500, DF: true}), &p, 2)
	if r.Verdict != nat.TooBig || r.MTU != 1500-28 {
		t.Fatalf("%+v", r)
	}
	r = tb.Process(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Seq: 1001, Size: 1500 - 28, DF: true}), &p, 3)
	if r.Verdict != nat.Forward || !r.Proxy {
		t.Fatalf("%+v", r)
	}
	// Later full-sized segments are not the first: they pass.
	r = tb.Process(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Seq: 3000, Size: 1500, DF: true}), &p, 4)
	if r.Verdict != nat.Forward || r.Proxy {
		t.Fatalf("%+v", r)
	}
}

func TestProxyProtocolAllocs(t *testing.T) {
	tb, c, v, l, _ := proxyFlow(t, false, rules.ProxyV1, rules.ProxyUnset)
	first := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001, Ack: 5001, Payload: []byte("GET / HTTP/1.0\r\n\r\n")})
	later := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1100, Ack: 5001, Payload: []byte("x")})
	reply := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: l, Proto: 6, Flags: A, Seq: 5001, Ack: 1200, Options: []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2}})
	bufs := [3][]byte{make([]byte, len(first)), make([]byte, len(later)), make([]byte, len(reply))}
	dst := make([]byte, 2000)
	var p nat.Packet
	if n := testing.AllocsPerRun(100, func() {
		copy(bufs[0], first)
		r := tb.Process(bufs[0], &p, 5)
		if nat.InsertProxy(dst, &p, r.Conn) == 0 {
			panic("no header")
		}
		copy(bufs[1], later)
		tb.Process(bufs[1], &p, 5)
		copy(bufs[2], reply)
		tb.Process(bufs[2], &p, 5)
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

func BenchmarkProxyProtocolSegment(b *testing.B) {
	t := &testing.T{}
	tb, c, v, _, _ := proxyFlow(t, false, rules.ProxyV2, rules.ProxyUnset)
	later := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1100, Ack: 5001, Payload: make([]byte, 1400)})
	buf := make([]byte, len(later))
	var p nat.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(later)))
	for b.Loop() {
		copy(buf, later)
		tb.Process(buf, &p, 5)
	}
}

// A first data segment that arrives as a GSO super-packet with a partial
// checksum (a TUN with offloads): the header goes in, the checksum stays
// partial for the new length, and the segments the device cuts at
// SegLen come out right. The MTU applies per segment: a super-packet
// larger than the MTU is not refused for the header.
func TestProxyProtocolOffload(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		tb := nat.New(nat.Config{Seed: 3, EgressMTU: func(netip.Addr) int { return 1500 }})
		v, c, rs, lads := vip, cli, rs1, lad4
		if v6 {
			v, c, rs, lads = vip6, cli6, rs6, lad6
		}
		k := nat.ServiceKey{Proto: 6, Addr: v.Addr(), Port: v.Port()}
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: v.Addr(), Port: v.Port(), Scheduler: "rr", LocalAddrs: lads, ProxyProtocol: rules.ProxyV1}); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddDest(k, nat.DestConfig{Addr: rs, Port: 8080, Weight: 1, Method: rules.FullNAT}); err != nil {
			t.Fatal(err)
		}
		var p nat.Packet
		tb.Process(nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: S, Seq: 1000}), &p, 1)
		data := make([]byte, 4000)
		for i := range data {
			data[i] = byte(i)
		}
		b := nattest.Build(nattest.Seg{Src: c, Dst: v, Proto: 6, Flags: A, Seq: 1001, Ack: 1, Payload: data, DF: true})
		start, off := nattest.Partial(b)
		r := tb.ProcessOffload(b, &p, 2, nat.Offload{SegLen: 1400, PartialCsum: true})
		if r.Verdict != nat.Forward || !r.Proxy {
			t.Fatalf("v6=%v: %+v", v6, r)
		}
		dst := make([]byte, len(b)+nat.ProxyMaxLen)
		n := nat.InsertProxy(dst, &p, r.Conn)
		hdr := nat.AppendProxyHeader(nil, 1, c, v)
		if n != len(b)+len(hdr) || !bytes.Equal(p.Payload(), append(hdr, data...)) {
			t.Fatalf("v6=%v: %d bytes", v6, n)
		}
		out := dst[:n]
		// Still partial: the field is the pseudo-header sum of the new
		// length, which the device completes.
		nattest.Finish(out, start, off)
		if !nattest.L4ChecksumOK(out) || (!v6 && !nattest.IPv4HeaderOK(out)) {
			t.Fatalf("v6=%v: checksum after the device completes it", v6)
		}
	}
}

// With the SYN proxy the connection starts from the cookie ACK, which
// tells the client's ISN: the request held until the server answers goes
// to it with the header in front, and the later numbers are shifted on
// top of the SYN proxy's translation.
func TestProxyProtocolSynProxy(t *testing.T) {
	laddr := netip.MustParseAddr("172.16.1.200")
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr", SynProxy: true,
			LocalAddrs: []netip.Addr{laddr}, ProxyProtocol: rules.ProxyV2}); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()},
			nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1, Method: rules.FullNAT}); err != nil {
			t.Fatal(err)
		}
	})
	sp := &spEnv{env: e, c: cli, v: vip, rs: rs1}
	const cISN, rsISN = 1_000_000, 7_000_000
	_, b := sp.send(nattest.Seg{Src: cli, Dst: vip, Flags: S, Seq: cISN, Options: synOpts(1460, 500, 0, 9), Window: 64240})
	sa := readSeg(t, b)
	cookie, ourTS := sa.seq, u32(sa.opts[8])
	r, b := sp.send(nattest.Seg{Src: cli, Dst: vip, Flags: A, Seq: cISN + 1, Ack: cookie + 1, Options: tsOpts(501, ourTS), Window: 502})
	if r.Verdict != nat.Forward || r.Proxy {
		t.Fatalf("cookie ACK: %+v", r)
	}
	local := readSeg(t, b).src
	req := []byte("GET / HTTP/1.1\r\n\r\n")
	sp.send(nattest.Seg{Src: cli, Dst: vip, Flags: A | nattest.PSH, Seq: cISN + 1, Ack: cookie + 1, Options: tsOpts(502, ourTS), Payload: req})
	r, _ = sp.send(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: local, Flags: S | A, Seq: rsISN, Ack: cISN + 1,
		Options: synOpts(1400, 90000, 501, 7)})
	if r.Verdict != nat.Forward || !r.Proxy {
		t.Fatalf("held request: %+v", r)
	}
	dst := make([]byte, 2000)
	n := nat.InsertProxy(dst, &e.p, r.Conn)
	hdr := nat.AppendProxyHeader(nil, 2, cli, vip)
	d := readSeg(t, dst[:n])
	if d.seq != cISN+1 || d.ack != rsISN+1 || string(d.payload) != string(hdr)+string(req) || !nattest.L4ChecksumOK(dst[:n]) {
		t.Fatalf("held request to the server %+v", d)
	}
	// The next client segment is shifted by the header; the server's
	// acknowledgement of everything comes back to the client's number.
	next := cISN + 1 + uint32(len(req))
	_, b = sp.send(nattest.Seg{Src: cli, Dst: vip, Flags: A, Seq: next, Ack: cookie + 1, Options: tsOpts(503, ourTS), Payload: []byte("x")})
	if s := readSeg(t, b); s.seq != next+uint32(len(hdr)) || s.ack != rsISN+1 {
		t.Fatalf("second segment %+v", s)
	}
	_, b = sp.send(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: local, Flags: A, Seq: rsISN + 1, Ack: next + uint32(len(hdr)) + 1,
		Options: tsOpts(90010, 503)})
	if o := readSeg(t, b); o.ack != next+1 || o.seq != cookie+1 {
		t.Fatalf("to the client %+v", o)
	}
}
