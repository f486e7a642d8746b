package nat_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// Tests of Table.ProcessOffload: packets whose transport checksum a
// device left partial (CHECKSUM_PARTIAL) and GSO super-packets.

var (
	offVIP4 = nattest.AP("172.16.9.100:80")
	offRS4  = nattest.AP("172.16.9.5:8080")
	offVIP6 = nattest.AP("[fd00:9::100]:80")
	offRS6  = nattest.AP("[fd00:9::5]:8080")
)

// offloadTable has a TCP and a UDP service on offVIP4 and offVIP6, each
// with one real server (offRS4, offRS6) on another port, so that DNAT
// rewrites address and port.
func offloadTable(t testing.TB, egressMTU func(netip.Addr) int) *nat.Table {
	return offloadTableMethod(t, egressMTU, rules.Masquerade)
}

// offloadTableMethod is offloadTable with real servers of method m; for
// full NAT, each service has two local addresses (lad4, lad6).
func offloadTableMethod(t testing.TB, egressMTU func(netip.Addr) int, m rules.Method) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{EgressMTU: egressMTU, Seed: 7})
	for _, proto := range []uint8{6, 17} {
		for _, s := range [][2]netip.AddrPort{{offVIP4, offRS4}, {offVIP6, offRS6}} {
			var lads []netip.Addr
			if m == rules.FullNAT {
				lads = lad4
				if s[0].Addr().Is6() {
					lads = lad6
				}
			}
			if _, err := tb.AddService(nat.ServiceConfig{Proto: proto, Addr: s[0].Addr(), Port: s[0].Port(), Scheduler: "rr", LocalAddrs: lads}); err != nil {
				t.Fatal(err)
			}
			if _, err := tb.AddDest(nat.ServiceKey{Proto: proto, Addr: s[0].Addr(), Port: s[0].Port()}, nat.DestConfig{Addr: s[1].Addr(), Port: s[1].Port(), Weight: 1, Method: m}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return tb
}

// open makes the connection of client c to vip: a SYN for TCP, a first
// datagram for UDP, both ordinary packets.
func open(t testing.TB, tb *nat.Table, proto uint8, c, vip netip.AddrPort, now int64) *nat.Conn {
	t.Helper()
	var p nat.Packet
	b := nattest.Build(nattest.Seg{Src: c, Dst: vip, Proto: proto, Flags: nattest.SYN, Seq: 1})
	if r := tb.Process(b, &p, now); r.Verdict != nat.Forward {
		t.Fatalf("opening %v -> %v: %+v", c, vip, r)
	}
	conn, _ := tb.Lookup(proto, c, vip)
	if conn == nil {
		t.Fatalf("no connection %v -> %v", c, vip)
	}
	return conn
}

// sameModuloZero reports whether a and b are equal, allowing the 16-bit
// checksum at off to be 0x0000 in one and 0xffff in the other (the same
// value in ones' complement: a device stores a computed zero as 0xffff,
// an incremental update may give either).
func sameModuloZero(a, b []byte, off int) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if len(a) != len(b) || !bytes.Equal(a[:off], b[:off]) || !bytes.Equal(a[off+2:], b[off+2:]) {
		return false
	}
	x, y := binary.BigEndian.Uint16(a[off:]), binary.BigEndian.Uint16(b[off:])
	return x^y == 0xffff && (x == 0 || y == 0)
}

func randAddr(rng *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var a [16]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		a[0] = 0xfd
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{10, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
}

// ProcessOffload with a partial checksum, finished afterwards as the
// device does, gives exactly the bytes Process gives for the same packet
// fully checksummed: DNAT and SNAT, IPv4 and IPv6, TCP and UDP, for many
// address pairs (so that ones' complement carries go every way), with and
// without SegLen.
//
// For full NAT, ports change on both sides too: a partial checksum holds
// only the pseudo-header (addresses and length), as the kernel's
// inet_proto_csum_replace4 with pseudohdr true adjusts it, and a port is
// in the TCP or UDP header the device sums itself, so a port change needs
// no adjustment; the comparison with the ordinary path, whose checksum is
// finished, checks that.
func TestProcessOffloadPartialMatchesProcess(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range []rules.Method{rules.Masquerade, rules.FullNAT} {
		for _, v6 := range []bool{false, true} {
			for _, proto := range []uint8{6, 17} {
				for _, dir := range []nat.Dir{nat.DirIn, nat.DirOut} {
					name := fmt.Sprintf("%v/v6=%v/proto=%d/dir=%d", m, v6, proto, dir)
					t.Run(name, func(t *testing.T) {
						vip, rs := offVIP4, offRS4
						if v6 {
							vip, rs = offVIP6, offRS6
						}
						tb := offloadTableMethod(t, nil, m)
						now := time.Unix(1_000_000, 0).UnixNano()
						for i := range 64 {
							c := netip.AddrPortFrom(randAddr(rng, v6), uint16(1024+rng.IntN(60000)))
							conn := open(t, tb, proto, c, vip, now)
							if conn.DAddr() != rs.Addr() || conn.DPort != rs.Port() {
								t.Fatalf("connection to %v:%d", conn.DAddr(), conn.DPort)
							}
							src, dst := c, vip
							if dir == nat.DirOut {
								src, dst = rs, c
								if conn.FullNAT() {
									dst = conn.Local()
								}
							}
							payload := make([]byte, 1+rng.IntN(4000)) // odd lengths too
							for j := range payload {
								payload[j] = byte(rng.Uint32())
							}
							full := nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: proto, Flags: nattest.ACK | nattest.PSH,
								Seq: rng.Uint32(), Ack: rng.Uint32(), Payload: payload, DF: true, TTL: 64})
							part := bytes.Clone(full)
							start, off := nattest.Partial(part)

							var p nat.Packet
							r := tb.Process(full, &p, now)
							if r.Verdict != nat.Forward || r.Dir != dir || !p.VerifyL4Checksum() {
								t.Fatalf("Process: %+v, checksum ok %v", r, p.VerifyL4Checksum())
							}
							o := nat.Offload{PartialCsum: true}
							if i%2 == 1 {
								o.SegLen = start + 20 + 1000 // a super-packet of 1000-byte segments
							}
							r = tb.ProcessOffload(part, &p, now, o)
							if r.Verdict != nat.Forward || r.Dir != dir {
								t.Fatalf("ProcessOffload: %+v", r)
							}
							// The field still holds a pseudo-header sum: that
							// of the rewritten header.
							want := bytes.Clone(full)
							nattest.Partial(want)
							if got, w := binary.BigEndian.Uint16(part[start+off:]), binary.BigEndian.Uint16(want[start+off:]); got != w && got^w != 0xffff {
								t.Fatalf("client %v: partial sum %#04x after rewrite, want %#04x", c, got, w)
							}
							nattest.Finish(part, start, off)
							if !sameModuloZero(part, full, start+off) {
								t.Fatalf("client %v: partial path gave\n% x\nfull path gave\n% x", c, part, full)
							}
							if !nattest.L4ChecksumOK(part) || (!v6 && !nattest.IPv4HeaderOK(part)) {
								t.Fatalf("client %v: checksums wrong after finishing", c)
							}
						}
					})
				}
			}
		}
	}
}

