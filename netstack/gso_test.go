package netstack_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

// Tests of the in-place GSO path: super-packets and partial checksums read
// whole from a tun.GSODevice, NATed once, and written whole by the bypass
// to a device that takes them (WriteGSO) or cut up for one that does not.

// ---- a fake tun.GSODevice ----

// gsoIn is a packet the test hands to a fakeGSO's reader.
type gsoIn struct {
	pkt []byte
	g   tun.GSO
}

// gsoOut is a packet written to a fakeGSO.
type gsoOut struct {
	pkt    []byte
	g      tun.GSO
	viaGSO bool // by WriteGSO (else Write)
}

// fakeGSO is an in-memory tun.GSODevice: ReadGSO hands out what the test
// injects, laid out in the arena as the Linux offload device does (each
// packet behind its headroom, 8-byte aligned, junk in front), and Write
// and WriteGSO record what they are given. Read, used with Config.NoGSO,
// cuts super-packets up as the Linux device's Read does.
type fakeGSO struct {
	name string
	in   chan []gsoIn
	done chan struct{}
	once sync.Once

	// reader side (one goroutine)
	backlog []gsoIn
	sp      tun.Splitter

	mu        sync.Mutex
	out       []gsoOut
	readCalls int
	badWrites []string
}

const fakeHeadroom = 10

var _ tun.GSODevice = (*fakeGSO)(nil)

func newFakeGSO(name string) *fakeGSO {
	return &fakeGSO{name: name, in: make(chan []gsoIn, 64), done: make(chan struct{})}
}

// inject queues packets for the reader; one call's packets come out of
// one ReadGSO (as far as the arena and pkts allow).
func (d *fakeGSO) inject(pkts ...gsoIn) {
	for i := range pkts {
		pkts[i].pkt = bytes.Clone(pkts[i].pkt)
	}
	d.in <- pkts
}

// next returns the next injected packet, waiting for one if block.
func (d *fakeGSO) next(block bool) (gsoIn, bool, error) {
	for len(d.backlog) == 0 {
		if block {
			select {
			case b := <-d.in:
				d.backlog = b
			case <-d.done:
				return gsoIn{}, false, fmt.Errorf("read %s: %w", d.name, tun.ErrClosed)
			}
			continue
		}
		select {
		case b := <-d.in:
			d.backlog = b
		default:
			return gsoIn{}, false, nil
		}
	}
	p := d.backlog[0]
	d.backlog = d.backlog[1:]
	return p, true, nil
}

func (d *fakeGSO) ReadGSO(arena []byte, headroom int, pkts []tun.GSOPacket) (int, error) {
	headroom = max(headroom, fakeHeadroom)
	if len(pkts) == 0 || len(arena) < headroom+tun.MaxGSOPacket+64 {
		return 0, fmt.Errorf("read %s: arena of %d bytes too small", d.name, len(arena))
	}
	d.mu.Lock()
	d.readCalls++
	d.mu.Unlock()
	n, pos := 0, 0
	for n < len(pkts) && pos+headroom+tun.MaxGSOPacket <= len(arena) {
		p, ok, err := d.next(n == 0)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		start := pos + headroom
		for i := pos; i < start; i++ {
			arena[i] = 0xee // what a virtio header leaves there
		}
		copy(arena[start:], p.pkt)
		pkts[n] = tun.GSOPacket{Off: start, Len: len(p.pkt), GSO: p.g}
		n++
		pos = (start + len(p.pkt) + 7) &^ 7
	}
	return n, nil
}

func (d *fakeGSO) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && n < len(sizes) {
		if !d.sp.Pending() {
			p, ok, err := d.next(n == 0)
			if err != nil {
				return 0, err
			}
			if !ok {
				break
			}
			if err := d.sp.Load(p.pkt, p.g); err != nil {
				continue
			}
		}
		m, err := d.sp.Next(bufs[n][offset:])
		if err != nil {
			continue
		}
		sizes[n] = m
		n++
	}
	return n, nil
}

