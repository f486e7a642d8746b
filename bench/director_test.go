package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/director"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

const (
	fwdBatch   = 32   // packets written per iteration; the pair queues 256
	fwdPktSize = 1400 // IP packet size of the data packets
	fwdMTU     = 1500
	// fwdTimeout is how long the benchmark waits without any packet
	// arriving before it declares one lost.
	fwdTimeout = 5 * time.Second
)

var (
	fwdRules = []string{
		"-A -t 172.16.1.100:80 -s rr",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:80 -m",
		"-A -t [fd00:100::100]:80 -s rr",
		"-a -t [fd00:100::100]:80 -r [fd00:2::5]:80 -m",
	}
	fwdClient4 = nattest.AP("10.0.0.10:40000")
	fwdVIP4    = nattest.AP("172.16.1.100:80")
	fwdRS4     = nattest.AP("172.16.1.5:80")
	fwdClient6 = nattest.AP("[fd00:1::10]:40000")
	fwdVIP6    = nattest.AP("[fd00:100::100]:80")
	fwdRS6     = nattest.AP("[fd00:2::5]:80")
)

// fwdEnv is a director on two in-memory TUN pairs and the benchmark's ends
// of them: cli (the client side, link "c") and srv (the real servers'
// side, link "r").
type fwdEnv struct {
	d        *director.Director
	cli, srv tun.Device
	bufs     [][]byte
	sizes    []int
	wd       *watchdog
	strays   int // packets read that were not the ones expected
}

