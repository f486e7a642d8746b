package nat_test

import (
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// spoofed is the i-th source of a SYN flood.
func spoofed(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(1024+i%60000))
}

// handshake takes client c's connection through SYN, SYN-ACK and ACK, and
// returns the verdict on the ACK.
func (e *env) handshake(c netip.AddrPort) nat.Result {
	e.t.Helper()
	e.in(c, S)
	e.out(c, S|A)
	return e.in(c, A)
}

// A table full of a SYN flood's half-open entries still lets clients
// connect (each new SYN takes the place of a half-open entry), and never
// drops an established connection. It used to refuse every new client
// until the flood's entries timed out.
func TestEarlyDropUnderSYNFlood(t *testing.T) {
	const max = 10000
	e := newEnv(t, nat.Config{MaxConns: max}, twoServers("rr", 6))
	e.tb.SetSynProxy(nat.SynProxyOff) // early drop alone (TestSynProxyUnderSYNFlood: with it)
	// Established connections first.
	var est []netip.AddrPort
	for i := range 100 {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.10"), uint16(30000+i))
		if r := e.handshake(c); r.Verdict != nat.Forward {
			t.Fatalf("established %d: %+v", i, r)
		}
		est = append(est, c)
	}
	flood := 0
	synFlood := func(n int) {
		for range n {
			e.tb.Process(nattest.TCP(spoofed(flood), vip, S, 0), &e.p, e.now)
			flood++
		}
	}
	synFlood(5 * max)
	if e.tb.Len() != max {
		t.Fatalf("table at %d, want full (%d)", e.tb.Len(), max)
	}
	// Clients connect during the flood: 20 flood SYNs arrive between a
	// client's SYN and its ACK (a round trip).
	ok := 0
	const clients = 1000
	for i := range clients {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.20"), uint16(20000+i))
		if r := e.in(c, S); r.Verdict != nat.Forward {
			continue
		}
		synFlood(20)
		if conn, _ := e.tb.Lookup(6, c, vip); conn == nil {
			continue
		}
		e.out(c, S|A)
		if r := e.in(c, A); r.Verdict == nat.Forward {
			ok++
		}
		// The client is done: its connection closes.
		e.in(c, R)
	}
	if ok*100 < clients*99 {
		t.Errorf("%d of %d clients connected during the flood, want >= 99%%", ok, clients)
	}
	for _, c := range est {
		if conn, _ := e.tb.Lookup(6, c, vip); conn == nil || conn.State() != nat.StateEstablished {
			t.Fatalf("established connection %v dropped by the flood", c)
		}
	}
	if e.tb.Len() > max {
		t.Errorf("table at %d, past its bound %d", e.tb.Len(), max)
	}
	if e.tb.EarlyDrops() == 0 {
		t.Error("early drops not counted")
	}
	t.Logf("%d/%d clients connected; %d flood SYNs; %d early drops; %d table_full", ok, clients, flood, e.tb.EarlyDrops(), e.tb.Drops(nat.DropTableFull))
}

// A table full of established connections refuses a new one, as before.
func TestEarlyDropSparesEstablished(t *testing.T) {
	e := newEnv(t, nat.Config{MaxConns: 50}, twoServers("rr", 6))
	e.tb.SetSynProxy(nat.SynProxyOff) // what the table does without it
	for i := range 50 {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.10"), uint16(30000+i))
		e.handshake(c)
	}
	for i := range 200 {
		if r := e.tb.Process(nattest.TCP(spoofed(i), vip, S, 0), &e.p, e.now); r.Reason != nat.DropTableFull {
			t.Fatalf("SYN %d into a table of established connections: %+v", i, r)
		}
	}
	if e.tb.EarlyDrops() != 0 || e.tb.Len() != 50 {
		t.Errorf("%d early drops, %d entries", e.tb.EarlyDrops(), e.tb.Len())
	}
}
