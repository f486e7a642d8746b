package nat_test

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// Linux's SYN options: MSS, SACK-permitted, timestamps, window scale.
func synOpts(mss uint16, tsval, tsecr uint32, ws byte) []byte {
	o := []byte{2, 4, byte(mss >> 8), byte(mss), 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, ws}
	binary.BigEndian.PutUint32(o[8:], tsval)
	binary.BigEndian.PutUint32(o[12:], tsecr)
	return o
}

// tsOpts is NOP NOP TS.
func tsOpts(tsval, tsecr uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], tsval)
	binary.BigEndian.PutUint32(o[8:], tsecr)
	return o
}

// roomy gives a packet room to grow in place, as the director's read
// buffers have.
func roomy(b []byte) []byte { return append(b, make([]byte, 2048)...)[:len(b)] }

// seg is a parsed TCP segment, for checking what the table sent.
type seg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	win      uint16
	opts     map[byte][]byte
	payload  []byte
}

func readSeg(t *testing.T, b []byte) seg {
	t.Helper()
	var p nat.Packet
	if r := nat.Parse(b, &p); r != nat.DropNone || p.Proto != 6 {
		t.Fatalf("not a TCP packet: %v", r)
	}
	if !nattest.L4ChecksumOK(p.B) {
		t.Fatalf("bad TCP checksum")
	}
	if !p.V6 && !nattest.IPv4HeaderOK(p.B) {
		t.Fatalf("bad IPv4 header checksum")
	}
	th := p.B[p.L4:]
	doff := int(th[12]>>4) * 4
	s := seg{src: netip.AddrPortFrom(p.Src(), p.SrcPort), dst: netip.AddrPortFrom(p.Dst(), p.DstPort),
		seq: binary.BigEndian.Uint32(th[4:]), ack: binary.BigEndian.Uint32(th[8:]), flags: th[13],
		win: binary.BigEndian.Uint16(th[14:]), opts: map[byte][]byte{}, payload: th[doff:]}
	for i := 20; i < doff; {
		switch th[i] {
		case 0:
			i = doff
			continue
		case 1:
			i++
			continue
		}
		l := int(th[i+1])
		s.opts[th[i]] = th[i+2 : i+l]
		i += l
	}
	return s
}

func u32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

type spEnv struct {
	*env
	c, v netip.AddrPort
	rs   netip.Addr
}

func newSPEnv(t *testing.T, c, v netip.AddrPort, rs netip.Addr, method rules.Method, laddr netip.Addr) *spEnv {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) {
		sc := nat.ServiceConfig{Proto: 6, Addr: v.Addr(), Port: v.Port(), Scheduler: "rr", SynProxy: true}
		if laddr.IsValid() {
			sc.LocalAddrs = []netip.Addr{laddr}
		}
		if _, err := tb.AddService(sc); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: v.Addr(), Port: v.Port()},
			nat.DestConfig{Addr: rs, Port: 8080, Weight: 1, Method: method}); err != nil {
			t.Fatal(err)
		}
	})
	return &spEnv{env: e, c: c, v: v, rs: rs}
}

func (e *spEnv) send(s nattest.Seg) (nat.Result, []byte) {
	e.t.Helper()
	s.Proto = 6
	b := roomy(nattest.Build(s))
	r := e.tb.Process(b, &e.p, e.now)
	return r, e.p.B
}

