package nat_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
)

func sysctl(tb *nat.Table, name string) int { v, _ := tb.Sysctl(name); return v }

// update_defense_level's modes: 1 turns on when memory is short and then
// reads 2; 2 goes back to 1 when it no longer is; 3 is always on, 0 never.
func TestDefenseModes(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	setSysctl(t, e.tb, "drop_entry", 1)
	setSysctl(t, e.tb, "secure_tcp", 1)
	const plenty, short = 1 << 20, 10 // pages; amemthresh is 1024
	e.tb.Defend(e.now, plenty)
	if sysctl(e.tb, "drop_entry") != 1 || sysctl(e.tb, "secure_tcp") != 1 {
		t.Fatal("modes moved with memory to spare")
	}
	e.tb.Defend(e.now, short)
	if sysctl(e.tb, "drop_entry") != 2 || sysctl(e.tb, "secure_tcp") != 2 {
		t.Fatalf("memory short: drop_entry %d secure_tcp %d, want 2 2", sysctl(e.tb, "drop_entry"), sysctl(e.tb, "secure_tcp"))
	}
	// secure_tcp on: a client's ACK leaves SYN_RECV as it is; the real
	// server's answer establishes (tcp_states_dos).
	c := netip.MustParseAddrPort("10.0.0.10:1000")
	e.in(c, S)
	e.in(c, A)
	if conn, _ := e.tb.Lookup(6, c, vip); conn.State() != nat.StateSynRecv {
		t.Errorf("secure_tcp: client ACK took SYN_RECV to %v", conn.State())
	}
	e.out(c, A)
	if conn, _ := e.tb.Lookup(6, c, vip); conn.State() != nat.StateEstablished {
		t.Errorf("secure_tcp: server ACK left %v", conn.State())
	}
	e.tb.Defend(e.now, plenty)
	if sysctl(e.tb, "drop_entry") != 1 || sysctl(e.tb, "secure_tcp") != 1 {
		t.Fatal("modes did not go back to 1")
	}
	c2 := netip.MustParseAddrPort("10.0.0.10:1001")
	e.in(c2, S)
	e.in(c2, A)
	if conn, _ := e.tb.Lookup(6, c2, vip); conn.State() != nat.StateEstablished {
		t.Errorf("secure_tcp off: client ACK left %v", conn.State())
	}
	setSysctl(t, e.tb, "secure_tcp", 3)
	e.tb.Defend(e.now, plenty)
	c3 := netip.MustParseAddrPort("10.0.0.10:1002")
	e.in(c3, S)
	e.in(c3, A)
	if conn, _ := e.tb.Lookup(6, c3, vip); conn.State() != nat.StateSynRecv {
		t.Errorf("secure_tcp=3: client ACK took SYN_RECV to %v", conn.State())
	}
}

// drop_entry: half-open entries go as their shards are scanned (a 32nd
// of the table a second); established ones only when idle for a minute
// with few packets; busy ones never.
func TestDropEntry(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	setSysctl(t, e.tb, "drop_entry", 3)
	var half, busy, idle []netip.AddrPort
	for i := range 500 {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.1.1"), uint16(1000+i))
		e.in(c, S)
		half = append(half, c)
	}
	for i := range 50 {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.2.1"), uint16(1000+i))
		e.handshake(c)
		for range 10 {
			e.in(c, A) // more than 8 packets in: never dropped
		}
		busy = append(busy, c)
	}
	for i := range 50 {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.0.3.1"), uint16(1000+i))
		e.handshake(c)
		idle = append(idle, c)
	}
	left := func(cs []netip.AddrPort) int {
		n := 0
		for _, c := range cs {
			if conn, _ := e.tb.Lookup(6, c, vip); conn != nil {
				n++
			}
		}
		return n
	}
	// Within a minute of their last packet, established entries stay.
	// Shards are picked at random, two a round: 2000 rounds miss one of
	// the 64 with odds of about 1e-26.
	for range 2000 {
		e.advance(time.Millisecond)
		e.tb.Defend(e.now, 1<<20)
	}
	if left(half) != 0 {
		t.Errorf("%d of 500 half-open entries left after 2000 rounds", left(half))
	}
	if left(busy) != 50 || left(idle) != 50 {
		t.Errorf("established entries dropped within a minute: busy %d idle %d", left(busy), left(idle))
	}
	// A minute idle: the entries with few packets in go, a share each
	// round they are looked at; the busy ones stay.
	e.advance(61 * time.Second)
	for range 4000 {
		e.tb.Defend(e.now, 1<<20)
	}
	if left(idle) != 0 {
		t.Errorf("%d of 50 idle entries left", left(idle))
	}
	if left(busy) != 50 {
		t.Errorf("busy entries dropped: %d left", left(busy))
	}
	if e.tb.DefenseDropped() != 550 {
		t.Errorf("DefenseDropped = %d, want 550", e.tb.DefenseDropped())
	}
	// Mode 0 drops nothing.
	setSysctl(t, e.tb, "drop_entry", 0)
	c := netip.MustParseAddrPort("10.0.4.1:1")
	e.in(c, S)
	for range 100 {
		e.tb.Defend(e.now, 0)
	}
	if left([]netip.AddrPort{c}) != 1 {
		t.Error("drop_entry=0 dropped an entry")
	}
}