func (d *fakeGSO) record(bufs [][]byte, gso []tun.GSO, offset int, viaGSO bool) (int, error) {
	select {
	case <-d.done:
		return 0, fmt.Errorf("write %s: %w", d.name, tun.ErrClosed)
	default:
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset < fakeHeadroom {
		d.badWrites = append(d.badWrites, fmt.Sprintf("offset %d below the headroom", offset))
		return 0, fmt.Errorf("write %s: offset %d", d.name, offset)
	}
	for i, b := range bufs {
		if len(b) < offset {
			d.badWrites = append(d.badWrites, fmt.Sprintf("buffer of %d bytes at offset %d", len(b), offset))
			return i, fmt.Errorf("write %s: short buffer", d.name)
		}
		// The header goes in front, in place, as the real device's.
		for j := offset - fakeHeadroom; j < offset; j++ {
			b[j] = 0xab
		}
	}
	for i, b := range bufs {
		o := gsoOut{pkt: bytes.Clone(b[offset:]), viaGSO: viaGSO}
		if gso != nil {
			o.g = gso[i]
		}
		d.out = append(d.out, o)
	}
	return len(bufs), nil
}

func (d *fakeGSO) Write(bufs [][]byte, offset int) (int, error) {
	return d.record(bufs, nil, offset, false)
}

func (d *fakeGSO) WriteGSO(bufs [][]byte, gso []tun.GSO, offset int) (int, error) {
	if len(gso) < len(bufs) {
		d.mu.Lock()
		d.badWrites = append(d.badWrites, fmt.Sprintf("%d states for %d packets", len(gso), len(bufs)))
		d.mu.Unlock()
		return 0, fmt.Errorf("write %s: %d offload states for %d packets", d.name, len(gso), len(bufs))
	}
	return d.record(bufs, gso, offset, true)
}

func (d *fakeGSO) BatchSize() int { return 128 }
func (d *fakeGSO) Headroom() int  { return fakeHeadroom }
func (d *fakeGSO) MTU() int       { return 1500 }
func (d *fakeGSO) Kind() tun.Kind { return tun.KindTUN }
func (d *fakeGSO) Name() string   { return d.name }
func (d *fakeGSO) Close() error   { d.once.Do(func() { close(d.done) }); return nil }
func (d *fakeGSO) written() []gsoOut {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]gsoOut(nil), d.out...)
}

// ---- the far end of a plain in-memory TUN ----

// sink reads everything the host writes to a plain device.
type sink struct {
	mu   sync.Mutex
	pkts [][]byte
}

func newSink(dev tun.Device) *sink {
	s := &sink{}
	go func() {
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := dev.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			s.mu.Lock()
			for i := range n {
				s.pkts = append(s.pkts, bytes.Clone(bufs[i][:sizes[i]]))
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sink) written() []gsoOut {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]gsoOut, len(s.pkts))
	for i, p := range s.pkts {
		out[i] = gsoOut{pkt: p}
	}
	return out
}

// ---- the director ----

var (
	gCli  = nattest.AP("10.0.0.10:40000")
	gVIP  = nattest.AP("172.16.1.100:80")
	gRS   = nattest.AP("172.16.1.5:8080")
	gCli6 = nattest.AP("[fd00:1::10]:40000")
	gVIP6 = nattest.AP("[fd00:1::100]:80")
	gRS6  = nattest.AP("[fd00:2::5]:8080")
)

// gsoRig is a director with NIC "client" on a fakeGSO and NIC "rs" on
// another fakeGSO or, with plainRS, on a plain in-memory TUN whose far end
// rsPeer reads. The table asks the host for egress MTUs, as the director
// package wires it.
type gsoRig struct {
	t      *testing.T
	h      *netstack.Host
	tb     *nat.Table
	cli    *fakeGSO
	rs     *fakeGSO // nil with plainRS
	rsPeer *sink    // nil without plainRS
}

