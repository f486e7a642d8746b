package ipvssync

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	tcp4 = Conn{
		Proto: ProtoTCP, Flags: FlagHashed, State: 1,
		CAddr: netip.MustParseAddr("10.9.0.1"), CPort: 40000,
		VAddr: netip.MustParseAddr("10.0.0.100"), VPort: 80,
		DAddr: netip.MustParseAddr("10.1.0.1"), DPort: 8080,
		Timeout: 900,
	}
	udp6 = Conn{
		Proto: ProtoUDP, Flags: FlagInactive, State: 0,
		CAddr: netip.MustParseAddr("2001:db8::1"), CPort: 5353,
		VAddr: netip.MustParseAddr("2001:db8:100::100"), VPort: 53,
		DAddr: netip.MustParseAddr("2001:db8:1::1"), DPort: 53,
		Timeout: 300,
	}
	tpl4 = Conn{
		Proto: ProtoTCP, Flags: FlagTemplate | FlagInactive, State: TemplateAssured,
		CAddr: netip.MustParseAddr("10.9.0.0"), VAddr: netip.MustParseAddr("10.0.0.100"), VPort: 80,
		DAddr: netip.MustParseAddr("10.1.0.2"), DPort: 80, Timeout: 360,
	}
	seq4 = Conn{
		Proto: ProtoTCP, Flags: FlagInSeq | FlagOutSeq, State: 1,
		CAddr: netip.MustParseAddr("10.9.0.2"), CPort: 1024,
		VAddr: netip.MustParseAddr("10.0.0.100"), VPort: 21,
		DAddr: netip.MustParseAddr("10.1.0.1"), DPort: 21,
		Timeout: 900,
		InSeq:   Seq{1, 2, 3}, OutSeq: Seq{4, 5, 6},
	}
)

// TestEncodeV1Layout checks the bytes of a version 1 message against the
// layout of struct ip_vs_sync_mesg and ip_vs_sync_v4/v6, written out by
// hand here.
func TestEncodeV1Layout(t *testing.T) {
	msgs := Encode(1, 7, 1472, []Conn{tcp4, seq4, udp6})
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	want := mustHex(t, `
		00 07 00 b4 03 01 00 00
		00 06 00 24 00000000 0001 9c40 0050 1f90 00000000 00000384
		0a090001 0a000064 0a010001
		00 06 00 3e 00000600 0001 0400 0015 0015 00000000 00000384
		0a090002 0a000064 0a010001
		01 18 00000001 00000002 00000003 00000004 00000005 00000006
		0000
		01 11 00 48 00000100 0000 14e9 0035 0035 00000000 0000012c
		20010db8000000000000000000000001
		20010db8010000000000000000000100
		20010db8000100000000000000000001`)
	if !bytes.Equal(msgs[0], want) {
		t.Fatalf("encoded\n%x\nwant\n%x", msgs[0], want)
	}
	var m Message
	if r := m.Decode(msgs[0]); r != ReasonNone {
		t.Fatalf("decode: %v", r)
	}
	if m.Version != 1 || m.SyncID != 7 || len(m.Conns) != 3 {
		t.Fatalf("decoded %+v", m)
	}
	w := []Conn{tcp4, seq4, udp6}
	w[0].Flags = 0 // the hashed bit is never sent
	for i := range w {
		if !reflect.DeepEqual(m.Conns[i], w[i]) {
			t.Errorf("record %d: %+v, want %+v", i, m.Conns[i], w[i])
		}
	}
}

func TestEncodeV0Layout(t *testing.T) {
	msgs := Encode(0, 3, 1472, []Conn{tcp4, udp6, seq4})
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	// udp6 is left out: version 0 is IPv4 only. Sequence data is in
	// host (little-endian) order.
	want := mustHex(t, `
		02 03 00 4c
		00 06 9c40 0050 1f90 0a090001 0a000064 0a010001 0000 0001
		00 06 0400 0015 0015 0a090002 0a000064 0a010001 0600 0001
		01000000 02000000 03000000 04000000 05000000 06000000`)
	if !bytes.Equal(msgs[0], want) {
		t.Fatalf("encoded\n%x\nwant\n%x", msgs[0], want)
	}
	var m Message
	if r := m.Decode(msgs[0]); r != ReasonNone {
		t.Fatalf("decode: %v", r)
	}
	if m.Version != 0 || m.SyncID != 3 || len(m.Conns) != 2 {
		t.Fatalf("decoded %+v", m)
	}
	w := seq4
	w.Timeout = 0 // version 0 carries none
	if !reflect.DeepEqual(m.Conns[1], w) {
		t.Errorf("record 1: %+v, want %+v", m.Conns[1], w)
	}
}

