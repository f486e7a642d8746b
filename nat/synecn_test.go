package nat_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

const (
	ECE = 0x40
	CWR = 0x80
)

// withECN sets the ECN codepoint of the IP packet b (and IPv4's header
// checksum).
func withECN(b []byte, ecn byte) []byte {
	if b[0]>>4 == 6 {
		b[1] = b[1]&^0x30 | ecn<<4
		return b
	}
	b[1] = b[1]&^3 | ecn
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], nattest.Checksum(b[:20], 0))
	return b
}

func ecnOf(b []byte) byte {
	if b[0]>>4 == 6 {
		return b[1] >> 4 & 3
	}
	return b[1] & 3
}

// ECN through the SYN proxy (synecn.go): with timestamps the cookie
// SYN-ACK agrees to it and the SYN to the server asks for it; a server
// that agrees gets the client's marks untouched, one that refuses gets
// not-ECT, and a packet marked CE on the way is dropped. Without
// timestamps the cookie cannot keep the answer: no ECN.
func TestSynProxyECN(t *testing.T) {
	for _, tc := range []struct {
		name   string
		c, v   netip.AddrPort
		rs     netip.Addr
		rsECN  bool
		noTS   bool
		strips bool
	}{
		{"v4 server ECN", cli, vip, rs1, true, false, false},
		{"v4 server without", cli, vip, rs1, false, false, true},
		{"v6 server without", cli6, vip6, rs6, false, false, true},
		{"v4 client without timestamps", cli, vip, rs1, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSPEnv(t, tc.c, tc.v, tc.rs, rules.Masquerade, netip.Addr{})
			opts := synOpts(1460, 5, 0, 7)
			if tc.noTS {
				opts = []byte{2, 4, 5, 0xb4}
			}
			_, b := e.send(nattest.Seg{Src: tc.c, Dst: tc.v, Flags: S | ECE | CWR, Seq: 10, Options: opts})
			sa := readSeg(t, b)
			if want := uint8(S | A | ECE); tc.noTS {
				if sa.flags != S|A {
					t.Fatalf("SYN-ACK flags %#x without timestamps, want %#x", sa.flags, S|A)
				}
			} else if sa.flags != want {
				t.Fatalf("SYN-ACK flags %#x, want %#x", sa.flags, want)
			}
			ack := nattest.Seg{Src: tc.c, Dst: tc.v, Flags: A, Seq: 11, Ack: sa.seq + 1}
			if !tc.noTS {
				ack.Options = tsOpts(6, u32(sa.opts[8]))
			}
			r, b := e.send(ack)
			syn := readSeg(t, b)
			wantSyn := uint8(S | ECE | CWR)
			if tc.noTS {
				wantSyn = S
			}
			if r.Verdict != nat.Forward || syn.flags != wantSyn {
				t.Fatalf("SYN to the server %+v, flags %#x want %#x", r, syn.flags, wantSyn)
			}
			rsf := uint8(S | A)
			if tc.rsECN {
				rsf |= ECE
			}
			rsOpts := synOpts(1460, 77, 6, 7)
			if tc.noTS {
				rsOpts = []byte{2, 4, 5, 0xb4}
			}
			if r, _ := e.send(nattest.Seg{Src: netip.AddrPortFrom(tc.rs, 8080), Dst: syn.src, Flags: rsf, Seq: 4000, Ack: 11, Options: rsOpts}); r.Verdict != nat.Forward {
				t.Fatalf("SYN-ACK: %+v", r)
			}
			data := func(ecn byte) (nat.Result, []byte) {
				s := nattest.Seg{Src: tc.c, Dst: tc.v, Proto: 6, Flags: A, Seq: 11, Ack: sa.seq + 1, Payload: []byte("hello")}
				if !tc.noTS {
					s.Options = tsOpts(7, u32(sa.opts[8]))
				}
				b := roomy(withECN(nattest.Build(s), ecn))
				r := e.tb.Process(b, &e.p, e.now)
				return r, e.p.B
			}
			r, b = data(2) // ECT(0)
			if r.Verdict != nat.Forward {
				t.Fatalf("ECT data: %+v", r)
			}
			readSeg(t, b) // checksums
			if got, want := ecnOf(b), byte(2); tc.strips && got != 0 || !tc.strips && got != want {
				t.Fatalf("ECT(0) became %d (strip %v)", got, tc.strips)
			}
			r, _ = data(3) // CE
			if tc.strips && (r.Verdict != nat.Drop || r.Reason != nat.DropSynProxy) || !tc.strips && r.Verdict != nat.Forward {
				t.Fatalf("CE data: %+v (strip %v)", r, tc.strips)
			}
		})
	}
}
