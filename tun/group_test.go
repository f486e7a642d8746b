package tun

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// udpFlow is a datagram of flow f (its source port 5000+f) carrying its
// sequence number i in the payload, after off bytes of headroom.
func udpFlow(v6 bool, f, i, off int) []byte {
	p := pktSpec{v6: v6, udp: true, sport: uint16(5000 + f), dport: 9, id: uint16(i), payload: []byte{byte(f), byte(i), 0, 0}}.build()
	return append(make([]byte, off), p...)
}

// interleaved is perFlow datagrams of each of flows flows (udpFlow, 16
// bytes of headroom), one of each flow in turn, as a one-armed director
// reads them.
func interleaved(flows, perFlow int) [][]byte {
	var bufs [][]byte
	for i := range perFlow {
		for f := range flows {
			bufs = append(bufs, udpFlow(false, f, i, 16))
		}
	}
	return bufs
}

// flowOf and seqOf read back what udpFlow wrote.
func flowOf(b []byte) int { return int(b[len(b)-4]) }
func seqOf(b []byte) int  { return int(b[len(b)-3]) }

// TestGroupFlows: interleaved flows come out together, each in its own
// order, the flows in the order of their first packets; the caller's
// slices are left alone.
func TestGroupFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			const off = 16
			var bufs [][]byte
			order := []int{0, 1, 0, 2, 1, 0, 2, 2, 1}
			seq := map[int]int{}
			for _, f := range order {
				bufs = append(bufs, udpFlow(v6, f, seq[f], off))
				seq[f]++
			}
			gso := make([]GSO, len(bufs))
			orig := append([][]byte(nil), bufs...)
			var o FlowOrder
			out, outGSO := o.Group(bufs, gso, off, 0)
			if len(out) != len(bufs) || len(outGSO) != len(bufs) {
				t.Fatalf("%d packets and %d states out of %d", len(out), len(outGSO), len(bufs))
			}
			var got []string
			for _, b := range out {
				got = append(got, fmt.Sprintf("%d.%d", flowOf(b), seqOf(b)))
			}
			want := "[0.0 0.1 0.2 1.0 1.1 1.2 2.0 2.1 2.2]"
			if fmt.Sprint(got) != want {
				t.Errorf("grouped %v, want %s", got, want)
			}
			for i := range bufs {
				if &bufs[i][0] != &orig[i][0] {
					t.Fatalf("the caller's packet %d was moved", i)
				}
			}
			if n := coalesceRunUDP(out, off); n != 3 {
				t.Errorf("a run of %d datagrams after grouping, want 3", n)
			}
		})
	}
}

