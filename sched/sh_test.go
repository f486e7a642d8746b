package sched

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// cli is a TCP flow from the client addr (source port 40000) to a VIP.
func cli(addr string) Flow {
	return Flow{Proto: 6, Src: netip.MustParseAddr(addr), SrcPort: 40000,
		Dst: netip.MustParseAddr("192.0.2.10"), DstPort: 80}
}

// cliPort is a flow from addr:port with protocol proto.
func cliPort(proto uint8, addr string, port uint16) Flow {
	f := cli(addr)
	f.Proto, f.SrcPort = proto, port
	return f
}

// to is a flow from a fixed client to the destination address dst (for
// dh, lblc and lblcr, which look at the destination).
func to(dst string) Flow {
	return Flow{Proto: 6, Src: netip.MustParseAddr("198.18.0.1"), SrcPort: 40000,
		Dst: netip.MustParseAddr(dst), DstPort: 80}
}

// flowPicks picks once per flow and compares the servers with want
// ("-" for -1).
func flowPicks(want string, flows ...Flow) step {
	return func(e *env) {
		e.t.Helper()
		w := strings.Fields(want)
		if len(w) != len(flows) {
			e.t.Fatalf("flowPicks: %d names for %d flows", len(w), len(flows))
		}
		got := make([]string, 0, len(flows))
		for i := range flows {
			switch j := e.s.Pick(&flows[i]); {
			case j == -1:
				got = append(got, "-")
			case j < 0 || j >= len(e.list):
				e.t.Fatalf("Pick returned %d with %d servers", j, len(e.list))
			default:
				got = append(got, e.list[j].(*fakeDest).name)
			}
		}
		if g := strings.Join(got, " "); g != strings.Join(w, " ") {
			e.t.Errorf("picks\n got: %s\nwant: %s", g, strings.Join(w, " "))
		}
	}
}

// refBucket256 is the kernel's hash_32(fold, 8) for an address written
// out step by step with 64-bit arithmetic, independent of hash32 and
// addrFold.
func refBucket256(addr string, port uint32) uint32 {
	a := netip.MustParseAddr(addr)
	var fold uint64
	if a.Is4() {
		b := a.As4()
		fold = uint64(b[0])<<24 + uint64(b[1])<<16 + uint64(b[2])<<8 + uint64(b[3])
	} else {
		b := a.As16()
		for w := 0; w < 4; w++ {
			fold ^= uint64(b[4*w])<<24 + uint64(b[4*w+1])<<16 + uint64(b[4*w+2])<<8 + uint64(b[4*w+3])
		}
	}
	v := (fold + uint64(port)) % (1 << 32)
	return uint32(v * 0x61C88647 % (1 << 32) / (1 << 24))
}

// TestHashPinned pins hash_32 buckets worked out by hand (outside Go) for
// the addresses the sh and dh cases use, and checks hash32 and addrFold
// against refBucket256.
func TestHashPinned(t *testing.T) {
	for _, c := range []struct {
		addr   string
		port   uint32
		bucket uint32
	}{
		{"10.0.0.1", 0, 39},
		{"10.0.0.2", 0, 137},
		{"192.168.1.10", 0, 248},
		{"172.16.5.4", 0, 138},
		{"203.0.113.7", 0, 124},
		{"10.1.2.3", 0, 2},
		{"2001:db8::1", 0, 63}, // fold 0x20010db9
		{"10.0.0.1", 12345, 134},
		{"10.0.0.1", 80, 182},
		{"192.168.1.10", 40000, 156},
	} {
		if g := refBucket256(c.addr, c.port); g != c.bucket {
			t.Errorf("refBucket256(%s, %d) = %d, pinned %d", c.addr, c.port, g, c.bucket)
		}
		a := netip.MustParseAddr(c.addr)
		if g := hash32(c.port+addrFold(a), 8); g != c.bucket {
			t.Errorf("hash32(%s + %d) = %d, pinned %d", c.addr, c.port, g, c.bucket)
		}
	}
	if g := addrFold(netip.MustParseAddr("2001:db8::1")); g != 0x20010db9 {
		t.Errorf("fold(2001:db8::1) = %#x", g)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		for _, a := range []netip.Addr{netip.AddrFrom4([4]byte(b[:4])), netip.AddrFrom16(b)} {
			p := uint32(rng.IntN(65536))
			if g, w := hash32(p+addrFold(a), 8), refBucket256(a.String(), p); g != w {
				t.Fatalf("%s port %d: bucket %d, reference %d", a, p, g, w)
			}
		}
	}
}