// TestEncodeSplit: records go into a message while they fit in maxlen,
// padding included, as the kernel fills a sync buffer; version 0 closes a
// buffer once a record with options would not fit.
func TestEncodeSplit(t *testing.T) {
	conns := make([]Conn, 100)
	for i := range conns {
		conns[i] = tcp4
		conns[i].CPort = uint16(1000 + i)
	}
	// 1472: 8 + 40*36 = 1448, a 41st would need 1484.
	msgs := Encode(1, 0, 1472, conns)
	if len(msgs) != 3 || len(msgs[0]) != 1448 || msgs[0][4] != 40 || msgs[2][4] != 20 {
		t.Fatalf("v1 split: %d messages, first %d bytes %d records", len(msgs), len(msgs[0]), msgs[0][4])
	}
	// Records of 38 bytes need 2 bytes of padding between them.
	conns[0].Flags = FlagInSeq
	for i := range conns {
		conns[i].Flags = FlagInSeq
	}
	msgs = Encode(1, 0, 200, conns[:4])
	// 8 + 62 + 2 + 62 = 134; a third needs 136+62 = 198 <= 200.
	if len(msgs) != 2 || len(msgs[0]) != 8+62+2+62+2+62 {
		t.Fatalf("v1 padded split: %d messages, first %d bytes", len(msgs), len(msgs[0]))
	}
	for i := range conns {
		conns[i].Flags = 0
	}
	// v0: 4 + 24*n; closed when 48 more would not fit: 1472-48 = 1424,
	// so at 4+24*59 = 1420 there is still room, at 1444 not.
	msgs = Encode(0, 0, 1472, conns)
	if len(msgs) != 2 || len(msgs[0]) != 4+24*60 || msgs[0][0] != 60 {
		t.Fatalf("v0 split: %d messages, first %d bytes %d records", len(msgs), len(msgs[0]), msgs[0][0])
	}
	// One record longer than maxlen still goes out, alone.
	msgs = Encode(1, 0, 20, conns[:2])
	if len(msgs) != 2 || len(msgs[0]) != 44 {
		t.Fatalf("oversized record: %d messages", len(msgs))
	}
	// Never more than 255 records in one message.
	many := make([]Conn, 300)
	for i := range many {
		many[i] = tcp4
	}
	msgs = Encode(1, 0, 65507, many)
	if len(msgs) != 2 || msgs[0][4] != 255 {
		t.Fatalf("count bound: %d messages", len(msgs))
	}
}