func newGSORig(t *testing.T, plainRS bool, cfg netstack.Config) *gsoRig {
	t.Helper()
	var h *netstack.Host
	tb := nat.New(nat.Config{EgressMTU: func(dst netip.Addr) int { return h.EgressMTU(dst) }})
	cfg.NAT, cfg.Forwarding, cfg.Bypass = tb, true, true
	h = netstack.New(cfg)
	t.Cleanup(func() { h.Close() })
	r := &gsoRig{t: t, h: h, tb: tb, cli: newFakeGSO("client")}
	var rsDev tun.Device
	if plainRS {
		a, b := tun.NewPair(tun.KindTUN, 1500)
		rsDev = a
		r.rsPeer = newSink(b)
	} else {
		r.rs = newFakeGSO("rs")
		rsDev = r.rs
	}
	for _, l := range []struct {
		name string
		dev  tun.Device
		addr []string
	}{
		{"client", r.cli, []string{"10.0.0.1/24", "172.16.1.100/32", "fd00:1::1/64", "fd00:1::100/128"}},
		{"rs", rsDev, []string{"172.16.1.3/24", "fd00:2::3/64"}},
	} {
		if _, err := h.AddNIC(l.name, l.dev); err != nil {
			t.Fatal(err)
		}
		for _, a := range l.addr {
			if err := h.AddAddress(l.name, netip.MustParsePrefix(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range [][2]netip.AddrPort{{gVIP, gRS}, {gVIP6, gRS6}} {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: s[0].Addr(), Port: s[0].Port(), Scheduler: "rr"}); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: s[0].Addr(), Port: s[0].Port()}, nat.DestConfig{Addr: s[1].Addr(), Port: s[1].Port(), Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// atRS is what the rs NIC wrote.
func (r *gsoRig) atRS() []gsoOut {
	if r.rs != nil {
		return r.rs.written()
	}
	return r.rsPeer.written()
}

// counters is a snapshot of the host's counters.
type counters struct{ gso, split, fast, delivered, linkDrops, tooBig uint64 }

func (r *gsoRig) counters() counters {
	c := &r.h.Counters
	return counters{c.GSOPackets.Load(), c.GSOSplit.Load(), c.FastPath.Load(), c.Delivered.Load(), c.LinkDrops.Load(), c.TooBigSent.Load()}
}

func (c counters) sub(o counters) counters {
	return counters{c.gso - o.gso, c.split - o.split, c.fast - o.fast, c.delivered - o.delivered, c.linkDrops - o.linkDrops, c.tooBig - o.tooBig}
}

// ---- packets ----

// parsed is a packet as nat.Parse sees it, with its checksums verified
// in full.
func parsed(t *testing.T, b []byte) *nat.Packet {
	t.Helper()
	var p nat.Packet
	if r := nat.Parse(b, &p); r != nat.DropNone {
		t.Fatalf("unparsable packet (%v): % x", r, b[:min(len(b), 80)])
	}
	if p.Len() != len(b) {
		t.Fatalf("IP length %d for a %d-byte packet", p.Len(), len(b))
	}
	return &p
}

// flowPkts returns the TCP packets among out that go from port sport to
// port dport.
func flowPkts(out []gsoOut, sport, dport uint16) []gsoOut {
	var r []gsoOut
	for _, o := range out {
		var p nat.Packet
		if nat.Parse(o.pkt, &p) != nat.DropNone || p.Proto != 6 || p.Frag {
			continue
		}
		if p.SrcPort == sport && p.DstPort == dport {
			r = append(r, o)
		}
	}
	return r
}

func seqOf(b []byte) uint32 {
	var p nat.Packet
	nat.Parse(b, &p)
	return binary.BigEndian.Uint32(p.B[p.L4+4:])
}

func data(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed + i>>8)
	}
	return b
}

// ordinary is a fully checksummed TCP packet.
func ordinary(src, dst netip.AddrPort, flags uint8, seq uint32, payload []byte) gsoIn {
	return gsoIn{pkt: nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: 6, Flags: flags, Seq: seq, Ack: 1, Payload: payload, DF: true})}
}

// superPkt is a TCP super-packet of n segments of size bytes as a device
// with TSO hands it out: the checksum field holds the pseudo-header sum.
func superPkt(src, dst netip.AddrPort, seq uint32, n, size int) gsoIn {
	b := nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: 6, Flags: nattest.ACK | nattest.PSH, Seq: seq, Ack: 1, Payload: data(n*size, int(seq)), DF: true})
	start, off := nattest.Partial(b)
	g := tun.GSO{Type: tun.GSOTCPv4, NeedsCsum: true, HdrLen: uint16(start + 20), Size: uint16(size), CsumStart: uint16(start), CsumOffset: uint16(off)}
	if src.Addr().Is6() {
		g.Type = tun.GSOTCPv6
	}
	return gsoIn{pkt: b, g: g}
}

// partialPkt is an ordinary TCP packet whose checksum is partial.
func partialPkt(src, dst netip.AddrPort, seq uint32, payload []byte) gsoIn {
	p := ordinary(src, dst, nattest.ACK, seq, payload)
	start, off := nattest.Partial(p.pkt)
	p.g = tun.GSO{NeedsCsum: true, CsumStart: uint16(start), CsumOffset: uint16(off)}
	return p
}