// The whole life of a SYN-proxied connection, for masquerading and full
// NAT, IPv4 and IPv6: the cookie SYN-ACK with no entry, the cookie ACK
// that makes one and becomes the SYN to the real server, the client's
// first request held until the server answers, and the translation of
// sequence numbers, SACK blocks and timestamps both ways.
func TestSynProxyConnection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		c, v      netip.AddrPort
		rs, laddr netip.Addr
		method    rules.Method
	}{
		{"masq4", cli, vip, rs1, netip.Addr{}, rules.Masquerade},
		{"masq6", cli6, vip6, rs6, netip.Addr{}, rules.Masquerade},
		{"fullnat4", cli, vip, rs1, netip.MustParseAddr("172.16.1.200"), rules.FullNAT},
		{"fullnat6", cli6, vip6, rs6, netip.MustParseAddr("fd00::200"), rules.FullNAT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSPEnv(t, tc.c, tc.v, tc.rs, tc.method, tc.laddr)
			const cISN, rsISN = 1_000_000, 7_000_000
			// 1. SYN -> cookie SYN-ACK, nothing kept.
			r, b := e.send(nattest.Seg{Src: e.c, Dst: e.v, Flags: S, Seq: cISN, Options: synOpts(1460, 500, 0, 9), Window: 64240})
			if r.Verdict != nat.Reply || !r.Rebuilt {
				t.Fatalf("SYN: %+v", r)
			}
			sa := readSeg(t, b)
			if sa.src != e.v || sa.dst != e.c || sa.flags != S|A || sa.ack != cISN+1 {
				t.Fatalf("SYN-ACK %+v", sa)
			}
			if e.tb.Len() != 0 {
				t.Fatalf("table holds %d entries after a SYN", e.tb.Len())
			}
			if _, ok := sa.opts[4]; !ok || len(sa.opts[2]) != 2 || sa.opts[3][0] != 7 || u32(sa.opts[8][4:]) != 500 {
				t.Fatalf("SYN-ACK options %v", sa.opts)
			}
			cookie, ourTS := sa.seq, u32(sa.opts[8])

			// A forged ACK is left to the stack and makes nothing. (As
			// in Linux, the MSS index is added in: an ACK off by one
			// or two can pass as another index.)
			r, _ = e.send(nattest.Seg{Src: e.c, Dst: e.v, Flags: A, Seq: cISN + 1, Ack: cookie + 1 + 1<<20, Options: tsOpts(501, ourTS)})
			if r.Verdict != nat.Pass || e.tb.Len() != 0 {
				t.Fatalf("forged ACK: %+v, %d entries", r, e.tb.Len())
			}

			// 2. The cookie ACK makes the connection: a SYN to the
			// server with the client's ISN and options.
			r, b = e.send(nattest.Seg{Src: e.c, Dst: e.v, Flags: A, Seq: cISN + 1, Ack: cookie + 1, Options: tsOpts(501, ourTS), Window: 502})
			if r.Verdict != nat.Forward || !r.Rebuilt || r.Dir != nat.DirIn {
				t.Fatalf("cookie ACK: %+v", r)
			}
			syn := readSeg(t, b)
			if syn.dst != netip.AddrPortFrom(e.rs, 8080) || syn.flags != S || syn.seq != cISN {
				t.Fatalf("SYN to the server %+v", syn)
			}
			if _, ok := syn.opts[4]; !ok || syn.opts[3][0] != 9 || u32(syn.opts[8]) != 501 || u32(syn.opts[8][4:]) != 0 {
				t.Fatalf("SYN options %v", syn.opts)
			}
			if mss := binary.BigEndian.Uint16(syn.opts[2]); mss != 1460 && mss != 1440 {
				t.Fatalf("MSS %d", mss)
			}
			if e.tb.Len() != 1 {
				t.Fatalf("table holds %d", e.tb.Len())
			}
			local := syn.src // the client, or the local address

			// The client's request, sent before the server answered,
			// is held.
			req := []byte("GET / HTTP/1.1\r\n\r\n")
			r, _ = e.send(nattest.Seg{Src: e.c, Dst: e.v, Flags: A | nattest.PSH, Seq: cISN + 1, Ack: cookie + 1, Options: tsOpts(502, ourTS), Payload: req})
			if r.Verdict != nat.Drop || r.Reason != nat.DropSynProxy {
				t.Fatalf("early data: %+v", r)
			}

			// 3. The server's SYN-ACK becomes the held request.
			r, b = e.send(nattest.Seg{Src: netip.AddrPortFrom(e.rs, 8080), Dst: local, Flags: S | A, Seq: rsISN, Ack: cISN + 1,
				Options: synOpts(1400, 90000, 501, 7)})
			if r.Verdict != nat.Forward || !r.Rebuilt || r.Dir != nat.DirIn {
				t.Fatalf("server SYN-ACK: %+v", r)
			}
			d := readSeg(t, b)
			if d.dst != netip.AddrPortFrom(e.rs, 8080) || d.src != local || d.seq != cISN+1 || d.ack != rsISN+1 ||
				string(d.payload) != string(req) || u32(d.opts[8][4:]) != 90000 {
				t.Fatalf("held request to the server %+v", d)
			}
			if c, _ := e.tb.Lookup(6, e.c, e.v); c == nil || c.State() != nat.StateEstablished {
				t.Fatalf("connection %v", c)
			}

			// 4. The server's answer reaches the client in the cookie's
			// numbers and on the director's timestamp clock.
			r, b = e.send(nattest.Seg{Src: netip.AddrPortFrom(e.rs, 8080), Dst: local, Flags: A | nattest.PSH, Seq: rsISN + 1, Ack: cISN + 1 + uint32(len(req)),
				Options: tsOpts(90010, 502), Payload: []byte("HTTP/1.1 200 OK\r\n\r\n")})
			if r.Verdict != nat.Forward || r.Rebuilt {
				t.Fatalf("server data: %+v", r)
			}
			o := readSeg(t, b)
			if o.src != e.v || o.dst != e.c || o.seq != cookie+1 || o.ack != cISN+1+uint32(len(req)) ||
				u32(o.opts[8]) != ourTS+10 || u32(o.opts[8][4:]) != 502 {
				t.Fatalf("to the client %+v (cookie %d, ts %d)", o, cookie, ourTS)
			}
			// And the client's ACK with a SACK block in the server's
			// numbers.
			sack := append([]byte{1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0}, tsOpts(503, ourTS+10)...)
			binary.BigEndian.PutUint32(sack[4:], cookie+100)
			binary.BigEndian.PutUint32(sack[8:], cookie+200)
			r, b = e.send(nattest.Seg{Src: e.c, Dst: e.v, Flags: A, Seq: cISN + 1 + uint32(len(req)), Ack: cookie + 20, Options: sack})
			if r.Verdict != nat.Forward {
				t.Fatalf("client ACK: %+v", r)
			}
			a := readSeg(t, b)
			if a.ack != rsISN+20 || u32(a.opts[5]) != rsISN+100 || u32(a.opts[5][4:]) != rsISN+200 || u32(a.opts[8][4:]) != 90010 {
				t.Fatalf("to the server %+v", a)
			}
		})
	}
}