func newFwdEnv(b *testing.B, bypass bool) *fwdEnv {
	b.Helper()
	cmds, err := admin.ParseRules(strings.NewReader(strings.Join(fwdRules, "\n")))
	if err != nil {
		b.Fatal(err)
	}
	cDir, cEnd := tun.NewPair(tun.KindTUN, fwdMTU)
	rDir, rEnd := tun.NewPair(tun.KindTUN, fwdMTU)
	pfx := netip.MustParsePrefix
	d, err := director.New(director.Config{
		Links: []director.Link{
			{Name: "c", Dev: cDir, Addrs: []netip.Prefix{
				pfx("10.0.0.1/24"), pfx("172.16.1.100/32"), pfx("fd00:1::1/64"), pfx("fd00:100::100/128"),
			}},
			{Name: "r", Dev: rDir, Addrs: []netip.Prefix{pfx("172.16.1.3/24"), pfx("fd00:2::3/64")}},
		},
		Rules:  cmds,
		Bypass: bypass,
		Log:    zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	e := &fwdEnv{d: d, cli: cEnd, srv: rEnd, sizes: make([]int, cEnd.BatchSize())}
	for range cEnd.BatchSize() {
		e.bufs = append(e.bufs, make([]byte, fwdMTU))
	}
	// Closing our ends takes both links down, which wakes a Read that
	// waits for a packet that was lost.
	e.wd = startWatchdog(fwdTimeout, func() {
		_ = cEnd.Close()
		_ = rEnd.Close()
	})
	return e
}

func (e *fwdEnv) close() {
	e.wd.Stop()
	_ = e.d.Close()
}

// failure describes the state of the links and the director, for a lost
// packet.
func (e *fwdEnv) failure(what string, err error) string {
	h := &e.d.Host.Counters
	s := fmt.Sprintf("%s: %v (timed out: %v)\n  director: fastpath %d delivered %d write errors %d link drops %d; NAT conns %d",
		what, err, e.wd.fired.Load(), h.FastPath.Load(), h.Delivered.Load(), h.WriteErrors.Load(), h.LinkDrops.Load(), e.d.NAT.Len())
	for _, l := range []struct {
		name string
		dev  tun.Device
	}{{"client end", e.cli}, {"server end", e.srv}} {
		if m, ok := l.dev.(*tun.MemDevice); ok {
			st := m.Stats()
			s += fmt.Sprintf("\n  written at the %s: delivered %d, dropped full %d too big %d", l.name, st.Delivered, st.DroppedFull, st.DroppedTooBig)
		}
	}
	for _, r := range nat.DropReasons() {
		if n := e.d.NAT.Drops(r); n > 0 {
			s += fmt.Sprintf("\n  NAT drop %v: %d", r, n)
		}
	}
	return s
}

// write sends the packets into dev.
func (e *fwdEnv) write(b *testing.B, dev tun.Device, pkts [][]byte) {
	if _, err := dev.Write(pkts, 0); err != nil {
		b.Fatal(e.failure("write", err))
	}
}

// read reads from dev until n packets of size bytes have arrived; others
// (anything the stack may send on its own) are counted as strays. With
// keep, a copy of the first matching packet is returned.
func (e *fwdEnv) read(b *testing.B, dev tun.Device, n, size int, keep bool) (first []byte) {
	got := 0
	for got < n {
		k, err := dev.Read(e.bufs, e.sizes, 0)
		if err != nil {
			if errors.Is(err, tun.ErrClosed) {
				b.Fatal(e.failure(fmt.Sprintf("lost packets: %d of %d read", got, n), err))
			}
			b.Fatal(e.failure("read", err))
		}
		for i := range k {
			if e.sizes[i] != size {
				e.strays++
				continue
			}
			if keep && first == nil {
				first = append([]byte(nil), e.bufs[i][:e.sizes[i]]...)
			}
			got++
		}
		e.wd.bump()
	}
	return first
}

// check parses pkt and fails unless it is a TCP packet from src to dst
// with a valid L4 checksum.
func check(b *testing.B, what string, pkt []byte, src, dst netip.AddrPort) {
	b.Helper()
	var p nat.Packet
	if r := nat.Parse(pkt, &p); r != nat.DropNone {
		b.Fatalf("%s: unparsable packet: %v", what, r)
	}
	gs, gd := netip.AddrPortFrom(p.Src(), p.SrcPort), netip.AddrPortFrom(p.Dst(), p.DstPort)
	if p.Proto != nat.ProtoTCP || gs != src || gd != dst {
		b.Fatalf("%s: got proto %d %v -> %v, want TCP %v -> %v", what, p.Proto, gs, gd, src, dst)
	}
	if !p.VerifyL4Checksum() {
		b.Fatalf("%s: bad L4 checksum after NAT", what)
	}
}

// handshake opens the connection client -> vip (scheduled to rs) through
// the director and checks every rewrite.
func (e *fwdEnv) handshake(b *testing.B, client, vip, rs netip.AddrPort) {
	b.Helper()
	syn := nattest.Build(nattest.Seg{Src: client, Dst: vip, Proto: 6, Flags: nattest.SYN, Seq: 1000})
	e.write(b, e.cli, [][]byte{syn})
	check(b, "SYN", e.read(b, e.srv, 1, len(syn), true), client, rs)
	synAck := nattest.Build(nattest.Seg{Src: rs, Dst: client, Proto: 6, Flags: nattest.SYN | nattest.ACK, Seq: 5000, Ack: 1001})
	e.write(b, e.srv, [][]byte{synAck})
	check(b, "SYN-ACK", e.read(b, e.cli, 1, len(synAck), true), vip, client)
	ack := nattest.Build(nattest.Seg{Src: client, Dst: vip, Proto: 6, Flags: nattest.ACK, Seq: 1001, Ack: 5001})
	e.write(b, e.cli, [][]byte{ack})
	check(b, "ACK", e.read(b, e.srv, 1, len(ack), true), client, rs)
}

// BenchmarkDirectorForward measures one packet of an established flow
// through a whole director, device to device, with and without the bypass.
// ns/op is per packet.
func BenchmarkDirectorForward(b *testing.B) {
	cases := []struct {
		name            string
		client, vip, rs netip.AddrPort
		reply           bool // real server -> client
	}{
		{"tcp4", fwdClient4, fwdVIP4, fwdRS4, false},
		{"tcp6", fwdClient6, fwdVIP6, fwdRS6, false},
		{"reply4", fwdClient4, fwdVIP4, fwdRS4, true},
	}
	for _, mode := range []struct {
		name   string
		bypass bool
	}{{"bypass", true}, {"stack", false}} {
		b.Run(mode.name, func(b *testing.B) {
			for _, c := range cases {
				b.Run(c.name, func(b *testing.B) {
					e := newFwdEnv(b, mode.bypass)
					defer e.close()
					e.handshake(b, c.client, c.vip, c.rs)

					// The data packets, as sent and as they must arrive.
					from, to, in, out := e.cli, e.srv, c.client, c.vip
					wantSrc, wantDst := c.client, c.rs
					if c.reply {
						from, to, in, out = e.srv, e.cli, c.rs, c.client
						wantSrc, wantDst = c.vip, c.client
					}
					pkt := nattest.Build(nattest.Seg{Src: in, Dst: out, Proto: 6, Flags: nattest.ACK | nattest.PSH,
						Seq: 1001, Ack: 5001, Size: fwdPktSize})
					batch := make([][]byte, fwdBatch)
					for i := range batch {
						batch[i] = pkt // Write copies; the template stays as it is
					}

					// One batch untimed: check the rewrite and the path taken.
					fp := e.d.Host.Counters.FastPath.Load()
					e.write(b, from, batch)
					check(b, "data", e.read(b, to, fwdBatch, fwdPktSize, true), wantSrc, wantDst)
					fast := e.d.Host.Counters.FastPath.Load() - fp
					if mode.bypass && fast != fwdBatch {
						b.Fatalf("bypass: %d of %d packets took the fast path", fast, fwdBatch)
					}
					if !mode.bypass && fast != 0 {
						b.Fatalf("stack: %d packets took the fast path", fast)
					}

					b.SetBytes(fwdPktSize)
					b.ReportAllocs()
					b.ResetTimer()
					for sent := 0; sent < b.N; {
						n := min(fwdBatch, b.N-sent)
						e.write(b, from, batch[:n])
						e.read(b, to, n, fwdPktSize, false)
						sent += n
					}
					b.StopTimer()
					if e.strays > 0 {
						b.Logf("%d packets besides the flow's were read", e.strays)
					}
				})
			}
		})
	}
}