func TestDecodeRefused(t *testing.T) {
	good := Encode(1, 1, 1472, []Conn{tcp4, seq4})[0]
	good3 := Encode(1, 1, 1472, []Conn{tcp4, seq4, tcp4})[0]
	good0 := Encode(0, 1, 1472, []Conn{tcp4, seq4})[0]
	edit := func(b []byte, f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), b...))
	}
	setSize := func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"empty", nil, ReasonShort},
		{"three bytes", []byte{0, 0, 0}, ReasonShort},
		{"size", edit(good, func(b []byte) []byte { b[3]++; return b }), ReasonSize},
		{"cut", edit(good, func(b []byte) []byte { return setSize(b[:len(b)-1]) }), ReasonRecordSize},
		{"count too high", edit(good, func(b []byte) []byte { b[4] = 3; return b }), ReasonTruncated},
		{"count too low", edit(good, func(b []byte) []byte { b[4] = 1; return b }), ReasonTrailing},
		{"record version", edit(good, func(b []byte) []byte { b[8+2] |= 0x10; return b }), ReasonRecordVersion},
		{"record type", edit(good, func(b []byte) []byte { b[8] = 2; return b }), ReasonRecordType},
		{"record below fixed", edit(good, func(b []byte) []byte { b[8+3] = 30; return b }), ReasonRecordSize},
		{"v6 type on v4 record", edit(good, func(b []byte) []byte { b[8] = 1; return b }), ReasonRecordSize},
		{"padding", edit(good3, func(b []byte) []byte { b[8+36+62] = 1; return b }), ReasonPadding},
		{"seq length", edit(good, func(b []byte) []byte { b[8+36+36+1] = 20; return b }), ReasonSeqOption},
		{"option past record", edit(good, func(b []byte) []byte { b[8+36+36+1] = 30; return b }), ReasonOptionLen},
		{"option zero length", edit(good, func(b []byte) []byte { b[8+36+36+1] = 0; return b }), ReasonOptionLen},
		{"option truncated", edit(good, func(b []byte) []byte {
			// Record 2 one byte longer: a lone option type byte.
			b = append(b, 0)
			b[8+36+3]++
			return setSize(b)
		}), ReasonOptionTrunc},
		{"seq wrong length", edit(good, func(b []byte) []byte {
			b[8+36+36+1] = 23
			b[8+36+3]--
			return setSize(b[:len(b)-1])
		}), ReasonSeqOption},
		{"seq twice", edit(good, func(b []byte) []byte {
			opt := append([]byte(nil), b[8+36+36:8+36+36+26]...)
			b = append(b, opt...)
			binary.BigEndian.PutUint16(b[8+36+2:], 36+52)
			return setSize(b)
		}), ReasonSeqOption},
		{"pe data twice", edit(good, func(b []byte) []byte {
			b = append(b, 2, 1, 'x', 2, 1, 'y')
			binary.BigEndian.PutUint16(b[8+36+2:], 36+26+6)
			return setSize(b)
		}), ReasonPEDataOption},
		{"pe name too long", edit(good, func(b []byte) []byte {
			b = append(b, 3, 17)
			b = append(b, make([]byte, 17)...)
			binary.BigEndian.PutUint16(b[8+36+2:], 36+26+19)
			return setSize(b)
		}), ReasonPENameOption},
		{"trailing", edit(good, func(b []byte) []byte { return setSize(append(b, 0, 0, 0, 0)) }), ReasonTrailing},
		{"v0 cut", edit(good0, func(b []byte) []byte { return setSize(b[:len(b)-4]) }), ReasonV0Truncated},
		{"v0 count", edit(good0, func(b []byte) []byte { b[0] = 3; return b }), ReasonV0Truncated},
		{"v0 trailing", edit(good0, func(b []byte) []byte { b[0] = 1; return b }), ReasonTrailing},
	}
	for _, c := range cases {
		var m Message
		m.Conns = make([]Conn, 0, 4)
		if r := m.Decode(c.b); r != c.want {
			t.Errorf("%s: %v, want %v", c.name, r, c.want)
		}
		if len(m.Conns) != 0 {
			t.Errorf("%s: %d records reported from a refused message", c.name, len(m.Conns))
		}
	}
}