// Without data from the client the server's SYN-ACK becomes the ACK that
// completes its handshake; a second SYN-ACK (the ACK lost) is ACKed
// again; a server that refuses resets the client at the number it
// expects.
func TestSynProxyServerSide(t *testing.T) {
	e := newSPEnv(t, cli, vip, rs1, rules.Masquerade, netip.Addr{})
	open := func(c netip.AddrPort) uint32 {
		_, b := e.send(nattest.Seg{Src: c, Dst: vip, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})
		sa := readSeg(t, b)
		r, _ := e.send(nattest.Seg{Src: c, Dst: vip, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(6, u32(sa.opts[8])), Window: 700})
		if r.Verdict != nat.Forward {
			t.Fatalf("cookie ACK: %+v", r)
		}
		return sa.seq
	}
	open(cli)
	for range 2 {
		r, b := e.send(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: cli, Flags: S | A, Seq: 4000, Ack: 11, Options: synOpts(1460, 77, 6, 7)})
		if r.Verdict != nat.Forward || r.Dir != nat.DirIn {
			t.Fatalf("SYN-ACK: %+v", r)
		}
		a := readSeg(t, b)
		if a.flags != A || a.seq != 11 || a.ack != 4001 || a.win != 700 || u32(a.opts[8]) != 6 || u32(a.opts[8][4:]) != 77 || len(a.payload) != 0 {
			t.Fatalf("ACK to the server %+v", a)
		}
	}

	c2 := nattest.AP("10.0.0.11:40001")
	cookie := open(c2)
	r, b := e.send(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: c2, Flags: R | A, Seq: 0, Ack: 11})
	if r.Verdict != nat.Forward || r.Dir != nat.DirOut {
		t.Fatalf("RST: %+v", r)
	}
	if rst := readSeg(t, b); rst.seq != cookie+1 || rst.dst != c2 || rst.flags&R == 0 {
		t.Fatalf("RST to the client %+v", rst)
	}
	counts := map[string]uint64{}
	for _, c := range e.tb.SynProxyCounters() {
		counts[c.Name] = c.Value
	}
	if counts["cookies_sent"] != 2 || counts["cookie_acks"] != 2 || counts["rs_reset"] != 1 {
		t.Fatalf("counters %v", counts)
	}
}

