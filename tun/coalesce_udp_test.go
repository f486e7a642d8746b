package tun

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tunvs/tunvs/internal/csum"
)

// datagrams makes n UDP datagrams of one flow, size bytes of payload each
// but the last (last bytes), with consecutive IPv4 IDs as a connected
// socket sends them.
func datagrams(v6 bool, n, size, last int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		sz := size
		if i == n-1 {
			sz = last
		}
		out = append(out, pktSpec{v6: v6, udp: true, sport: 5000, dport: 9, id: uint16(0xfff0 + i), payload: pattern(sz, i)}.build())
	}
	return out
}

// TestCoalesceUDPRoundTrip coalesces a run of datagrams into a USO
// super-packet and splits it as the kernel would: the result must be the
// original datagrams, byte for byte, and the super-packet's checksum,
// completed, valid.
func TestCoalesceUDPRoundTrip(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			pkts := datagrams(v6, 40, 64, 30)
			bufs := withOffset(pkts, 16)
			if n := coalesceRun(bufs, 16); n != 1 {
				t.Fatalf("TCP run of %d over UDP datagrams", n)
			}
			if n := coalesceRunUDP(bufs, 16); n != 40 {
				t.Fatalf("run of %d, want 40", n)
			}
			dst := make([]byte, readBufSize)
			n := coalesceUDP(dst, bufs, 16)
			var h virtioHdr
			h.decode(dst)
			l4 := 20
			if v6 {
				l4 = 40
			}
			if h.gsoType != vnetGSOUDPL4 || h.gsoSize != 64 || h.flags != vnetFlagNeedsCsum ||
				int(h.hdrLen) != l4+8 || int(h.csumStart) != l4 || h.csumOffset != 6 {
				t.Fatalf("virtio header %+v", h)
			}
			sp := bytes.Clone(dst[virtioNetHdrLen:n])
			csum.Finish(sp, l4, 6)
			verifyPacket(t, sp)
			got := splitAll(t, dst[:n], 1500)
			if len(got) != len(pkts) {
				t.Fatalf("%d datagrams back, want %d", len(got), len(pkts))
			}
			for i := range pkts {
				if !bytes.Equal(got[i], pkts[i]) {
					t.Fatalf("datagram %d differs:\n% x\nwant\n% x", i, got[i], pkts[i])
				}
			}
		})
	}
}

// TestCoalesceRunUDP checks where a run of datagrams ends.
func TestCoalesceRunUDP(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkts [][]byte
		want int
	}{
		{"one flow", datagrams(false, 10, 64, 64), 10},
		{"last smaller ends it", append(datagrams(false, 3, 64, 20), datagrams(false, 2, 64, 64)...), 3},
		{"a bigger one ends it", append(datagrams(false, 3, 64, 64), datagrams(false, 1, 100, 100)...), 3},
		{"at most maxUSOSegments", datagrams(false, maxUSOSegments+10, 64, 64), maxUSOSegments},
		{"another port ends it", append(datagrams(false, 2, 64, 64),
			pktSpec{udp: true, sport: 5001, dport: 9, id: 1, payload: pattern(64, 0)}.build()), 2},
		{"without DF alone", [][]byte{
			pktSpec{udp: true, sport: 5000, dport: 9, noDF: true, payload: pattern(64, 0)}.build(),
			pktSpec{udp: true, sport: 5000, dport: 9, noDF: true, payload: pattern(64, 1)}.build()}, 1},
		{"TCP is not UDP", segments(false, 3, 100, 100), 1},
		{"65535 bytes at most", datagrams(false, maxUSOSegments, 1400, 1400), (maxIPPacket - 28) / 1400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coalesceRunUDP(tc.pkts, 0); got != tc.want {
				t.Errorf("run of %d, want %d", got, tc.want)
			}
		})
	}
}

// FuzzCoalesceUDP: no panic on arbitrary datagrams, and what is built
// splits back into what it was built from (up to IPv4 IDs and checksums).
func FuzzCoalesceUDP(f *testing.F) {
	d := datagrams(false, 3, 64, 10)
	f.Add(d[0], d[1], d[2])
	d = datagrams(true, 3, 100, 100)
	f.Add(d[0], d[1], d[2])
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		pkts := [][]byte{a, b, c}
		n := coalesceRunUDP(pkts, 0)
		if n < 1 || n > 3 {
			t.Fatalf("run of %d", n)
		}
		if n == 1 {
			return
		}
		dst := make([]byte, readBufSize)
		m := coalesceUDP(dst, pkts[:n], 0)
		checkSplitsBack(t, dst[:m], pkts[:n], func(p []byte) (bool, int) {
			pu, _ := parseUDPDgram(p)
			return pu.v6, pu.l4 + 6
		})
	})
}