// TestGroupFlowsKeepsOrder: over random interleavings of TCP and UDP
// flows, super-packets, packets of no flow (ARP, ICMP, fragments) and, on
// a TAP, frames of one IP flow to two MACs, the result is a permutation,
// every flow's packets (a super-packet among them) keep their order and
// are together, and the packets of no flow keep theirs among themselves.
func TestGroupFlowsKeepsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var o FlowOrder
	for round := range 300 {
		l2 := 0
		if round%2 == 1 {
			l2 = ethHdrLen
		}
		const off = 8
		n := 3 + rng.IntN(120)
		bufs := make([][]byte, n)
		gso := make([]GSO, n)
		// flow[i]: the flow packet i belongs to, or -1-i for one of
		// its own.
		flow := make([]int, n)
		for i := range n {
			var p []byte
			kind := rng.IntN(10)
			f := rng.IntN(5)
			switch {
			case kind == 0: // ICMP
				p = pktSpec{udp: true, sport: 1, dport: 1, payload: []byte{1}}.build()
				p[9] = 1
				flow[i] = -1 - i
			case kind == 1: // an IPv4 fragment of a flow's datagram
				p = pktSpec{udp: true, sport: uint16(5000 + f), dport: 9, noDF: true, payload: []byte{2}}.build()
				p[6] |= 0x20 // more fragments
				flow[i] = -1 - i
			case kind == 2: // a TCP super-packet of flow f
				p = pktSpec{sport: uint16(5000 + f), dport: 80, flags: tcpFlagACK, payload: []byte{3}}.build()
				gso[i] = GSO{Type: GSOTCPv4, Size: 1400}
				flow[i] = 100 + f
			case kind < 6:
				p = pktSpec{sport: uint16(5000 + f), dport: 80, flags: tcpFlagACK, payload: []byte{4}}.build()
				flow[i] = 100 + f
			default:
				p = pktSpec{udp: true, sport: uint16(5000 + f), dport: 9, payload: []byte{5}}.build()
				flow[i] = 200 + f
			}
			b := make([]byte, off+l2, off+l2+len(p))
			if l2 > 0 {
				// Two real servers' MACs for the same IP flow:
				// not one flow on the wire.
				mac := rng.IntN(2)
				b[off+5] = byte(mac)
				b[off+12], b[off+13] = 0x08, 0x00
				if flow[i] >= 0 {
					flow[i] += 1000 * mac
				}
			}
			bufs[i] = append(b, p...)
		}
		idx := map[*byte]int{}
		for i, b := range bufs {
			idx[&b[0]] = i
		}
		out, outGSO := o.Group(bufs, gso, off, l2)
		if len(out) != n {
			t.Fatalf("round %d: %d packets out of %d", round, len(out), n)
		}
		seen := make([]bool, n)
		last := map[int]int{}    // flow: position in bufs of its last packet out
		closed := map[int]bool{} // flows whose run has ended
		prevFlow, prevOwn := 0, -1
		for j, b := range out {
			i, ok := idx[&b[0]]
			if !ok || seen[i] {
				t.Fatalf("round %d: packet %d out is not one of the batch, or twice", round, j)
			}
			seen[i] = true
			if outGSO[j] != gso[i] {
				t.Fatalf("round %d: packet %d out has the offload state of another", round, j)
			}
			fl := flow[i]
			if fl < 0 {
				if i < prevOwn {
					t.Fatalf("round %d: packets of no flow reordered (%d after %d)", round, i, prevOwn)
				}
				prevOwn = i
			} else {
				if p, ok := last[fl]; ok && i < p {
					t.Fatalf("round %d: flow %d reordered (%d after %d)", round, fl, i, p)
				}
				last[fl] = i
				if closed[fl] {
					t.Fatalf("round %d: flow %d not together", round, fl)
				}
			}
			if j > 0 && prevFlow >= 0 && prevFlow != fl {
				closed[prevFlow] = true
			}
			prevFlow = fl
		}
	}
}

// TestGroupFlowsAsIs: a batch with no flow interleaved, or with more flows
// than are grouped, comes back as it is.
func TestGroupFlowsAsIs(t *testing.T) {
	var o FlowOrder
	var bufs [][]byte
	for f := range 3 {
		for i := range 3 {
			bufs = append(bufs, udpFlow(false, f, i, 0))
		}
	}
	if out, _ := o.Group(bufs, make([]GSO, len(bufs)), 0, 0); &out[0] != &bufs[0] {
		t.Error("a batch already grouped was copied")
	}
	bufs = bufs[:0]
	for i := range 2 {
		for f := range maxFlowGroups + 1 {
			bufs = append(bufs, udpFlow(false, f, i, 0))
		}
	}
	out, _ := o.Group(bufs, make([]GSO, len(bufs)), 0, 0)
	for i := range bufs {
		if !bytes.Equal(out[i], bufs[i]) {
			t.Fatalf("packet %d moved with %d flows", i, maxFlowGroups+1)
		}
	}
}

// TestGroupFlowsAllocatesNothing: after the first batch, grouping uses its
// scratch space only.
func TestGroupFlowsAllocatesNothing(t *testing.T) {
	var o FlowOrder
	bufs := interleaved(4, 32)
	gso := make([]GSO, len(bufs))
	o.Group(bufs, gso, 16, 0)
	if allocs := testing.AllocsPerRun(200, func() { o.Group(bufs, gso, 16, 0) }); allocs != 0 {
		t.Errorf("%v allocations per batch, want 0", allocs)
	}
}

func BenchmarkGroupFlows(b *testing.B) {
	var o FlowOrder
	bufs := interleaved(4, 16)
	gso := make([]GSO, len(bufs))
	o.Group(bufs, gso, 16, 0) // the scratch space, made once
	b.ReportAllocs()
	for b.Loop() {
		o.Group(bufs, gso, 16, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(bufs)), "ns/packet")
}