// A cookie is good for at most two minutes (MAX_SYNCOOKIE_AGE), and only
// for the connection it was made for.
func TestSynProxyCookieAge(t *testing.T) {
	e := newSPEnv(t, cli, vip, rs1, rules.Masquerade, netip.Addr{})
	_, b := e.send(nattest.Seg{Src: cli, Dst: vip, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})
	sa := readSeg(t, b)
	ack := func(c netip.AddrPort) nat.Result {
		r, _ := e.send(nattest.Seg{Src: c, Dst: vip, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(6, u32(sa.opts[8]))})
		return r
	}
	if r := ack(nattest.AP("10.0.0.10:40001")); r.Verdict != nat.Pass {
		t.Fatalf("another port's ACK: %+v", r)
	}
	e.advance(3 * time.Minute)
	if r := ack(cli); r.Verdict != nat.Pass {
		t.Fatalf("a 3-minute-old cookie: %+v", r)
	}
	e.advance(-2 * time.Minute)
	if r := ack(cli); r.Verdict != nat.Forward {
		t.Fatalf("a 1-minute-old cookie: %+v", r)
	}
}

// The automatic mode sends cookies only while the table is at its bound;
// off, a full table refuses (or early-drops) as before.
func TestSynProxyAuto(t *testing.T) {
	e := newEnv(t, nat.Config{MaxConns: 10}, twoServers("rr", 6))
	if e.tb.SynProxy() != nat.SynProxyAuto {
		t.Fatalf("default mode %d", e.tb.SynProxy())
	}
	for i := range 10 {
		if r := e.in(spoofed(i), S); r.Verdict != nat.Forward {
			t.Fatalf("SYN %d below the bound: %+v", i, r)
		}
	}
	if r := e.tb.Process(roomy(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: S, Seq: 1, Options: synOpts(1460, 1, 0, 7)})), &e.p, e.now); r.Verdict != nat.Reply {
		t.Fatalf("SYN at the bound: %+v", r)
	}
	e.tb.SetSynProxy(nat.SynProxyOff)
	if r := e.in(cli, S); r.Verdict == nat.Reply {
		t.Fatalf("SYN with the proxy off: %+v", r)
	}
	e.tb.SetSynProxy(nat.SynProxyAlways)
	e2 := nattest.AP("10.9.9.9:1000")
	if r := e.tb.Process(roomy(nattest.TCP(e2, vip, S, 0)), &e.p, e.now); r.Verdict != nat.Reply {
		t.Fatalf("bare SYN, always: %+v", r)
	}
	if v, _ := e.tb.Sysctl("synproxy"); v != nat.SynProxyAlways {
		t.Fatalf("sysctl %d", v)
	}
}