// A SYN whose checksum is partial opens a connection: there is no
// checksum to verify yet (VerifyL4Checksum skips it, as tcp_csum_check
// skips CHECKSUM_PARTIAL), where the same bytes as an ordinary packet are
// dropped as a bad checksum.
func TestProcessOffloadPartialSYN(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		vip, c := offVIP4, nattest.AP("10.1.2.3:4444")
		if v6 {
			vip, c = offVIP6, nattest.AP("[fd01::3]:4444")
		}
		tb := offloadTable(t, nil)
		syn := nattest.Build(nattest.Seg{Src: c, Dst: vip, Proto: 6, Flags: nattest.SYN, Seq: 99})
		nattest.Partial(syn)
		var p nat.Packet
		if r := tb.Process(bytes.Clone(syn), &p, 0); r.Verdict != nat.Drop || r.Reason != nat.DropBadChecksum {
			t.Errorf("v6=%v: partial SYN as an ordinary packet: %+v, want a bad-checksum drop", v6, r)
		}
		r := tb.ProcessOffload(syn, &p, 0, nat.Offload{PartialCsum: true})
		if r.Verdict != nat.Forward || p.Dst() != r.Conn.DAddr() || p.DstPort != r.Conn.DPort {
			t.Fatalf("v6=%v: partial SYN: %+v", v6, r)
		}
		start, _, off := nattest.L4(syn)
		nattest.Finish(syn, start, off)
		if !nattest.L4ChecksumOK(syn) {
			t.Errorf("v6=%v: checksum wrong after finishing the rewritten SYN", v6)
		}
	}
}

