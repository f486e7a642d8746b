package ipvssync

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// sp4 is a SYN-proxied connection's record as a tunvs master sends it:
// out_seq with IP_VS_CONN_F_OUT_SEQ, and tunvs's option.
var sp4 = Conn{
	Proto: ProtoTCP, Flags: FlagOutSeq, State: 1,
	CAddr: netip.MustParseAddr("10.9.0.3"), CPort: 40000,
	VAddr: netip.MustParseAddr("10.0.0.100"), VPort: 80,
	DAddr: netip.MustParseAddr("10.1.0.1"), DPort: 8080,
	Timeout: 900,
	OutSeq:  Seq{InitSeq: 0, Delta: 0xfffffc18, PreviousDelta: 0xfffffc18}, // -1000
	SynProxy: SynProxyOpt{Present: true, TS: true, TSDelta: 0x01020304,
		Rescale: true, RSWScale: 5, ECNStrip: true},
}

// TestSynProxyRecordLayout checks a SYN-proxied connection's record byte
// for byte against struct ip_vs_sync_v4 and ip_vs_sync_conn_options in
// network order, written out by hand from ip_vs_sync_conn_v1: the
// IPVS_OPT_SEQ_DATA option (1, length 24: in_seq, out_seq, each init_seq,
// delta, previous_delta), then tunvs's own (0x7e: IPVS_OPT_F_PARAM | 0x3e,
// length 8). Version 0 appends the options struct in host order and has
// no room for tunvs's option.
func TestSynProxyRecordLayout(t *testing.T) {
	msgs := Encode(1, 1, 1472, []Conn{sp4})
	want := mustHex(t, `
		00 01 00 50 01 01 00 00
		00 06 00 48 00000200 0001 9c40 0050 1f90 00000000 00000384
		0a090003 0a000064 0a010001
		01 18 00000000 00000000 00000000 00000000 fffffc18 fffffc18
		7e 08 01020304 07 05 00 00`)
	if len(msgs) != 1 || !bytes.Equal(msgs[0], want) {
		t.Fatalf("encoded\n%x\nwant\n%x", msgs, want)
	}
	var m Message
	if r := m.Decode(want); r != ReasonNone || len(m.Conns) != 1 {
		t.Fatalf("decode: %v %+v", r, m.Conns)
	}
	if !reflect.DeepEqual(m.Conns[0], sp4) {
		t.Fatalf("decoded %+v\nwant %+v", m.Conns[0], sp4)
	}

	// IPv6: the same options after struct ip_vs_sync_v6 (108 bytes in
	// all, so the next record needs no padding).
	sp6 := sp4
	sp6.CAddr, sp6.VAddr, sp6.DAddr = netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00:100::100"), netip.MustParseAddr("fd00:2::5")
	msgs = Encode(1, 1, 1472, []Conn{sp6, sp4})
	if len(msgs) != 1 || len(msgs[0]) != 8+72+26+10+len(want)-8 || binary.BigEndian.Uint16(msgs[0][8+2:]) != 72+26+10 {
		t.Fatalf("v6 encoded %x", msgs)
	}
	if r := m.Decode(msgs[0]); r != ReasonNone || len(m.Conns) != 2 || !reflect.DeepEqual(m.Conns[0], sp6) || !reflect.DeepEqual(m.Conns[1], sp4) {
		t.Fatalf("v6 decode: %v %+v", r, m.Conns)
	}

	msgs = Encode(0, 1, 1472, []Conn{sp4})
	want0 := mustHex(t, `
		01 01 00 34
		00 06 9c40 0050 1f90 0a090003 0a000064 0a010001 0200 0001
		00000000 00000000 00000000 00000000 18fcffff 18fcffff`)
	if len(msgs) != 1 || !bytes.Equal(msgs[0], want0) {
		t.Fatalf("v0 encoded\n%x\nwant\n%x", msgs, want0)
	}
}

