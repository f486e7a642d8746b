package nat

import (
	"encoding/binary"
	"testing"

	"github.com/tunvs/tunvs/nat/nattest"
)

func TestSeqAdjMapping(t *testing.T) {
	// 40 bytes inserted in front of the segment the sender numbered
	// 1000 (a PROXY header in front of the first data).
	var a SeqAdj
	a.Update(1000, 40)
	for _, c := range []struct{ seq, want uint32 }{
		{999, 999},   // before: PrevDelta
		{1000, 1000}, // the resized segment itself (and its retransmissions)
		{1001, 1041},
		{5000, 5040},
	} {
		if got := a.Seq(c.seq); got != c.want {
			t.Errorf("Seq(%d) = %d, want %d", c.seq, got, c.want)
		}
	}
	for _, c := range []struct{ ack, want uint32 }{
		{1000, 1000}, // nothing of the segment
		{1001, 1000}, // part of the inserted bytes: nothing of the sender's
		{1040, 1000}, // all inserted bytes, none of the sender's
		{1041, 1001},
		{6040, 6000},
	} {
		if got := a.Ack(c.ack); got != c.want {
			t.Errorf("Ack(%d) = %d, want %d", c.ack, got, c.want)
		}
	}
	// A retransmission resized again the same way is not counted twice.
	a.Update(1000, 40)
	if a.Delta != 40 || a.PrevDelta != 0 {
		t.Fatalf("after a repeated Update: %+v", a)
	}
	// A later resize stacks on the first (vs_seq_update).
	a.Update(3000, -10)
	if a.Seq(2000) != 2040 || a.Seq(3001) != 3031 || a.Ack(3031) != 3001 || a.Ack(2040) != 2000 {
		t.Fatalf("after a second resize %+v: Seq(2000)=%d Seq(3001)=%d Ack(3031)=%d Ack(2040)=%d",
			a, a.Seq(2000), a.Seq(3001), a.Ack(3031), a.Ack(2040))
	}
}

func TestSeqAdjWraps(t *testing.T) {
	var a SeqAdj
	a.Update(0xfffffff0, 100)
	if got := a.Seq(0x10); got != 0x10+100 {
		t.Fatalf("Seq across the wrap = %#x", got)
	}
	if got := a.Ack(0x10 + 100); got != 0x10 {
		t.Fatalf("Ack across the wrap = %#x", got)
	}
	if got := a.Seq(0xffffff00); got != 0xffffff00 {
		t.Fatalf("Seq before the resize = %#x", got)
	}
}

func TestSeqAdjInit(t *testing.T) {
	// A SYN proxy's ISN translation: a constant shift.
	var a SeqAdj
	a.Init(-7)
	if !a.Active() || a.Seq(100) != 93 || a.Seq(0) != 0xfffffff9 || a.Ack(93) != 100 {
		t.Fatalf("%+v: Seq(100)=%d Ack(93)=%d", a, a.Seq(100), a.Ack(93))
	}
	var z SeqAdj
	if z.Active() || z.Seq(5) != 5 || z.Ack(5) != 5 {
		t.Fatal("the zero SeqAdj shifts")
	}
}

// sackOpts is NOP NOP SACK with two blocks, at an even offset, and one
// byte later (an odd offset) for the checksum's sake.
func sackOpts(odd bool, e ...uint32) []byte {
	o := []byte{tcpOptNOP, tcpOptNOP}
	if odd {
		o = o[:1]
	}
	o = append(o, tcpOptSACK, byte(2+4*len(e)))
	for _, v := range e {
		o = binary.BigEndian.AppendUint32(o, v)
	}
	return o
}