// withDestOpts puts an 8-byte Destination Options header between the IPv6
// header and the TCP header of p (a partial checksum moves along).
func withDestOpts(p gsoIn) gsoIn {
	b := p.pkt
	out := make([]byte, 0, len(b)+8)
	out = append(out, b[:40]...)
	out = append(out, b[6], 0, 1, 4, 0, 0, 0, 0) // next header, length 0, PadN
	out = append(out, b[40:]...)
	out[6] = 60
	binary.BigEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:])+8)
	g := p.g
	if g.Pending() {
		g.CsumStart += 8
		if g.Type != tun.GSONone {
			g.HdrLen += 8
		}
	}
	return gsoIn{pkt: out, g: g}
}

// checkSeg checks an ordinary packet: addresses and ports, TTL, lengths
// and every checksum.
func checkSeg(t *testing.T, what string, b []byte, src, dst netip.AddrPort, ttl uint8) {
	t.Helper()
	p := parsed(t, b)
	if p.Src() != src.Addr() || p.SrcPort != src.Port() || p.Dst() != dst.Addr() || p.DstPort != dst.Port() {
		t.Errorf("%s: %v:%d -> %v:%d, want %v -> %v", what, p.Src(), p.SrcPort, p.Dst(), p.DstPort, src, dst)
	}
	if p.TTL() != ttl {
		t.Errorf("%s: TTL %d, want %d", what, p.TTL(), ttl)
	}
	if !p.VerifyL4Checksum() {
		t.Errorf("%s: TCP checksum wrong", what)
	}
}

// checkSuper checks a super-packet written whole: its headers, then that
// its partial checksum is the pseudo-header sum of the rewritten headers
// (finishing it over the whole gives a right checksum, as the kernel's
// segmentation assumes), then its segments after a software split.
func checkSuper(t *testing.T, o gsoOut, want tun.GSO, src, dst netip.AddrPort, ttl uint8, seq uint32) {
	t.Helper()
	if !o.viaGSO || o.g != want {
		t.Fatalf("super-packet written with %+v (WriteGSO %v), want %+v", o.g, o.viaGSO, want)
	}
	p := parsed(t, o.pkt) // IPv4 header checksum included
	if p.Src() != src.Addr() || p.SrcPort != src.Port() || p.Dst() != dst.Addr() || p.DstPort != dst.Port() || p.TTL() != ttl {
		t.Errorf("super-packet %v:%d -> %v:%d TTL %d, want %v -> %v TTL %d", p.Src(), p.SrcPort, p.Dst(), p.DstPort, p.TTL(), src, dst, ttl)
	}
	fin := bytes.Clone(o.pkt)
	nattest.Finish(fin, int(want.CsumStart), int(want.CsumOffset))
	if !parsed(t, fin).VerifyL4Checksum() {
		t.Error("the partial checksum left by the NAT does not finish to a right one")
	}
	var sp tun.Splitter
	if err := sp.Load(bytes.Clone(o.pkt), o.g); err != nil {
		t.Fatalf("Splitter refuses the super-packet: %v", err)
	}
	buf := make([]byte, 2000)
	total := len(o.pkt) - int(want.HdrLen)
	for i := 0; sp.Pending(); i++ {
		n, err := sp.Next(buf)
		if err != nil {
			t.Fatal(err)
		}
		seg := buf[:n]
		checkSeg(t, fmt.Sprintf("segment %d", i), seg, src, dst, ttl)
		if s := seqOf(seg); s != seq+uint32(i)*uint32(want.Size) {
			t.Errorf("segment %d: seq %d, want %d", i, s, seq+uint32(i)*uint32(want.Size))
		}
		total -= n - int(want.HdrLen)
	}
	if total != 0 {
		t.Errorf("segments carry %d bytes too few", total)
	}
}

// ---- tests ----

