package nat_test

import (
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// Scale-out behind ECMP: several directors, each its own nat.Table, see
// the flows a router hashes to them. These tests are the properties that
// make a flow survive moving from one director to another: sloppy_tcp
// (a mid-stream packet opens a connection) and mh (every director picks
// the same real server).

// director is one director's table with an mh service over servers, added
// in the order given.
func director(t *testing.T, servers []netip.Addr, weights []int) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{})
	// Tens of thousands of flows whose handshakes never complete: the
	// automatic SYN proxy would answer them with cookies past
	// synproxy_backlog. These tests are about scheduling.
	tb.SetSynProxy(nat.SynProxyOff)
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "mh"}); err != nil {
		t.Fatal(err)
	}
	for i, a := range servers {
		if _, err := tb.AddDest(svcKey(), nat.DestConfig{Addr: a, Port: 8080, Weight: weights[i]}); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

func svcKey() nat.ServiceKey { return nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()} }

func sloppy(t *testing.T, tb *nat.Table, on bool) {
	t.Helper()
	if err := tb.Apply(rules.Diff{{Kind: rules.SetSysctl, Sysctl: "sloppy_tcp", Value: b2i(on)}}); err != nil {
		t.Fatal(err)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// client is the k-th client of a simulation.
func client(k int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)}), uint16(1024+k%60000))
}

// sendFlags sends a segment with flags from c to the VIP through tb and returns the
// real server the connection went to (invalid: none made).
func sendFlags(t *testing.T, tb *nat.Table, c netip.AddrPort, flags uint8, now int64) netip.Addr {
	t.Helper()
	var p nat.Packet
	if r := tb.Process(nattest.TCP(c, vip, flags, 0), &p, now); r.Verdict != nat.Forward {
		return netip.Addr{}
	}
	conn, _ := tb.Lookup(6, c, vip)
	if conn == nil {
		t.Fatalf("forwarded without a connection for %v", c)
	}
	return conn.DAddr()
}

// Without sloppy_tcp a flow's ACK at a director that never saw its SYN is
// left to the stack (which resets it); with it, the ACK opens a
// connection in ESTABLISHED (tcp_states: NONE + ack -> ES) to the real
// server the first director chose, and the server's replies are
// translated back.
func TestSloppyTCPContinuesMidStream(t *testing.T) {
	servers := []netip.Addr{rs1, rs2, netip.MustParseAddr("172.16.1.7")}
	ws := []int{1, 1, 1}
	a, b := director(t, servers, ws), director(t, servers, ws)
	now := int64(1_000_000e9)
	if got := sendFlags(t, b, cli, A, now); got.IsValid() {
		t.Fatalf("sloppy_tcp=0: an ACK opened a connection to %v", got)
	}
	sloppy(t, b, true)
	if v, _ := b.Sysctl("sloppy_tcp"); v != 1 {
		t.Fatalf("sloppy_tcp reads %d", v)
	}
	for k := range 200 {
		c := client(k)
		rs := sendFlags(t, a, c, S, now)
		if !rs.IsValid() {
			t.Fatalf("SYN of %v not forwarded", c)
		}
		// The flow moves to b mid-stream (a died, or ECMP rehashed).
		if got := sendFlags(t, b, c, A, now); got != rs {
			t.Fatalf("%v: b sent the mid-stream ACK to %v, a chose %v", c, got, rs)
		}
		conn, _ := b.Lookup(6, c, vip)
		if conn.State() != nat.StateEstablished {
			t.Fatalf("%v: state %v after a sloppy ACK, want ESTABLISHED", c, conn.State())
		}
		var p nat.Packet
		r := b.Process(nattest.TCP(netip.AddrPortFrom(rs, 8080), c, A, 10), &p, now)
		if r.Verdict != nat.Forward || p.SrcPort != vip.Port() {
			t.Fatalf("%v: reply not translated: %+v, source port %d", c, r, p.SrcPort)
		}
	}
	// A RST never opens one, sloppy or not (tcp_conn_schedule's !th->rst).
	if got := sendFlags(t, b, client(1000), R|A, now); got.IsValid() {
		t.Errorf("a RST opened a connection to %v", got)
	}
	// Nor a FIN when sloppy_tcp is off again.
	sloppy(t, b, false)
	if got := sendFlags(t, b, client(1001), F|A, now); got.IsValid() {
		t.Errorf("sloppy_tcp=0: a FIN opened a connection to %v", got)
	}
}