// TestSynProxyOptionChecks: the option as a kernel sees it and as tunvs
// refuses it. Another unknown optional type is skipped as the kernel
// skips it (the record is used, without the option); the same type
// without IPVS_OPT_F_PARAM is the kernel's unknown mandatory option; a
// wrong length or a second copy skips the record.
func TestSynProxyOptionChecks(t *testing.T) {
	good := Encode(1, 0, 1472, []Conn{sp4})[0]
	opt := len(good) - 10
	for _, tc := range []struct {
		name    string
		edit    func(b []byte) []byte
		skip    Reason
		present bool
	}{
		{"as sent", func(b []byte) []byte { return b }, ReasonNone, true},
		{"other optional", func(b []byte) []byte { b[opt] = 0x40 | 0x3d; return b }, ReasonNone, false},
		{"mandatory", func(b []byte) []byte { b[opt] = 0x3e; return b }, ReasonUnknownOption, false},
		{"short", func(b []byte) []byte {
			b = append(b[:opt+1], 4, 1, 2, 3, 4)
			return fixSizes(b, 8)
		}, ReasonSynProxyOpt, false},
		{"twice", func(b []byte) []byte {
			b = append(b, b[opt:]...)
			return fixSizes(b, 8)
		}, ReasonSynProxyOpt, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), good...))
			var m Message
			if r := m.Decode(b); r != ReasonNone || len(m.Conns) != 1 {
				t.Fatalf("decode %x: %v", b, r)
			}
			c := m.Conns[0]
			if c.Skip != tc.skip || c.SynProxy.Present != tc.present {
				t.Fatalf("skip %v present %v, want %v %v", c.Skip, c.SynProxy.Present, tc.skip, tc.present)
			}
			if c.OutSeq != sp4.OutSeq {
				t.Fatalf("out_seq %+v", c.OutSeq)
			}
		})
	}
}

// fixSizes sets the message length and the size of the one record that
// starts at off after editing.
func fixSizes(b []byte, off int) []byte {
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[off+2:], uint16(len(b)-off))
	return b
}

// tcpOpt returns the data of option kind k of the TCP segment in the IPv4
// packet b.
func tcpOpt(b []byte, k byte) []byte {
	th := b[20:]
	opts := th[20 : th[12]>>4*4]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return nil
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 {
			return nil
		}
		if opts[i] == k {
			return opts[i+2 : i+int(opts[i+1])]
		}
		i += int(opts[i+1])
	}
	return nil
}

func roomy(b []byte) []byte { return append(b, make([]byte, 2048)...)[:len(b)] }