// A TCP super-packet of an established flow leaves by the bypass: whole,
// with its GSO state, towards a device with offloads; in ordinary packets
// towards one without.
func TestGSOForward(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, plain := range []bool{false, true} {
			t.Run(fmt.Sprintf("v6=%v/plain=%v", v6, plain), func(t *testing.T) {
				r := newGSORig(t, plain, netstack.Config{})
				cli, vip, rs := gCli, gVIP, gRS
				if v6 {
					cli, vip, rs = gCli6, gVIP6, gRS6
				}
				before := r.counters()
				r.cli.inject(ordinary(cli, vip, nattest.SYN, 100, nil))
				waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.atRS(), cli.Port(), rs.Port())) == 1 })
				syn := flowPkts(r.atRS(), cli.Port(), rs.Port())[0]
				checkSeg(t, "SYN", syn.pkt, cli, rs, 63)
				if syn.g.Pending() {
					t.Errorf("SYN written with %+v", syn.g)
				}

				const seq = 101
				sp := superPkt(cli, vip, seq, 3, 1000)
				r.cli.inject(sp)
				// A marker behind it: once it is out, so is everything
				// before it.
				r.cli.inject(ordinary(cli, vip, nattest.ACK, 50000, nil))
				isMarker := func(o gsoOut) bool { return seqOf(o.pkt) == 50000 }
				waitfor.Until(t, 5*time.Second, "the marker at the real server", func() bool {
					f := flowPkts(r.atRS(), cli.Port(), rs.Port())
					return len(f) > 0 && isMarker(f[len(f)-1])
				})
				f := flowPkts(r.atRS(), cli.Port(), rs.Port())
				got := f[1 : len(f)-1]
				d := r.counters().sub(before)
				if d.gso != 1 || d.fast != 3 {
					t.Errorf("GSOPackets +%d, FastPath +%d; want +1, +3 (SYN, super-packet, marker)", d.gso, d.fast)
				}
				if d.delivered != 0 || d.linkDrops != 0 {
					t.Errorf("Delivered +%d, LinkDrops +%d: the flow went to the stack or was dropped", d.delivered, d.linkDrops)
				}
				if !plain {
					if len(got) != 1 {
						t.Fatalf("%d packets at the real server for the super-packet, want 1", len(got))
					}
					checkSuper(t, got[0], sp.g, cli, rs, 63, seq)
					if d.split != 0 {
						t.Errorf("GSOSplit +%d, want 0", d.split)
					}
					return
				}
				if len(got) != 3 {
					t.Fatalf("%d segments at the real server, want 3", len(got))
				}
				for i, o := range got {
					checkSeg(t, fmt.Sprintf("segment %d", i), o.pkt, cli, rs, 63)
					p := parsed(t, o.pkt)
					if n := p.Len() - p.L4 - 20; n != 1000 {
						t.Errorf("segment %d: %d bytes of payload", i, n)
					}
					if s := seqOf(o.pkt); s != seq+uint32(i*1000) {
						t.Errorf("segment %d: seq %d, want %d", i, s, seq+uint32(i*1000))
					}
				}
				if d.split != 1 {
					t.Errorf("GSOSplit +%d, want 1", d.split)
				}
			})
		}
	}
}

// A super-packet from the real server back to the client is SNATed
// whole: the source becomes VIP:80 and the partial checksum is adjusted
// for the address (and not for the port).
func TestGSOReply(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			r := newGSORig(t, false, netstack.Config{})
			cli, vip, rs := gCli, gVIP, gRS
			if v6 {
				cli, vip, rs = gCli6, gVIP6, gRS6
			}
			r.cli.inject(ordinary(cli, vip, nattest.SYN, 100, nil))
			waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.rs.written(), cli.Port(), rs.Port())) == 1 })
			r.rs.inject(ordinary(rs, cli, nattest.SYN|nattest.ACK, 7000, nil))
			waitfor.Until(t, 5*time.Second, "the SYN-ACK at the client", func() bool { return len(flowPkts(r.cli.written(), vip.Port(), cli.Port())) == 1 })
			checkSeg(t, "SYN-ACK", flowPkts(r.cli.written(), vip.Port(), cli.Port())[0].pkt, vip, cli, 63)

			before := r.counters()
			sp := superPkt(rs, cli, 7001, 4, 1400)
			r.rs.inject(sp)
			r.rs.inject(ordinary(rs, cli, nattest.ACK, 90000, nil))
			waitfor.Until(t, 5*time.Second, "the marker at the client", func() bool {
				f := flowPkts(r.cli.written(), vip.Port(), cli.Port())
				return len(f) > 0 && seqOf(f[len(f)-1].pkt) == 90000
			})
			f := flowPkts(r.cli.written(), vip.Port(), cli.Port())
			if len(f) != 3 {
				t.Fatalf("%d packets at the client, want SYN-ACK, super-packet, marker", len(f))
			}
			checkSuper(t, f[1], sp.g, vip, cli, 63, 7001)
			if d := r.counters().sub(before); d.gso != 1 || d.split != 0 || d.fast != 2 {
				t.Errorf("counters moved by %+v, want GSOPackets +1, GSOSplit 0, FastPath +2", d)
			}
		})
	}
}

