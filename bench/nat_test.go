package bench

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// natNow is the clock of the table-only benchmarks.
var natNow = time.Unix(2_000_000_000, 0).UnixNano()

// newNATTable returns a table with one service vip (proto) and one real
// server rs on the same port, and maxConns as its bound (0: the default).
func newNATTable(b *testing.B, proto uint8, vip netip.AddrPort, rs netip.Addr, maxConns int) *nat.Table {
	b.Helper()
	t := nat.New(nat.Config{MaxConns: maxConns})
	if _, err := t.AddService(nat.ServiceConfig{Proto: proto, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr"}); err != nil {
		b.Fatal(err)
	}
	if _, err := t.AddDest(nat.ServiceKey{Proto: proto, Addr: vip.Addr(), Port: vip.Port()}, nat.DestConfig{Addr: rs, Port: vip.Port(), Weight: 1}); err != nil {
		b.Fatal(err)
	}
	return t
}

// benchRewrite opens the connection of pkt's flow (a SYN for TCP, the
// packet itself for UDP) and then measures Process of pkt, copied from its
// template into the buffer on every iteration.
func benchRewrite(b *testing.B, pkt []byte, rs netip.AddrPort) {
	var p nat.Packet
	if r := nat.Parse(append([]byte(nil), pkt...), &p); r != nat.DropNone {
		b.Fatalf("template: %v", r)
	}
	src, dst := netip.AddrPortFrom(p.Src(), p.SrcPort), netip.AddrPortFrom(p.Dst(), p.DstPort)
	t := newNATTable(b, p.Proto, dst, rs.Addr(), 0)
	if p.Proto == nat.ProtoTCP {
		syn := nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: 6, Flags: nattest.SYN})
		if r := t.Process(syn, &p, natNow); r.Verdict != nat.Forward {
			b.Fatalf("SYN: verdict %v reason %v", r.Verdict, r.Reason)
		}
	}
	buf := make([]byte, len(pkt))
	copy(buf, pkt)
	r := t.Process(buf, &p, natNow)
	if r.Verdict != nat.Forward || r.Dir != nat.DirIn {
		b.Fatalf("verdict %v dir %v reason %v", r.Verdict, r.Dir, r.Reason)
	}
	if got := netip.AddrPortFrom(p.Dst(), p.DstPort); got != rs {
		b.Fatalf("rewritten to %v, want %v", got, rs)
	}
	if !p.VerifyL4Checksum() {
		b.Fatal("bad L4 checksum after the rewrite")
	}
	if t.Len() != 1 {
		b.Fatalf("%d connections, want 1", t.Len())
	}

	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, pkt)
		t.Process(buf, &p, natNow)
	}
}

// BenchmarkNATRewrite is nat.Table.Process of one 1400-byte packet of an
// established flow, client -> VIP, rewritten to the real server.
func BenchmarkNATRewrite(b *testing.B) {
	cli4, vip4, rs4 := nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.AP("172.16.1.5:80")
	cli6, vip6, rs6 := nattest.AP("[fd00:1::10]:40000"), nattest.AP("[fd00:100::100]:80"), nattest.AP("[fd00:2::5]:80")
	b.Run("tcp4", func(b *testing.B) {
		benchRewrite(b, nattest.Build(nattest.Seg{Src: cli4, Dst: vip4, Proto: 6, Flags: nattest.ACK, Size: 1400}), rs4)
	})
	b.Run("tcp6", func(b *testing.B) {
		benchRewrite(b, nattest.Build(nattest.Seg{Src: cli6, Dst: vip6, Proto: 6, Flags: nattest.ACK, Size: 1400}), rs6)
	})
	b.Run("udp4", func(b *testing.B) {
		benchRewrite(b, nattest.Build(nattest.Seg{Src: cli4, Dst: vip4, Proto: 17, Size: 1400}), rs4)
	})
}

// BenchmarkNATRewriteSuper is the NAT of a 64 KiB TCP super-packet of an
// established flow as the offload TUN hands it up (TSO, 1448-byte
// segments, partial checksum): "inplace" is what tunvs does, one
// ProcessOffload of the whole; "split" is cutting it into 46 checksummed
// packets (tun.Splitter) and NATing each, the alternative it replaces
// (coalescing them again on write would come on top). Both copy the
// template in every iteration (see BenchmarkTemplateCopy/65535).
func BenchmarkNATRewriteSuper(b *testing.B) {
	cli, vip, rs := nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.AP("172.16.1.5:80")
	const mss = 1448
	pkt := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.ACK, Size: 65535, DF: true})
	start, off := nattest.Partial(pkt)
	g := tun.GSO{Type: tun.GSOTCPv4, NeedsCsum: true, HdrLen: uint16(start + 20), Size: mss, CsumStart: uint16(start), CsumOffset: uint16(off)}
	t := newNATTable(b, 6, vip, rs.Addr(), 0)
	var p nat.Packet
	syn := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.SYN})
	if r := t.Process(syn, &p, natNow); r.Verdict != nat.Forward {
		b.Fatalf("SYN: verdict %v reason %v", r.Verdict, r.Reason)
	}
	buf := make([]byte, len(pkt))
	b.Run("inplace", func(b *testing.B) {
		o := nat.Offload{SegLen: g.SegLen(), PartialCsum: true}
		copy(buf, pkt)
		if r := t.ProcessOffload(buf, &p, natNow, o); r.Verdict != nat.Forward {
			b.Fatalf("verdict %v reason %v", r.Verdict, r.Reason)
		}
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			copy(buf, pkt)
			t.ProcessOffload(buf, &p, natNow, o)
		}
	})
	b.Run("split", func(b *testing.B) {
		segs := make([][]byte, 0, 64)
		for range 64 {
			segs = append(segs, make([]byte, 1500))
		}
		var sp tun.Splitter
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			copy(buf, pkt)
			if err := sp.Load(buf, g); err != nil {
				b.Fatal(err)
			}
			for i := 0; sp.Pending(); i++ {
				n, err := sp.Next(segs[i])
				if err != nil {
					b.Fatal(err)
				}
				if r := t.Process(segs[i][:n], &p, natNow); r.Verdict != nat.Forward {
					b.Fatalf("segment %d: verdict %v reason %v", i, r.Verdict, r.Reason)
				}
			}
		}
	})
}

// BenchmarkTemplateCopy is the template copy that the NATRewrite
// benchmarks include in every iteration, alone: subtract it to get the
// cost of Process itself.
func BenchmarkTemplateCopy(b *testing.B) {
	for _, size := range []int{1400, 65535} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			src, dst := make([]byte, size), make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}
