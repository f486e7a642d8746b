package ipvssync

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecode: any datagram is refused with a reason or decoded; what is
// decoded encodes to a message that decodes to the same records.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(1, 1, 1472, []Conn{tcp4, seq4, udp6, tpl4})[0])
	f.Add(Encode(0, 1, 1472, []Conn{tcp4, seq4})[0])
	f.Add(Encode(1, 0, 1472, []Conn{func() Conn { c := tcp4; c.PEData = []byte("x"); c.PEName = []byte("sip"); return c }()})[0])
	f.Add(Encode(1, 0, 1472, []Conn{sp4, tcp4})[0])
	if gs, _ := filepath.Glob("testdata/kernel/*.bin"); len(gs) > 0 {
		for _, g := range gs {
			if b, err := os.ReadFile(g); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		r := m.Decode(b)
		if r != ReasonNone {
			if len(m.Conns) != 0 {
				t.Fatalf("refused (%v) with %d records", r, len(m.Conns))
			}
			if r.Record() {
				t.Fatalf("message refused with a record reason %v", r)
			}
			return
		}
		if len(m.Conns) > MaxConns {
			t.Fatalf("%d records", len(m.Conns))
		}
		var keep []Conn
		for _, c := range m.Conns {
			if m.Version == 0 && c.Flags > 0xffff {
				t.Fatalf("v0 flags %#x", c.Flags)
			}
			if c.Skip != ReasonNone && !c.Skip.Record() {
				t.Fatalf("record skipped with a message reason %v", c.Skip)
			}
			c.Flags &^= FlagHashed
			if m.Version == 0 {
				c.Timeout = 0
			}
			if c.Skip == ReasonUnknownOption || len(c.PEName) > 0 && len(c.PEData) == 0 {
				// An unknown option and a name without data are not
				// carried on by the encoder.
				continue
			}
			if c.Flags&FlagSeqMask == 0 {
				c.InSeq, c.OutSeq = Seq{}, Seq{}
			}
			c.Skip = ReasonNone
			keep = append(keep, c)
		}
		for _, out := range Encode(m.Version, m.SyncID, 65507, keep) {
			var m2 Message
			if r := m2.Decode(out); r != ReasonNone {
				t.Fatalf("re-encoded message refused: %v\n%x", r, out)
			}
			for i := range m2.Conns {
				got, want := m2.Conns[i], keep[i]
				got.Skip = ReasonNone
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip %d:\n%+v\n%+v", i, got, want)
				}
			}
			keep = keep[len(m2.Conns):]
		}
		if len(keep) != 0 {
			t.Fatalf("%d records lost in re-encoding", len(keep))
		}
	})
}
