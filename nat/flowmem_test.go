package nat_test

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// flowBytes fills a fresh table with n UDP flows, each from its own client
// address and port to one virtual service of two real servers (the shape of
// make compare's flows workload), and returns the live heap the table holds
// per flow: the heap after a full GC, before and after, so garbage and the
// machine's load do not enter the figure. v6 uses IPv6 flows.
func flowBytes(tb testing.TB, n int, v6 bool) float64 {
	t := nat.New(nat.Config{MaxConns: n + 1})
	svc, rsA, rsB, base := vip, rs1, rs2, netip.MustParseAddr("10.0.0.0")
	if v6 {
		svc, rsA, rsB, base = vip6, rs6, netip.MustParseAddr("fd00::6"), netip.MustParseAddr("fd01::")
	}
	if _, err := t.AddService(nat.ServiceConfig{Proto: 17, Addr: svc.Addr(), Port: svc.Port(), Scheduler: "rr"}); err != nil {
		tb.Fatal(err)
	}
	for _, d := range []netip.Addr{rsA, rsB} {
		if _, err := t.AddDest(nat.ServiceKey{Proto: 17, Addr: svc.Addr(), Port: svc.Port()}, nat.DestConfig{Addr: d, Port: 8080, Weight: 1}); err != nil {
			tb.Fatal(err)
		}
	}
	// One template packet, its source rewritten per flow (the
	// checksum is recomputed by building each one: cheap next to the
	// table, and garbage the GC below takes away).
	var p nat.Packet
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		a := base.As16()
		binary.BigEndian.PutUint32(a[12:], binary.BigEndian.Uint32(a[12:])+uint32(i/50000)+1)
		src := netip.AddrFrom16(a)
		if !v6 {
			src = src.Unmap()
		}
		b := nattest.UDP(netip.AddrPortFrom(src, uint16(1024+i%50000)), svc, []byte("x"))
		if r := t.Process(b, &p, 0); r.Verdict != nat.Forward {
			tb.Fatalf("flow %d: %+v", i, r)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if t.Len() != n {
		tb.Fatalf("%d connections, want %d", t.Len(), n)
	}
	runtime.KeepAlive(t)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// The connection table holds a plain masqueraded flow, entry and both
// index slots, in at most the bytes of live heap below (issue 11's target
// is 200 B per flow for the whole process at a million flows). The figure
// is the GC's count of live bytes, not a timing: the same on a loaded
// machine. A field added to Conn for some connections only belongs in
// connExt (connext.go); this test is what notices.
func TestFlowMemory(t *testing.T) {
	// A Conn of 96 bytes and two index slots of 12 bytes at 64-80%
	// load, with a little slack for the index's load at this size;
	// IPv6 adds its 64-byte connExt.
	for _, c := range []struct {
		v6  bool
		max float64
	}{{false, 144}, {true, 216}} {
		b := flowBytes(t, 200_000, c.v6)
		t.Logf("IPv6 %v: %.1f B/flow", c.v6, b)
		if b > c.max {
			t.Errorf("IPv6 %v: %.1f B per flow, want at most %.0f", c.v6, b, c.max)
		}
	}
}

// BenchmarkFlowMemory reports the live heap per flow of a table of a
// million IPv4 flows (B/flow); the time is the cost of making them.
func BenchmarkFlowMemory(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		b.Run(name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				per = flowBytes(b, 1_000_000, v6)
			}
			b.ReportMetric(per, "B/flow")
		})
	}
}