// refSHTable builds the sh (or dh) bucket table the plain way: the list
// repeated round after round, each server written max(weight, 1) times
// (dh: once), cut at 256. Entries are list indices, -1 when empty.
func refSHTable(weights []int, dh bool) [256]int32 {
	var t [256]int32
	if len(weights) == 0 {
		for i := range t {
			t[i] = -1
		}
		return t
	}
	var seq []int32
	for len(seq) < 256 {
		for i, w := range weights {
			n := max(w, 1)
			if dh {
				n = 1
			}
			for range n {
				seq = append(seq, int32(i))
			}
		}
	}
	copy(t[:], seq)
	return t
}

func TestSHTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, name := range []string{"sh", "dh"} {
		for trial := range 300 {
			n := rng.IntN(9)
			ds := make([]Dest, n)
			ws := make([]int, n)
			for i := range ds {
				ws[i] = rng.IntN(6)
				if trial%10 == 0 {
					ws[i] = rng.IntN(300)
				}
				ds[i] = newDest("d", i+1, ws[i])
			}
			s, _ := New(name)
			s.Update(ds)
			if got, want := s.(*hashTab).buckets, refSHTable(ws, name == "dh"); got != want {
				t.Fatalf("%s weights %v:\n got %v\nwant %v", name, ws, got, want)
			}
		}
	}
}

func TestSH(t *testing.T) {
	// sh (ip_vs_sh.c): 256 buckets filled from the list round by round,
	// each server taking weight consecutive buckets (at least one). A
	// client goes to bucket hash_32(fold(src), 8) (TestHashPinned gives
	// the buckets used here). An unavailable server there (weight 0 or
	// overloaded) means -1 without sh-fallback.
	a1, a2, a3 := cli("10.0.0.1"), cli("10.0.0.2"), cli("192.168.1.10") // buckets 39, 137, 248
	a4, a5 := cli("172.16.5.4"), cli("203.0.113.7")                     // buckets 138, 124
	runCases(t, "sh", []schedCase{
		{
			// [A B]: even buckets A, odd B. 39 B, 137 B, 248 A, 138
			// A, 124 A; the same every time.
			name:    "two servers",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("B B A A A", a1, a2, a3, a4, a5),
				flowPicks("B B A A A", a1, a2, a3, a4, a5),
			},
		},
		{
			// Added the other way round: the list is [B A].
			name:    "list order",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A"),
				flowPicks("A A A", a1, a2, a3),
				update("B A"),
				flowPicks("A A B", a1, a2, a3),
			},
		},
		{
			// [A2 B1]: A A B repeated, bucket%3 0,1 A, 2 B. 39%3 0 A,
			// 137%3 2 B, 248%3 2 B, 138%3 0 A, 124%3 1 A.
			name:    "weights",
			servers: []srv{{"A", 2}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A B B A A", a1, a2, a3, a4, a5),
			},
		},
		{
			// [A1 B1]: 39 B. A's weight 1 -> 2 rebuilds as A A B:
			// 39%3 = 0: A. Back to 1: B again.
			name:    "weight change rebuilds",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("B A", a1, a3),
				weight("A", 2),
				flowPicks("A B", a1, a3),
				weight("A", 1),
				flowPicks("B A", a1, a3),
			},
		},
		{
			// Weight 0 still takes one bucket per round (the fill
			// moves on when ++count >= weight): [A Z B] is A Z B
			// repeated. 124%3 = 1 lands on Z: no server; 39 A, 137 B.
			name:    "weight 0 keeps a bucket",
			servers: []srv{{"A", 1}, {"Z", 0}, {"B", 1}},
			steps: []step{
				update("A Z B"),
				flowPicks("A B -", a1, a2, a5),
			},
		},
		{
			// A weight of 300 fills all 256 buckets before B's turn.
			name:    "weight over 256",
			servers: []srv{{"A", 300}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A A A A A", a1, a2, a3, a4, a5),
			},
		},
		{
			// [A B C]: bucket%3. 138 A; A overloaded: no server.
			name:    "overloaded without fallback",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				flowPicks("A", a4),
				overload(true, "A"),
				flowPicks("- B", a4, a5),
			},
		},
		{
			name:    "empty",
			servers: []srv{{"A", 1}},
			steps: []step{
				update(""),
				flowPicks("-", a1),
			},
		},
	})

	runCasesFlags(t, "sh", FlagSched1, []schedCase{
		{
			// sh-fallback, [A B C]. 172.16.5.4 hashes to 138 (A).
			// With A overloaded the kernel walks bucket
			// (offset + 2*138) & 255 for offset 0, 1, ...: bucket 20
			// (20%3 = 2) is C. A walk from the next bucket, 139,
			// would give B.
			// 10.0.0.1: 39 (A); walk from 78 (A, skipped), 79: B.
			name:    "fallback walk starts at twice the hash",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				flowPicks("A A", a4, a1),
				overload(true, "A"),
				flowPicks("C B", a4, a1),
				overload(true, "B C"),
				flowPicks("- -", a4, a1),
			},
		},
		{
			// Weight 0 is unavailable too: [A Z B], 124 is Z; walk
			// from 248 (248%3 = 2): B.
			name:    "fallback past weight 0",
			servers: []srv{{"A", 1}, {"Z", 0}, {"B", 1}},
			steps: []step{
				update("A Z B"),
				flowPicks("B", a5),
			},
		},
	})

	runCasesFlags(t, "sh", FlagSched2, []schedCase{
		{
			// sh-port, [A B]: 10.0.0.1 port 12345 hashes to 134 (A),
			// port 80 to 182 (A); without the port 39 (B). ICMP has
			// no port: 39, B. 192.168.1.10:40000 is 156: A.
			name:    "port",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("A A B B A",
					cliPort(6, "10.0.0.1", 12345), cliPort(17, "10.0.0.1", 80),
					cliPort(1, "10.0.0.1", 12345), cliPort(6, "10.0.0.1", 0),
					cliPort(132, "192.168.1.10", 40000)),
			},
		},
	})
}