// mh's tables are a function of the servers, their weights and their order
// only: two directors configured alike, one of them by a longer history
// (a server added and removed, weights edited back), pick the same real
// server for every flow; so do the connections a sloppy director opens.
func TestMHIdenticalAcrossDirectors(t *testing.T) {
	servers := []netip.Addr{rs1, rs2, netip.MustParseAddr("172.16.1.7"), netip.MustParseAddr("172.16.1.8")}
	ws := []int{1, 2, 3, 1}
	a := director(t, servers, ws)
	b := director(t, servers[:2], ws[:2])
	// b's history: a server that came and went, the last two added
	// later, a weight edited away and back.
	k := svcKey()
	extra := netip.MustParseAddr("172.16.1.99")
	if _, err := b.AddDest(k, nat.DestConfig{Addr: extra, Port: 8080, Weight: 5}); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < len(servers); i++ {
		if _, err := b.AddDest(k, nat.DestConfig{Addr: servers[i], Port: 8080, Weight: 7}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DelDest(k, netip.AddrPortFrom(extra, 8080)); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < len(servers); i++ {
		if err := b.EditDest(k, nat.DestConfig{Addr: servers[i], Port: 8080, Weight: ws[i]}); err != nil {
			t.Fatal(err)
		}
	}
	sloppy(t, b, true)
	now := int64(1_000_000e9)
	const flows = 20000
	per := map[netip.Addr]int{}
	for i := range flows {
		c := client(i)
		ra, rb := sendFlags(t, a, c, S, now), sendFlags(t, b, c, A, now)
		if !ra.IsValid() || ra != rb {
			t.Fatalf("flow %v: director a chose %v, b %v", c, ra, rb)
		}
		per[ra]++
	}
	if len(per) != len(servers) {
		t.Errorf("flows reached %d of %d servers: %v", len(per), len(servers), per)
	}
}

// The simulation of issue 18: flows spread by an L4 hash over N directors
// that share mh's table. Removing a director rehashes its flows onto the
// others; with sloppy_tcp they open connections there, to the same real
// server: no flow moves. Removing a real server moves its own flows, and
// Maglev's table rebuild moves a small share of the others too (the
// paper's "minimal disruption" is not zero; sched's TestMHDisruption bounds
// it), which this reports and bounds.
func TestMHDirectorAndServerRemoval(t *testing.T) {
	servers := []netip.Addr{rs1, rs2, netip.MustParseAddr("172.16.1.7"), netip.MustParseAddr("172.16.1.8"), netip.MustParseAddr("172.16.1.9")}
	ws := []int{1, 1, 1, 1, 1}
	const n, flows = 3, 30000
	dirs := make([]*nat.Table, n)
	for i := range dirs {
		dirs[i] = director(t, servers, ws)
		sloppy(t, dirs[i], true)
	}
	now := int64(1_000_000e9)
	// ecmp is the router's choice among the directors alive (a hash of
	// the flow modulo their number, as a router without resilient
	// hashing does: removing one rehashes most flows).
	ecmp := func(k int, alive []int) int { return alive[(k*2654435761>>7)%len(alive)] }
	first := make([]netip.Addr, flows)
	all := []int{0, 1, 2}
	for k := range flows {
		first[k] = sendFlags(t, dirs[ecmp(k, all)], client(k), S, now)
	}
	// Director 1 dies: every flow is hashed over 0 and 2; those that move
	// arrive mid-stream.
	moved, rehashed := 0, 0
	for k := range flows {
		d := ecmp(k, []int{0, 2})
		if d != ecmp(k, all) {
			rehashed++
		}
		if got := sendFlags(t, dirs[d], client(k), A, now); got != first[k] {
			moved++
		}
	}
	t.Logf("director removed: %d of %d flows reached another director, %d changed real server", rehashed, flows, moved)
	if rehashed == 0 || moved != 0 {
		t.Errorf("director removed: %d flows rehashed, %d changed real server; want some, 0", rehashed, moved)
	}

	// A real server goes: every director deletes it.
	gone := servers[2]
	for _, d := range dirs {
		if err := d.DelDest(svcKey(), netip.AddrPortFrom(gone, 8080)); err != nil {
			t.Fatal(err)
		}
	}
	fresh := make([]*nat.Table, n)
	for i := range fresh {
		// Directors that start now, with the new configuration, see the
		// flows as new ones: their choice is the new table's.
		var rest []netip.Addr
		for _, s := range servers {
			if s != gone {
				rest = append(rest, s)
			}
		}
		fresh[i] = director(t, rest, ws[:len(rest)])
	}
	own, others, othersMoved := 0, 0, 0
	for k := range flows {
		got := sendFlags(t, fresh[ecmp(k, all)], client(k), S, now)
		if got == gone || !got.IsValid() {
			t.Fatalf("flow %v sent to %v after %v was removed", client(k), got, gone)
		}
		if first[k] == gone {
			own++
			continue
		}
		others++
		if got != first[k] {
			othersMoved++
		}
	}
	share := float64(othersMoved) / float64(others)
	t.Logf("server removed: its %d flows moved; %d of the other %d moved (%.2f%%)", own, othersMoved, others, 100*share)
	if own == 0 || share > 0.04 {
		t.Errorf("server removed: %d own flows, %.2f%% of the others moved; want some, < 4%%", own, 100*share)
	}
}