func TestDecodeSkipped(t *testing.T) {
	one := func(c Conn, extra ...byte) []byte {
		b := Encode(1, 0, 1472, []Conn{c})[0]
		if len(extra) > 0 {
			b = append(b, extra...)
			binary.BigEndian.PutUint16(b[8+2:], uint16(len(b)-8))
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		}
		return b
	}
	mod := func(f func(c *Conn)) Conn { c := tcp4; f(&c); return c }
	cases := []struct {
		name string
		b    []byte
		want Reason
	}{
		{"plain", one(tcp4), ReasonNone},
		{"optional unknown option", one(tcp4, 0x45, 2, 9, 9), ReasonNone},
		{"optional seq option", one(mod(func(c *Conn) {}), 0x41, 24, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6), ReasonNone},
		{"mandatory unknown option", one(tcp4, 5, 2, 9, 9), ReasonUnknownOption},
		{"one packet", one(mod(func(c *Conn) { c.Flags = FlagOnePacket })), ReasonFlags},
		{"template without cport", one(mod(func(c *Conn) { c.Flags = FlagTemplate | FlagNoCPort; c.State = 0 })), ReasonFlags},
		{"sctp", one(mod(func(c *Conn) { c.Proto = 132 })), ReasonProto},
		{"tcp state", one(mod(func(c *Conn) { c.State = 11 })), ReasonState},
		{"udp state", one(mod(func(c *Conn) { c.Proto = ProtoUDP; c.State = 1 })), ReasonState},
		{"template state", one(mod(func(c *Conn) { c.Flags = FlagTemplate; c.State = 2 })), ReasonState},
		{"pe data", one(mod(func(c *Conn) { c.PEData = []byte("call-id"); c.PEName = []byte("sip") })), ReasonPE},
	}
	for _, c := range cases {
		var m Message
		if r := m.Decode(c.b); r != ReasonNone {
			t.Errorf("%s: message refused: %v", c.name, r)
			continue
		}
		if len(m.Conns) != 1 || m.Conns[0].Skip != c.want {
			t.Errorf("%s: %+v, want skip %v", c.name, m.Conns, c.want)
		}
		if c.want != ReasonNone && !c.want.Record() {
			t.Errorf("%s: %v is not a record reason", c.name, c.want)
		}
	}
	var m Message
	if m.Decode(one(mod(func(c *Conn) { c.PEData = []byte("call-id"); c.PEName = []byte("sip") }))) != ReasonNone ||
		string(m.Conns[0].PEData) != "call-id" || string(m.Conns[0].PEName) != "sip" {
		t.Errorf("pe options: %+v", m.Conns)
	}
}

// TestEncodeAllocs: once the encoder's buffer has its size, adding a
// record and decoding a message allocate nothing.
func TestEncodeAllocs(t *testing.T) {
	e := Encoder{Version: 1, SyncID: 1, MaxLen: 1472}
	buf := make([]byte, 0, 1472)
	e.Reset(buf)
	conns := []Conn{tcp4, udp6, seq4, tpl4}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		c := &conns[i%len(conns)]
		i++
		if !e.Fits(c) {
			e.Reset(buf)
		}
		if e.Put(c) {
			e.Reset(buf)
		}
	})
	if allocs != 0 {
		t.Errorf("v1 Put: %v allocations a record", allocs)
	}
	e0 := Encoder{Version: 0, MaxLen: 1472}
	e0.Reset(buf)
	allocs = testing.AllocsPerRun(1000, func() {
		if !e0.Fits(&tcp4) {
			e0.Reset(buf)
		}
		if e0.Put(&tcp4) {
			e0.Reset(buf)
		}
	})
	if allocs != 0 {
		t.Errorf("v0 Put: %v allocations a record", allocs)
	}
	msg := Encode(1, 1, 1472, conns)[0]
	var m Message
	m.Decode(msg)
	allocs = testing.AllocsPerRun(1000, func() { m.Decode(msg) })
	if allocs != 0 {
		t.Errorf("Decode: %v allocations a message", allocs)
	}
}

func TestClampMaxLen(t *testing.T) {
	for _, c := range []struct {
		n            int
		backup, v6   bool
		mtu, want    int
		whatKernelIs string
	}{
		{0, false, false, 9000, 1472, "master default: 1500 less headers whatever the MTU"},
		{0, false, true, 1280, 1452, "v6 group"},
		{0, true, false, 9000, 8972, "backup: the MTU"},
		{0, true, false, 1280, 1472, "backup: at least 1500"},
		{100, false, false, 1500, 100, "master given"},
		{100, true, false, 1500, 1024, "backup at least 1024"},
		{70000, false, false, 1500, 65507, "at most 65535 less headers"},
	} {
		if got := ClampMaxLen(c.n, c.backup, c.v6, c.mtu); got != c.want {
			t.Errorf("%s: %d, want %d", c.whatKernelIs, got, c.want)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e := Encoder{Version: 1, MaxLen: 1472}
	buf := make([]byte, 0, 1472)
	e.Reset(buf)
	b.ReportAllocs()
	for b.Loop() {
		if !e.Fits(&tcp4) {
			e.Reset(buf)
		}
		e.Put(&tcp4)
	}
}

func BenchmarkDecode(b *testing.B) {
	conns := make([]Conn, 40)
	for i := range conns {
		conns[i] = tcp4
	}
	msg := Encode(1, 0, 1472, conns)[0]
	var m Message
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		m.Decode(msg)
	}
}