func TestDH(t *testing.T) {
	// dh (ip_vs_dh.c): 256 buckets, one server each in list order
	// round and round, weights ignored. The packet's destination address
	// is hashed (the source does not matter). A quiesced or overloaded
	// server there means -1; dh has no fallback.
	d1, d2, d3 := to("10.0.0.1"), to("10.0.0.2"), to("192.168.1.10") // 39, 137, 248
	d6, d7 := to("10.1.2.3"), to("203.0.113.7")                      // 2, 124
	other := d1
	other.Src = netip.MustParseAddr("198.18.7.7")
	runCases(t, "dh", []schedCase{
		{
			// [A3 B1]: even A, odd B, the weights make no difference.
			name:    "weights ignored",
			servers: []srv{{"A", 3}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("B B A B", d1, d2, d3, other),
			},
		},
		{
			// [A B C]: bucket%3. 2 C, 137 C, 124 B, 39 A.
			name:    "three",
			servers: []srv{{"A", 1}, {"B", 1}, {"C", 1}},
			steps: []step{
				update("A B C"),
				flowPicks("C C B A", d6, d2, d7, d1),
			},
		},
		{
			// 248 is A's. Quiesced: the table keeps A (no weight
			// in the fill), so no server. Overloaded likewise.
			name:    "unavailable",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				weight("A", 0),
				flowPicks("- B", d3, d1),
				weight("A", 1),
				overload(true, "A"),
				flowPicks("- B", d3, d1),
				update(""),
				flowPicks("-", d1),
			},
		},
		{
			// 2001:db8::1 folds to 0x20010db9 (bucket 63, B), as
			// does 2001:db9:: : the XOR fold maps both alike.
			name:    "ipv6 fold",
			servers: []srv{{"A", 1}, {"B", 1}},
			steps: []step{
				update("A B"),
				flowPicks("B B", to("2001:db8::1"), to("2001:db9::")),
			},
		},
	})
}
