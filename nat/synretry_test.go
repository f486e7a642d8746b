package nat_test

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// spOpen takes client c through the cookie handshake to e's service and
// returns the cookie and the SYN the director sent the real server.
func spOpen(t *testing.T, e *spEnv, c netip.AddrPort) (uint32, seg) {
	t.Helper()
	_, b := e.send(nattest.Seg{Src: c, Dst: e.v, Flags: S, Seq: 10, Options: synOpts(1460, 5, 0, 7)})
	sa := readSeg(t, b)
	r, b := e.send(nattest.Seg{Src: c, Dst: e.v, Flags: A, Seq: 11, Ack: sa.seq + 1, Options: tsOpts(6, u32(sa.opts[8])), Window: 700})
	if r.Verdict != nat.Forward {
		t.Fatalf("cookie ACK: %+v", r)
	}
	return sa.seq, readSeg(t, b)
}

// tick advances e's clock by d and runs the retransmission timer,
// returning what it sent.
func (e *spEnv) tick(d time.Duration) []seg {
	e.t.Helper()
	e.advance(d)
	var out []seg
	e.tb.SynRetransmit(e.now, func(l3 []byte) { out = append(out, readSeg(e.t, slices.Clone(l3))) })
	return out
}

func spCounters(tb *nat.Table) map[string]uint64 {
	m := map[string]uint64{}
	for _, c := range tb.SynProxyCounters() {
		m[c.Name] = c.Value
	}
	return m
}

// A real server that never answers: the director resends the SYN 1, 3
// and 7 s after the first (TCP's backoff from TCP_TIMEOUT_INIT), the same
// SYN each time, translated for the server; 15 s after the first it
// resets the client at the number the client expects, and the connection
// is gone.
func TestSynProxyRetransmit(t *testing.T) {
	for _, tc := range []struct {
		name string
		c, v netip.AddrPort
		rs   netip.Addr
	}{{"v4", cli, vip, rs1}, {"v6", cli6, vip6, rs6}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSPEnv(t, tc.c, tc.v, tc.rs, rules.Masquerade, netip.Addr{})
			cookie, first := spOpen(t, e, tc.c)
			if first.flags != S || first.dst != netip.AddrPortFrom(tc.rs, 8080) {
				t.Fatalf("SYN to the server %+v", first)
			}
			at := time.Duration(0)
			for _, step := range []struct {
				d    time.Duration
				syns int
			}{
				{999 * time.Millisecond, 0}, {time.Millisecond, 1},
				{1999 * time.Millisecond, 0}, {time.Millisecond, 1},
				{3999 * time.Millisecond, 0}, {time.Millisecond, 1},
				{7999 * time.Millisecond, 0},
			} {
				at += step.d
				out := e.tick(step.d)
				if len(out) != step.syns {
					t.Fatalf("at %v: sent %d, want %d: %+v", at, len(out), step.syns, out)
				}
				for _, s := range out {
					if s.src != first.src || s.dst != first.dst || s.flags != S || s.seq != first.seq ||
						s.win != first.win || !reflect.DeepEqual(s.opts, first.opts) {
						t.Fatalf("at %v: resent %+v, want %+v", at, s, first)
					}
				}
			}
			if e.tb.Len() != 1 {
				t.Fatalf("table holds %d before the last timeout", e.tb.Len())
			}
			out := e.tick(time.Millisecond)
			if len(out) != 1 {
				t.Fatalf("at 15 s: sent %+v, want the client's reset", out)
			}
			if rst := out[0]; rst.flags != R || rst.src != tc.v || rst.dst != tc.c || rst.seq != cookie+1 {
				t.Fatalf("reset %+v, want from %v to %v at %d", rst, tc.v, tc.c, cookie+1)
			}
			if e.tb.Len() != 0 {
				t.Fatalf("table holds %d after giving up", e.tb.Len())
			}
			if out := e.tick(time.Minute); len(out) != 0 {
				t.Fatalf("after giving up: %+v", out)
			}
			if c := spCounters(e.tb); c["syn_resent"] != 3 || c["rs_timeout"] != 1 {
				t.Fatalf("counters %v", c)
			}
		})
	}
}

// A server that answers the second SYN, and one that refuses: the timer
// leaves both alone afterwards.
func TestSynProxyRetransmitStops(t *testing.T) {
	e := newSPEnv(t, cli, vip, rs1, rules.Masquerade, netip.Addr{})
	rs := netip.AddrPortFrom(rs1, 8080)
	spOpen(t, e, cli)
	if out := e.tick(time.Second); len(out) != 1 {
		t.Fatalf("sent %+v", out)
	}
	if r, _ := e.send(nattest.Seg{Src: rs, Dst: cli, Flags: S | A, Seq: 4000, Ack: 11, Options: synOpts(1460, 77, 6, 7)}); r.Verdict != nat.Forward {
		t.Fatalf("SYN-ACK: %+v", r)
	}
	c2 := nattest.AP("10.0.0.11:40001")
	cookie, _ := spOpen(t, e, c2)
	r, b := e.send(nattest.Seg{Src: rs, Dst: c2, Flags: R | A, Ack: 11})
	if rst := readSeg(t, b); r.Verdict != nat.Forward || rst.flags&R == 0 || rst.dst != c2 || rst.seq != cookie+1 {
		t.Fatalf("refused: %+v %+v", r, rst)
	}
	for range 5 {
		if out := e.tick(10 * time.Second); len(out) != 0 {
			t.Fatalf("sent %+v", out)
		}
	}
	if c := spCounters(e.tb); c["syn_resent"] != 1 || c["rs_timeout"] != 0 || c["rs_reset"] != 1 {
		t.Fatalf("counters %v", c)
	}
}

// The timer allocates nothing once its buffer has grown.
func TestSynRetransmitAllocatesNothing(t *testing.T) {
	e := newSPEnv(t, cli, vip, rs1, rules.Masquerade, netip.Addr{})
	spOpen(t, e, cli)
	n := 0
	emit := func([]byte) { n++ }
	if a := testing.AllocsPerRun(1, func() {
		e.advance(10 * time.Second)
		e.tb.SynRetransmit(e.now, emit)
	}); a != 0 || n != 2 {
		t.Fatalf("%v allocations, %d SYNs", a, n)
	}
}