// An ordinary packet with a partial checksum is NATed as it is: towards a
// device with offloads it keeps the partial checksum (adjusted), towards
// one without it is finished in software.
func TestGSOPartialChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, plain := range []bool{false, true} {
			t.Run(fmt.Sprintf("v6=%v/plain=%v", v6, plain), func(t *testing.T) {
				r := newGSORig(t, plain, netstack.Config{})
				cli, vip, rs := gCli, gVIP, gRS
				if v6 {
					cli, vip, rs = gCli6, gVIP6, gRS6
				}
				r.cli.inject(ordinary(cli, vip, nattest.SYN, 100, nil))
				waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.atRS(), cli.Port(), rs.Port())) == 1 })
				before := r.counters()
				pp := partialPkt(cli, vip, 101, data(777, 3))
				want := tun.GSO{NeedsCsum: true, CsumStart: 20, CsumOffset: 16}
				if v6 {
					want.CsumStart = 40
				}
				if pp.g != want {
					t.Fatalf("test packet has %+v", pp.g)
				}
				r.cli.inject(pp)
				waitfor.Until(t, 5*time.Second, "the packet at the real server", func() bool { return len(flowPkts(r.atRS(), cli.Port(), rs.Port())) == 2 })
				o := flowPkts(r.atRS(), cli.Port(), rs.Port())[1]
				if !plain {
					if !o.viaGSO || o.g != want {
						t.Fatalf("written with %+v (WriteGSO %v), want %+v", o.g, o.viaGSO, want)
					}
					if !tun.FinishChecksum(o.pkt, o.g) {
						t.Fatal("FinishChecksum refused it")
					}
				}
				checkSeg(t, "packet", o.pkt, cli, rs, 63)
				if p := parsed(t, o.pkt); p.Len()-p.L4-20 != 777 {
					t.Errorf("%d bytes of payload", p.Len()-p.L4-20)
				}
				d := r.counters().sub(before)
				if d.gso != 0 || d.fast != 1 || d.delivered != 0 {
					t.Errorf("counters moved by %+v, want FastPath +1 only (GSOPackets counts super-packets)", d)
				}
			})
		}
	}
}

// GSOSplit counts super-packets cut up in software ("... of those", of
// GSOPackets, says its comment; "super-packets cut into packets in
// software", says the metric): finishing the checksum of an ordinary
// packet for a device without offloads is not one.
//
// Fails at the time of writing: fastPath.flush (netstack/fastpath.go)
// counts every pending packet it hands to split, GSONone with NeedsCsum
// included, and so do NIC.handle and readLoopGSO (netstack/link.go).
func TestGSOSplitCountsSuperPacketsOnly(t *testing.T) {
	r := newGSORig(t, true, netstack.Config{})
	r.cli.inject(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.atRS(), gCli.Port(), gRS.Port())) == 1 })
	before := r.counters()
	r.cli.inject(partialPkt(gCli, gVIP, 101, data(100, 1)))
	waitfor.Until(t, 5*time.Second, "the packet at the real server", func() bool { return len(flowPkts(r.atRS(), gCli.Port(), gRS.Port())) == 2 })
	if d := r.counters().sub(before); d.split > d.gso {
		t.Errorf("GSOSplit +%d for GSOPackets +%d: an ordinary packet with a partial checksum counted as a split super-packet", d.split, d.gso)
	}
}