// The egress MTU applies to the segments of a super-packet (SegLen), not
// to the whole: a 9000-byte super-packet of 1500-byte segments passes a
// 1500 MTU; of 1501-byte segments with DF it is TooBig, unchanged, as is
// the same packet without SegLen.
func TestProcessOffloadMTUUsesSegLen(t *testing.T) {
	const mtu = 1500
	for _, v6 := range []bool{false, true} {
		for _, dir := range []nat.Dir{nat.DirIn, nat.DirOut} {
			t.Run(fmt.Sprintf("v6=%v/dir=%d", v6, dir), func(t *testing.T) {
				vip, rs, c := offVIP4, offRS4, nattest.AP("10.1.2.3:4444")
				if v6 {
					vip, rs, c = offVIP6, offRS6, nattest.AP("[fd01::3]:4444")
				}
				asked := map[netip.Addr]bool{}
				tb := offloadTable(t, func(dst netip.Addr) int { asked[dst] = true; return mtu })
				open(t, tb, 6, c, vip, 0)
				if !asked[rs.Addr()] || !asked[c.Addr()] {
					t.Fatalf("EgressMTU asked for %v", asked)
				}
				src, dst, rewritten := c, vip, rs.Addr()
				if dir == nat.DirOut {
					src, dst, rewritten = rs, c, vip.Addr()
				}
				super := func(df bool) []byte {
					b := nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: 6, Flags: nattest.ACK, Seq: 1000, Size: 9000, DF: df})
					nattest.Partial(b)
					return b
				}
				var p nat.Packet
				for _, tc := range []struct {
					segLen int
					df     bool
					want   nat.Verdict
				}{
					{1500, true, nat.Forward},
					{1400, true, nat.Forward},
					{1501, true, nat.TooBig},
					{0, true, nat.TooBig}, // no SegLen: the whole 9000 bytes count
					{9000, true, nat.TooBig},
					{1501, false, nat.Forward}, // IPv4 without DF may be fragmented
				} {
					if v6 && !tc.df {
						continue
					}
					b := super(tc.df)
					orig := bytes.Clone(b)
					r := tb.ProcessOffload(b, &p, 0, nat.Offload{SegLen: tc.segLen, PartialCsum: true})
					if r.Verdict != tc.want {
						t.Errorf("SegLen %d DF %v: %+v, want verdict %d", tc.segLen, tc.df, r, tc.want)
						continue
					}
					switch r.Verdict {
					case nat.TooBig:
						if r.MTU != mtu || r.Dir != dir || r.Conn == nil {
							t.Errorf("SegLen %d: TooBig result %+v", tc.segLen, r)
						}
						if !bytes.Equal(b, orig) {
							t.Errorf("SegLen %d: TooBig packet was rewritten", tc.segLen)
						}
					case nat.Forward:
						got := p.Dst()
						if dir == nat.DirOut {
							got = p.Src()
						}
						if got != rewritten {
							t.Errorf("SegLen %d: rewritten to %v, want %v", tc.segLen, got, rewritten)
						}
					}
				}
			})
		}
	}
}

// The per-packet path of an established flow's super-packets, partial
// checksum and SegLen set, both directions, allocates nothing.
func TestProcessOffloadAllocatesNothing(t *testing.T) {
	for _, m := range []rules.Method{rules.Masquerade, rules.FullNAT} {
		for _, v6 := range []bool{false, true} {
			vip, rs, c := offVIP4, offRS4, nattest.AP("10.1.2.3:4444")
			if v6 {
				vip, rs, c = offVIP6, offRS6, nattest.AP("[fd01::3]:4444")
			}
			tb := offloadTableMethod(t, func(netip.Addr) int { return 1500 }, m)
			conn := open(t, tb, 6, c, vip, 0)
			to := c
			if conn.FullNAT() {
				to = conn.Local()
			}
			in := nattest.Build(nattest.Seg{Src: c, Dst: vip, Proto: 6, Flags: nattest.ACK, Seq: 5, Size: 64000, DF: true})
			out := nattest.Build(nattest.Seg{Src: rs, Dst: to, Proto: 6, Flags: nattest.ACK, Seq: 5, Size: 64000, DF: true})
			nattest.Partial(in)
			nattest.Partial(out)
			hdr, _, _ := nattest.L4(in)
			o := nat.Offload{SegLen: hdr + 20 + 1400, PartialCsum: true}
			bi, bo := make([]byte, len(in)), make([]byte, len(out))
			var p nat.Packet
			allocs := testing.AllocsPerRun(1000, func() {
				copy(bi, in)
				copy(bo, out)
				if tb.ProcessOffload(bi, &p, 0, o).Verdict != nat.Forward || tb.ProcessOffload(bo, &p, 0, o).Verdict != nat.Forward {
					panic("not forwarded")
				}
			})
			if allocs != 0 {
				t.Errorf("%v v6=%v: super-packet path allocates %.1f per packet pair", m, v6, allocs)
			}
		}
	}
}