func TestPacketAdjust(t *testing.T) {
	var in SeqAdj
	in.Update(1000, 40)
	for _, v6 := range []bool{false, true} {
		for _, odd := range []bool{false, true} {
			src, dst := nattest.AP("10.0.0.1:80"), nattest.AP("10.0.0.2:5555")
			if v6 {
				src, dst = nattest.AP("[fd00::1]:80"), nattest.AP("[fd00::2]:5555")
			}
			// The real server acknowledges the first segment
			// and SACKs two later ranges.
			b := nattest.Build(nattest.Seg{Src: src, Dst: dst, Proto: 6, Flags: nattest.ACK,
				Seq: 77, Ack: 1041 + 100, Options: sackOpts(odd, 1541, 2041, 3041, 4041)})
			p := mustParsePacket(t, b)
			if !p.AdjustAck(&in) || p.AdjustSeq(&SeqAdj{}) != true {
				t.Fatal("not a TCP segment")
			}
			if !p.VerifyL4Checksum() {
				t.Fatalf("v6=%v odd=%v: checksum wrong after AdjustAck", v6, odd)
			}
			th := p.tcpHeader()
			if p.Ack() != 1101 || p.Seq() != 77 {
				t.Fatalf("ack %d seq %d", p.Ack(), p.Seq())
			}
			o := 20 + 4
			if odd {
				o = 20 + 3
			}
			for i, want := range []uint32{1501, 2001, 3001, 4001} {
				if got := binary.BigEndian.Uint32(th[o+4*i:]); got != want {
					t.Errorf("v6=%v odd=%v: SACK edge %d = %d, want %d", v6, odd, i, got, want)
				}
			}
			// The client's later segment is shifted forward.
			b = nattest.Build(nattest.Seg{Src: dst, Dst: src, Proto: 6, Flags: nattest.ACK, Seq: 1200, Ack: 78, Payload: []byte("xyz")})
			p = mustParsePacket(t, b)
			p.AdjustSeq(&in)
			if p.Seq() != 1240 || !p.VerifyL4Checksum() {
				t.Fatalf("seq %d, checksum ok %v", p.Seq(), p.VerifyL4Checksum())
			}
		}
	}
}

func TestPacketAdjustAckWithoutACK(t *testing.T) {
	var in SeqAdj
	in.Update(1000, 40)
	b := nattest.Build(nattest.Seg{Src: nattest.AP("10.0.0.1:80"), Dst: nattest.AP("10.0.0.2:5555"), Proto: 6, Flags: nattest.RST, Ack: 5000})
	p := mustParsePacket(t, b)
	p.AdjustAck(&in)
	if p.Ack() != 5000 {
		t.Fatal("an acknowledgement field without ACK was changed")
	}
}

func TestPacketReduceMSS(t *testing.T) {
	// MSS after a NOP: at an odd offset.
	for _, opts := range [][]byte{{tcpOptMSS, 4, 0x05, 0xb4}, {tcpOptNOP, tcpOptMSS, 4, 0x05, 0xb4}, {tcpOptNOP, tcpOptNOP, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}} {
		b := nattest.Build(nattest.Seg{Src: nattest.AP("10.0.0.1:80"), Dst: nattest.AP("10.0.0.2:5555"), Proto: 6, Flags: nattest.SYN | nattest.ACK, Options: opts})
		p := mustParsePacket(t, b)
		found := p.ReduceMSS(56)
		if !p.VerifyL4Checksum() {
			t.Fatalf("%x: checksum wrong", opts)
		}
		hasMSS := opts[0] == tcpOptMSS || opts[1] == tcpOptMSS
		if found != hasMSS {
			t.Fatalf("%x: found %v", opts, found)
		}
		if hasMSS {
			o := 20 + 2
			if opts[0] == tcpOptNOP {
				o++
			}
			if got := binary.BigEndian.Uint16(p.tcpHeader()[o:]); got != 1460-56 {
				t.Fatalf("%x: MSS %d", opts, got)
			}
		}
	}
}

func TestPacketAdjustMalformedOptions(t *testing.T) {
	// Option lengths that run past the header or are below 2 end the
	// walk, as tcp_parse_options does: nothing changes, nothing panics.
	for _, opts := range [][]byte{{tcpOptSACK, 40, 0, 0}, {tcpOptSACK, 1, 0, 0}, {tcpOptSACK, 0}, {tcpOptMSS}} {
		b := nattest.Build(nattest.Seg{Src: nattest.AP("10.0.0.1:80"), Dst: nattest.AP("10.0.0.2:5555"), Proto: 6, Flags: nattest.ACK, Ack: 9, Options: opts})
		p := mustParsePacket(t, b)
		var a SeqAdj
		a.Update(1, 40)
		p.AdjustAck(&a)
		p.ReduceMSS(10)
		if !p.VerifyL4Checksum() {
			t.Fatalf("%x: checksum wrong", opts)
		}
	}
}

func TestPacketAdjustAllocs(t *testing.T) {
	var in SeqAdj
	in.Update(1000, 40)
	b := nattest.Build(nattest.Seg{Src: nattest.AP("10.0.0.1:80"), Dst: nattest.AP("10.0.0.2:5555"), Proto: 6, Flags: nattest.ACK | nattest.SYN,
		Ack: 1041, Options: append([]byte{tcpOptMSS, 4, 5, 0xb4}, sackOpts(false, 1541, 2041)...)})
	var p Packet
	if n := testing.AllocsPerRun(100, func() {
		Parse(b, &p)
		p.AdjustAck(&in)
		p.AdjustSeq(&in)
		p.ReduceMSS(1)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