// A super-packet whose segments exceed the egress MTU is answered with a
// "fragmentation needed" quoting the MTU, though the whole is far larger
// than any MTU only matters per segment.
func TestGSOTooBig(t *testing.T) {
	r := newGSORig(t, false, netstack.Config{})
	r.cli.inject(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.rs.written(), gCli.Port(), gRS.Port())) == 1 })
	before := r.counters()
	r.cli.inject(superPkt(gCli, gVIP, 101, 3, 1461)) // segments of 1501 bytes
	isFragNeeded := func(o gsoOut) bool {
		b := o.pkt
		return len(b) >= 28 && b[0]>>4 == 4 && b[9] == 1 && b[20] == 3 && b[21] == 4
	}
	var icmp []byte
	waitfor.Until(t, 5*time.Second, "the ICMP error at the client", func() bool {
		for _, o := range r.cli.written() {
			if isFragNeeded(o) {
				icmp = o.pkt
				return true
			}
		}
		return false
	})
	if mtu := binary.BigEndian.Uint16(icmp[26:]); mtu != 1500 {
		t.Errorf("next-hop MTU %d, want 1500", mtu)
	}
	if d := r.counters().sub(before); d.tooBig != 1 || d.gso != 1 || d.fast != 0 {
		t.Errorf("counters moved by %+v, want TooBigSent +1, GSOPackets +1, FastPath 0", d)
	}
	// Segments of exactly the MTU pass.
	r.cli.inject(superPkt(gCli, gVIP, 101, 3, 1460))
	waitfor.Until(t, 5*time.Second, "the super-packet at the real server", func() bool { return len(flowPkts(r.rs.written(), gCli.Port(), gRS.Port())) == 2 })
	if n := len(flowPkts(r.rs.written(), gCli.Port(), gRS.Port())[1].pkt); n != 40+3*1460 {
		t.Errorf("%d bytes forwarded", n)
	}
}

// A super-packet for the host itself goes to the stack, cut up.
func TestGSOToStack(t *testing.T) {
	r := newGSORig(t, false, netstack.Config{})
	before := r.counters()
	r.cli.inject(superPkt(gCli, nattest.AP("10.0.0.1:22"), 1, 3, 1000))
	waitfor.Until(t, 5*time.Second, "three segments delivered to the stack", func() bool { return r.counters().sub(before).delivered >= 3 })
	if d := r.counters().sub(before); d.delivered != 3 || d.gso != 1 || d.split != 1 || d.fast != 0 {
		t.Errorf("counters moved by %+v, want Delivered +3, GSOPackets +1, GSOSplit +1", d)
	}
}

// With Config.NoGSO the host reads with Read, which cuts super-packets up
// in the device: nothing is counted as a super-packet and the real server
// gets ordinary packets.
func TestGSOConfigNoGSO(t *testing.T) {
	r := newGSORig(t, false, netstack.Config{NoGSO: true})
	r.cli.inject(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.rs.written(), gCli.Port(), gRS.Port())) == 1 })
	r.cli.inject(superPkt(gCli, gVIP, 101, 3, 1000))
	waitfor.Until(t, 5*time.Second, "the segments at the real server", func() bool { return len(flowPkts(r.rs.written(), gCli.Port(), gRS.Port())) == 4 })
	for i, o := range flowPkts(r.rs.written(), gCli.Port(), gRS.Port())[1:] {
		if o.viaGSO || o.g.Pending() {
			t.Errorf("segment %d written by WriteGSO %v with %+v", i, o.viaGSO, o.g)
		}
		checkSeg(t, fmt.Sprintf("segment %d", i), o.pkt, gCli, gRS, 63)
	}
	if c := r.counters(); c.gso != 0 || c.split != 0 {
		t.Errorf("GSOPackets %d, GSOSplit %d with NoGSO", c.gso, c.split)
	}
	r.cli.mu.Lock()
	calls := r.cli.readCalls
	r.cli.mu.Unlock()
	if calls != 0 {
		t.Errorf("ReadGSO called %d times with NoGSO", calls)
	}
}