// The cookie SYN-ACK and an established proxied connection's packets
// allocate nothing.
func TestSynProxyAllocatesNothing(t *testing.T) {
	e := newSPEnv(t, cli, vip, rs1, rules.Masquerade, netip.Addr{})
	syn := roomy(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)}))
	work := slices.Clone(syn)[:len(syn)]
	if n := testing.AllocsPerRun(200, func() {
		copy(work[:cap(work)], syn[:cap(syn)])
		if r := e.tb.Process(work[:len(syn)], &e.p, e.now); r.Verdict != nat.Reply {
			t.Fatalf("%+v", r)
		}
	}); n != 0 {
		t.Fatalf("cookie SYN-ACK: %v allocations", n)
	}
	_, b := e.send(nattest.Seg{Src: cli, Dst: vip, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})
	sa := readSeg(t, b)
	e.send(nattest.Seg{Src: cli, Dst: vip, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(6, u32(sa.opts[8]))})
	e.send(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: cli, Flags: S | A, Seq: 4000, Ack: 11, Options: synOpts(1460, 77, 6, 7)})
	in := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(7, u32(sa.opts[8])), Size: 1000})
	out := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: cli, Proto: 6, Flags: A, Seq: 4001, Ack: 11, Options: tsOpts(78, 7), Size: 1000})
	bi, bo := slices.Clone(in), slices.Clone(out)
	if n := testing.AllocsPerRun(200, func() {
		copy(bi, in)
		copy(bo, out)
		if r := e.tb.Process(bi, &e.p, e.now); r.Verdict != nat.Forward {
			t.Fatalf("in %+v", r)
		}
		if r := e.tb.Process(bo, &e.p, e.now); r.Verdict != nat.Forward {
			t.Fatalf("out %+v", r)
		}
	}); n != 0 {
		t.Fatalf("established: %v allocations", n)
	}
}

// The flood of TestEarlyDropUnderSYNFlood with the SYN proxy in its
// default, automatic mode: once the service's half-open connections are
// at synproxy_backlog (or, with a backlog past it, the table is at its
// bound) every SYN gets a cookie and no entry, and every client that
// answers its cookie connects.
func TestSynProxyUnderSYNFlood(t *testing.T) {
	t.Run("backlog", func(t *testing.T) { synProxyUnderSYNFlood(t, nat.DefaultSynProxyBacklog, nat.DefaultSynProxyBacklog) })
	t.Run("table", func(t *testing.T) { synProxyUnderSYNFlood(t, 1<<30, 10000) })
}

func synProxyUnderSYNFlood(t *testing.T, backlog, want int) {
	const max = 10000
	e := newEnv(t, nat.Config{MaxConns: max}, twoServers("rr", 6))
	setSysctl(t, e.tb, "synproxy_backlog", backlog)
	synFlood := func(from, n int) {
		for i := range n {
			e.tb.Process(roomy(nattest.TCP(spoofed(from+i), vip, S, 0)), &e.p, e.now)
		}
	}
	synFlood(0, 5*max)
	if e.tb.Len() != want {
		t.Fatalf("table at %d, want %d", e.tb.Len(), want)
	}
	ok := 0
	const clients = 1000
	for i := range clients {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.20"), uint16(20000+i))
		r, b := (&spEnv{env: e}).send(nattest.Seg{Src: c, Dst: vip, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})
		if r.Verdict != nat.Reply {
			continue
		}
		sa := readSeg(t, b)
		synFlood(5*max+20*i, 20)
		r, b = (&spEnv{env: e}).send(nattest.Seg{Src: c, Dst: vip, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(6, u32(sa.opts[8]))})
		if r.Verdict != nat.Forward {
			continue
		}
		syn := readSeg(t, b)
		r, _ = (&spEnv{env: e}).send(nattest.Seg{Src: syn.dst, Dst: c, Flags: S | A, Seq: 4000, Ack: 11, Options: synOpts(1460, 77, 6, 7)})
		if r.Verdict == nat.Forward {
			ok++
		}
	}
	if e.tb.Len() > max {
		t.Fatalf("table at %d past its bound %d", e.tb.Len(), max)
	}
	if ok < clients*99/100 {
		t.Fatalf("%d of %d clients connected through the SYN proxy during the flood", ok, clients)
	}
	t.Logf("%d/%d clients connected; table %d; %v", ok, clients, e.tb.Len(), e.tb.SynProxyCounters())
}