// TestSynProxyFailover: a connection the master's SYN proxy made is
// synced with its translation, and the backup translates its segments
// exactly as the master does: the real server's sequence numbers and
// timestamps into the cookie's and the director's, its windows rescaled,
// the client's acknowledgements, SACK blocks and timestamp echoes back.
// Without the translation (a record stripped of it, as a kernel backup
// would apply it) the backup forwards the server's own numbers.
func TestSynProxyFailover(t *testing.T) {
	net := &memNet{}
	clock := time.Unix(1_000_000, 0).UnixNano()
	mt, bt := director(t), director(t)
	for _, tb := range []*nat.Table{mt, bt} {
		if err := tb.EditService(nat.ServiceConfig{Proto: 6, Addr: tvip.Addr(), Port: tvip.Port(), Scheduler: "rr", SynProxy: true}); err != nil {
			t.Fatal(err)
		}
	}
	md := NewDaemons(mt, net, func() int64 { return clock }, zerolog.Nop())
	bd := NewDaemons(bt, net, func() int64 { return clock }, zerolog.Nop())
	defer md.Close()
	defer bd.Close()
	if err := md.Start(Master, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := bd.Start(Backup, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	m := md.Master()
	m.mu.Lock()
	m.flush = 0
	m.mu.Unlock()

	c := nattest.AP("10.9.0.3:40000")
	rs := netip.AddrPortFrom(trs, 8080)
	const cISN, rsISN = 1000, 7_000_000
	var p nat.Packet
	send := func(tb *nat.Table, s nattest.Seg) (nat.Result, []byte) {
		t.Helper()
		s.Proto = 6
		r := tb.Process(roomy(nattest.Build(s)), &p, clock)
		return r, append([]byte(nil), p.B...)
	}
	ts := func(val, ecr uint32) []byte {
		o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(o[4:], val)
		binary.BigEndian.PutUint32(o[8:], ecr)
		return o
	}
	// MSS 1460, SACK permitted, timestamps, window scale 9.
	synOpts := append([]byte{2, 4, 0x05, 0xb4, 4, 2}, append(ts(500, 0)[2:], 1, 3, 3, 9)...)
	// The client asks for ECN, which the server will refuse.
	r, b := send(mt, nattest.Seg{Src: c, Dst: tvip, Flags: nattest.SYN | 0x40 | 0x80, Seq: cISN, Options: synOpts, Window: 64240})
	if r.Verdict != nat.Reply {
		t.Fatalf("SYN: %+v", r)
	}
	cookie := binary.BigEndian.Uint32(b[24:])
	ourTS := binary.BigEndian.Uint32(tcpOpt(b, 8))
	if r, _ := send(mt, nattest.Seg{Src: c, Dst: tvip, Flags: nattest.ACK, Seq: cISN + 1, Ack: cookie + 1, Options: ts(501, ourTS), Window: 502}); r.Verdict != nat.Forward {
		t.Fatalf("cookie ACK: %+v", r)
	}
	// The server scales its window by 5, not the 7 the client was
	// offered: its windows are rescaled.
	rsSynOpts := append([]byte{2, 4, 0x05, 0x78, 4, 2}, append(ts(90000, 501)[2:], 1, 3, 3, 5)...)
	if r, _ := send(mt, nattest.Seg{Src: rs, Dst: c, Flags: nattest.SYN | nattest.ACK, Seq: rsISN, Ack: cISN + 1, Options: rsSynOpts}); r.Verdict != nat.Forward {
		t.Fatalf("server SYN-ACK: %+v", r)
	}
	// The client's request: its third packet, when the master sends
	// the connection.
	req := []byte("hello\n")
	if r, _ := send(mt, nattest.Seg{Src: c, Dst: tvip, Flags: nattest.ACK | nattest.PSH, Seq: cISN + 1, Ack: cookie + 1, Options: ts(502, ourTS), Payload: req}); r.Verdict != nat.Forward {
		t.Fatalf("request: %+v", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for bt.Len() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if bt.Len() != 1 {
		t.Fatalf("backup holds %d connections", bt.Len())
	}

	// The same segments through both directors.
	answer := nattest.Seg{Src: rs, Dst: c, Flags: nattest.ACK | nattest.PSH, Seq: rsISN + 1, Ack: cISN + 1 + uint32(len(req)),
		Options: ts(90010, 502), Payload: []byte("RS1 hello\n"), Window: 1000}
	sack := append([]byte{1, 1, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0}, ts(503, ourTS+10)...)
	binary.BigEndian.PutUint32(sack[4:], cookie+100)
	binary.BigEndian.PutUint32(sack[8:], cookie+200)
	ack := nattest.Seg{Src: c, Dst: tvip, Flags: nattest.ACK, Seq: cISN + 1 + uint32(len(req)), Ack: cookie + 11, Options: sack, Window: 300}
	for _, s := range []nattest.Seg{answer, ack} {
		rm, om := send(mt, s)
		rb, ob := send(bt, s)
		if rm.Verdict != nat.Forward || rb.Verdict != nat.Forward || !bytes.Equal(om, ob) {
			t.Fatalf("master %v %x\nbackup %v %x", rm.Verdict, om, rb.Verdict, ob)
		}
	}
	_, o := send(bt, answer)
	if seq := binary.BigEndian.Uint32(o[24:]); seq != cookie+1 {
		t.Fatalf("backup: server data at %d, want the cookie's %d", seq, cookie+1)
	}
	if v := binary.BigEndian.Uint32(tcpOpt(o, 8)); v != ourTS+10 {
		t.Fatalf("backup: TSval %d, want %d", v, ourTS+10)
	}
	if w := binary.BigEndian.Uint16(o[34:]); w != 1000<<5>>7 {
		t.Fatalf("backup: window %d, want %d", w, 1000<<5>>7)
	}
	_, o = send(bt, ack)
	if a, e := binary.BigEndian.Uint32(o[28:]), binary.BigEndian.Uint32(tcpOpt(o, 5)); a != rsISN+11 || e != rsISN+100 {
		t.Fatalf("backup: ack %d, SACK %d, want %d %d", a, e, rsISN+11, rsISN+100)
	}
	// The server refused ECN: on both, the client's packets lose ECT and
	// one marked CE is dropped.
	for _, tb := range []*nat.Table{mt, bt} {
		for _, ecn := range []byte{2, 3} {
			b := roomy(nattest.Build(nattest.Seg{Src: c, Dst: tvip, Proto: 6, Flags: nattest.ACK, Seq: cISN + 1 + uint32(len(req)), Ack: cookie + 11, Options: ts(504, ourTS+10)}))
			b[1] |= ecn
			b[10], b[11] = 0, 0
			binary.BigEndian.PutUint16(b[10:], nattest.Checksum(b[:20], 0))
			r := tb.Process(b, &p, clock)
			if ecn == 2 && (r.Verdict != nat.Forward || p.B[1]&3 != 0 || !nattest.IPv4HeaderOK(p.B)) || ecn == 3 && r.Verdict != nat.Drop {
				t.Fatalf("backup %v: ECN %d: %+v, ECN now %d", tb == bt, ecn, r, p.B[1]&3)
			}
		}
	}

	// A backup that took the record without the translation forwards
	// the server's own numbers: the failure this sync prevents.
	plain := director(t)
	var msg Message
	e := Encoder{Version: 1, MaxLen: 1472}
	rec := Conn{Proto: 6, State: 1, CAddr: c.Addr(), CPort: c.Port(), VAddr: tvip.Addr(), VPort: tvip.Port(), DAddr: trs, DPort: 8080, Timeout: 900}
	e.Put(&rec)
	pb := NewDaemons(plain, net, func() int64 { return clock }, zerolog.Nop())
	defer pb.Close()
	if err := pb.Start(Backup, Config{Interface: "eth0", Port: 9000}); err != nil {
		t.Fatal(err)
	}
	pb.Backup().Process(&msg, e.Bytes(), len(e.Bytes()), clock)
	if _, o := send(plain, answer); binary.BigEndian.Uint32(o[24:]) != rsISN+1 {
		t.Fatalf("untranslated backup: seq %d", binary.BigEndian.Uint32(o[24:]))
	}
}

// TestKernelSeqRecord: a kernel master's record with in_seq and out_seq
// (its FTP helper's) and no tunvs option: the backup shifts the server's
// numbers by out_seq, as a kernel backup does with its FTP helper bound,
// and leaves the client's alone (in_seq is not applied).
func TestKernelSeqRecord(t *testing.T) {
	net := &memNet{}
	clock := time.Unix(1_000_000, 0).UnixNano()
	bt := director(t)
	bd := NewDaemons(bt, net, func() int64 { return clock }, zerolog.Nop())
	defer bd.Close()
	if err := bd.Start(Backup, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	c := nattest.AP("10.9.0.4:40001")
	rec := Conn{Proto: 6, Flags: FlagInSeq | FlagOutSeq, State: 1, CAddr: c.Addr(), CPort: c.Port(), VAddr: tvip.Addr(), VPort: tvip.Port(),
		DAddr: trs, DPort: 8080, Timeout: 900,
		// Bytes after 5000 are shifted by 7, those before by 3.
		InSeq: Seq{100, 50, 50}, OutSeq: Seq{5000, 7, 3}}
	// First without the translation (a connection the backup already
	// has), then with it: the update brings the translation, as
	// ip_vs_proc_conn copies the options into a connection it finds.
	var msg Message
	for _, flags := range []uint32{0, rec.Flags} {
		r := rec
		r.Flags = flags
		e := Encoder{Version: 1, MaxLen: 1472}
		e.Put(&r)
		bd.Backup().Process(&msg, e.Bytes(), len(e.Bytes()), clock)
	}
	if bt.Len() != 1 {
		t.Fatalf("backup holds %d", bt.Len())
	}
	var p nat.Packet
	for _, tc := range []struct{ seq, want uint32 }{{4000, 4003}, {6000, 6007}} {
		bt.Process(roomy(nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(trs, 8080), Dst: c, Proto: 6, Flags: nattest.ACK, Seq: tc.seq, Ack: 200})), &p, clock)
		if got := binary.BigEndian.Uint32(p.B[24:]); got != tc.want {
			t.Errorf("server seq %d became %d, want %d", tc.seq, got, tc.want)
		}
		if got := binary.BigEndian.Uint32(p.B[28:]); got != 200 {
			t.Errorf("server ack 200 became %d", got)
		}
	}
	bt.Process(roomy(nattest.Build(nattest.Seg{Src: c, Dst: tvip, Proto: 6, Flags: nattest.ACK, Seq: 300, Ack: 6007})), &p, clock)
	if s, a := binary.BigEndian.Uint32(p.B[24:]), binary.BigEndian.Uint32(p.B[28:]); s != 300 || a != 6000 {
		t.Fatalf("client seq %d ack %d, want 300 6000", s, a)
	}
}