// A super-packet the NAT cannot rewrite whole (an IPv6 extension header
// before TCP) is cut up on the way in and its segments NATed one by one.
func TestGSOSplitOnIngress(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain=%v", plain), func(t *testing.T) {
			r := newGSORig(t, plain, netstack.Config{})
			r.cli.inject(ordinary(gCli6, gVIP6, nattest.SYN, 100, nil))
			waitfor.Until(t, 5*time.Second, "the SYN at the real server", func() bool { return len(flowPkts(r.atRS(), gCli6.Port(), gRS6.Port())) == 1 })
			before := r.counters()
			sp := withDestOpts(superPkt(gCli6, gVIP6, 101, 3, 1000))
			if sp.g.InPlace(sp.pkt) {
				t.Fatal("test packet is InPlace")
			}
			r.cli.inject(sp)
			waitfor.Until(t, 5*time.Second, "the segments at the real server", func() bool { return len(flowPkts(r.atRS(), gCli6.Port(), gRS6.Port())) == 4 })
			for i, o := range flowPkts(r.atRS(), gCli6.Port(), gRS6.Port())[1:] {
				if o.g.Pending() {
					t.Errorf("segment %d written with %+v", i, o.g)
				}
				checkSeg(t, fmt.Sprintf("segment %d", i), o.pkt, gCli6, gRS6, 63)
				if o.pkt[6] != 60 || len(o.pkt) != 48+20+1000 {
					t.Errorf("segment %d: next header %d, %d bytes", i, o.pkt[6], len(o.pkt))
				}
				if s := seqOf(o.pkt); s != 101+uint32(i*1000) {
					t.Errorf("segment %d: seq %d", i, s)
				}
			}
			if d := r.counters().sub(before); d.gso != 1 || d.split != 1 || d.fast != 3 {
				t.Errorf("counters moved by %+v, want GSOPackets +1, GSOSplit +1, FastPath +3", d)
			}
		})
	}
}

// One read batch: a super-packet bound for a device without offloads
// (split when the batch is flushed), then one cut up on the way in (whose
// segments flush the batch one by one). Every segment of both must reach
// the real server intact.
//
// Fails at the time of writing: readLoopGSO (netstack/link.go) splits the
// second packet with the fastPath's Splitter and scratch buffer f.sp/f.seg,
// and its first segment's f.flush splits the first packet with the same
// ones (fastPath.flush -> fastPath.split): the second packet's Splitter
// state is replaced (its remaining segments are lost) and its first
// segment, pending in f.seg, is overwritten by the first packet's last
// segment before it is written.
func TestGSOIngressSplitAfterEgressSplit(t *testing.T) {
	r := newGSORig(t, true, netstack.Config{})
	r.cli.inject(ordinary(gCli, gVIP, nattest.SYN, 100, nil))
	r.cli.inject(ordinary(gCli6, gVIP6, nattest.SYN, 100, nil))
	waitfor.Until(t, 5*time.Second, "the SYNs at the real server", func() bool {
		return len(flowPkts(r.atRS(), gCli.Port(), gRS.Port())) == 2 // v4 and v6 alike
	})
	a := superPkt(gCli, gVIP, 101, 3, 1000)
	b := withDestOpts(superPkt(gCli6, gVIP6, 101, 3, 1000))
	r.cli.inject(a, b)
	// Markers behind them, one per flow.
	r.cli.inject(ordinary(gCli, gVIP, nattest.ACK, 50000, nil), ordinary(gCli6, gVIP6, nattest.ACK, 50000, nil))
	waitfor.Until(t, 5*time.Second, "the markers at the real server", func() bool {
		n := 0
		for _, o := range flowPkts(r.atRS(), gCli.Port(), gRS.Port()) {
			if seqOf(o.pkt) == 50000 {
				n++
			}
		}
		return n == 2
	})
	var v4, v6 []gsoOut
	for _, o := range r.atRS() {
		var p nat.Packet
		if nat.Parse(o.pkt, &p) != nat.DropNone {
			t.Errorf("unparsable packet at the real server: % x", o.pkt[:min(len(o.pkt), 60)])
			continue
		}
		if p.Proto != 6 || p.TCPFlags&nattest.SYN != 0 || seqOf(o.pkt) == 50000 {
			continue
		}
		if p.V6 {
			v6 = append(v6, o)
		} else {
			v4 = append(v4, o)
		}
	}
	for _, f := range []struct {
		name     string
		segs     []gsoOut
		src, dst netip.AddrPort
	}{{"IPv4", v4, gCli, gRS}, {"IPv6", v6, gCli6, gRS6}} {
		if len(f.segs) != 3 {
			t.Errorf("%s: %d packets at the real server, want 3 segments", f.name, len(f.segs))
		}
	}
	for _, f := range []struct {
		name     string
		segs     []gsoOut
		src, dst netip.AddrPort
	}{{"IPv4", v4, gCli, gRS}, {"IPv6", v6, gCli6, gRS6}} {
		for i, o := range f.segs {
			checkSeg(t, fmt.Sprintf("%s segment %d", f.name, i), o.pkt, f.src, f.dst, 63)
		}
	}
}