var (
	spVIP  = nattest.AP("172.16.1.100:8443")
	spCli2 = nattest.AP("10.0.0.10:40001")
)

// spService adds a SYN-proxied service, spVIP, with rs1:8080.
func spService(t testing.TB, tb *nat.Table) {
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: spVIP.Addr(), Port: spVIP.Port(), Scheduler: "rr", SynProxy: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: spVIP.Addr(), Port: spVIP.Port()}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: 1}); err != nil {
		t.Fatal(err)
	}
}

// spHandshake takes client c to spVIP through the cookie handshake (ISN
// 10) and, if established, the server's SYN-ACK (ISN 4000), at time 1.
func spHandshake(t testing.TB, tb *nat.Table, c netip.AddrPort, established bool) {
	var p nat.Packet
	r := tb.Process(roomy(nattest.Build(nattest.Seg{Src: c, Dst: spVIP, Proto: 6, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})), &p, 1)
	if r.Verdict != nat.Reply {
		t.Fatalf("SYN: %+v", r)
	}
	th := p.B[len(p.B)-40:]
	cookie := binary.BigEndian.Uint32(th[4:])
	ts := binary.BigEndian.Uint32(th[32:]) // MSS, SACKOK+TS: TSval at 24+8
	r = tb.Process(roomy(nattest.Build(nattest.Seg{Src: c, Dst: spVIP, Proto: 6, Flags: A, Seq: 11, Ack: cookie + 1, Options: tsOpts(6, ts)})), &p, 1)
	if r.Verdict != nat.Forward {
		t.Fatalf("cookie ACK: %+v", r)
	}
	if established {
		r = tb.Process(roomy(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: c, Proto: 6, Flags: S | A, Seq: 4000, Ack: 11, Options: synOpts(1460, 77, 6, 7)})), &p, 1)
		if r.Verdict != nat.Forward {
			t.Fatalf("server SYN-ACK: %+v", r)
		}
	}
}

// BenchmarkSynProxyCookie is the director's cost of one flood SYN with the
// SYN proxy on: checks, the cookie and the SYN-ACK rebuilt in place.
func BenchmarkSynProxyCookie(b *testing.B) {
	tb := nat.New(nat.Config{})
	tb.SetSynProxy(nat.SynProxyAlways)
	twoServers("rr", 6)(tb)
	syn := roomy(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)}))
	work := slices.Clone(syn[:cap(syn)])
	var p nat.Packet
	b.ReportAllocs()
	for b.Loop() {
		copy(work, syn[:cap(syn)])
		tb.Process(work[:len(syn)], &p, 1)
	}
}

// A "too big" from a router on the client's side about a segment the
// director sent the client quotes the cookie's numbers; the real server
// gets it with its own sequence number, or it would ignore it.
func TestSynProxyICMPQuote(t *testing.T) {
	tb := nat.New(nat.Config{})
	spService(t, tb)
	spHandshake(t, tb, cli, true)
	var p nat.Packet
	seg := roomy(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(rs1, 8080), Dst: cli, Proto: 6, Flags: A, Seq: 4001 + 500, Ack: 11, DF: true, Size: 1400}))
	if r := tb.Process(seg, &p, 1); r.Verdict != nat.Forward {
		t.Fatalf("server segment: %+v", r)
	}
	toClient := slices.Clone(p.B)
	var q nat.Packet
	nat.Parse(toClient, &q)
	icmp := make([]byte, 1280)
	n := nat.BuildTooBig(icmp, &q, netip.MustParseAddr("10.0.0.1"), 1280)
	if r := tb.Process(roomy(icmp[:n]), &p, 1); r.Verdict != nat.Forward || r.Dir != nat.DirIn {
		t.Fatalf("too big: %+v", r)
	}
	if !p.VerifyL4Checksum() {
		t.Fatal("ICMP checksum broken")
	}
	if seq := binary.BigEndian.Uint32(p.B[p.Inner.L4+4:]); seq != 4501 {
		t.Fatalf("quoted sequence number %d, want the server's 4501", seq)
	}
}
