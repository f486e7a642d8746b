package nat_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// recorder is a SyncSender that keeps what it is sent, as the master's
// encoder would see it.
type recorder struct{ sent []string }

func (r *recorder) Send(c *nat.Conn) {
	si := c.SyncInfo()
	r.sent = append(r.sent, fmt.Sprintf("%v:%d %v tpl=%v inact=%v to=%v", c.CAddr(), c.CPort, si.State, si.Template, si.Inactive, si.Timeout))
}

func (r *recorder) take() []string { s := r.sent; r.sent = nil; return s }

func setSysctl(t *testing.T, tb *nat.Table, name string, v int) {
	t.Helper()
	if err := tb.Apply(rules.Diff{{Kind: rules.SetSysctl, Sysctl: name, Value: v}}); err != nil {
		t.Fatal(err)
	}
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestSyncMasterTCP follows ip_vs_sync_conn_needed through a connection's
// life: established is sent at the third client packet (sync_threshold 3)
// and every 50 after (sync_period), a change into another synced state at
// once, states outside ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and
// TIME_WAIT never; only client packets count.
func TestSyncMasterTCP(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	r := &recorder{}
	e.tb.SetSyncSender(r)
	e.in(cli, S)
	e.out(cli, S|A)
	e.in(cli, A) // 2: ESTABLISHED, not yet
	if s := r.take(); len(s) != 0 {
		t.Fatalf("sent before the threshold: %v", s)
	}
	e.in(cli, A) // 3
	if s := r.take(); !eq(s, []string{"10.0.0.10:40000 ESTABLISHED tpl=false inact=false to=15m0s"}) {
		t.Fatalf("third packet: %v", s)
	}
	for range 49 {
		e.out(cli, A) // replies do not count
		e.in(cli, A)
	}
	if s := r.take(); len(s) != 0 {
		t.Fatalf("packets 4..52: %v", s)
	}
	e.in(cli, A) // 53 % 50 == 3
	if s := r.take(); len(s) != 1 {
		t.Fatalf("packet 53: %v", s)
	}
	// The server closes: FIN_WAIT is entered on the way out and sent
	// with the client's next packet, at once.
	e.out(cli, F|A)
	if s := r.take(); len(s) != 0 {
		t.Fatalf("reply sent: %v", s)
	}
	e.in(cli, A)
	if s := r.take(); !eq(s, []string{"10.0.0.10:40000 FIN_WAIT tpl=false inact=true to=2m0s"}) {
		t.Fatalf("fin_wait: %v", s)
	}
	e.in(cli, A) // no change: rate limited again
	if s := r.take(); len(s) != 0 {
		t.Fatalf("second fin_wait packet: %v", s)
	}
	e.in(cli, F|A)
	if s := r.take(); !eq(s, []string{"10.0.0.10:40000 TIME_WAIT tpl=false inact=true to=2m0s"}) {
		t.Fatalf("time_wait: %v", s)
	}
	// SYN_RECV is never sent.
	c2 := nattest.AP("10.0.0.11:1000")
	e.in(c2, S)
	e.in(c2, S)
	e.in(c2, S)
	if s := r.take(); len(s) != 0 {
		t.Fatalf("syn_recv sent: %v", s)
	}
	// Stopped: nothing more.
	e.tb.SetSyncSender(nil)
	e.in(cli, R)
	if s := r.take(); len(s) != 0 {
		t.Fatalf("sent after stop: %v", s)
	}
}

// TestSyncMasterTemplate: a persistent connection's template follows it,
// sent with every client packet of it (its own count has no threshold),
// and not the connection itself in sync_persist_mode.
func TestSyncMasterTemplate(t *testing.T) {
	e := newEnv(t, nat.Config{}, func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr", Persistent: true, PersistTimeout: 360 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}, nat.DestConfig{Addr: rs1, Port: 80, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	})
	r := &recorder{}
	e.tb.SetSyncSender(r)
	e.in(cli, S)
	e.out(cli, S|A)
	e.in(cli, A)
	e.in(cli, A)
	want := []string{
		"10.0.0.10:0 NONE tpl=true inact=true to=6m0s",
		"10.0.0.10:0 ASSURED tpl=true inact=true to=6m0s",
		"10.0.0.10:40000 ESTABLISHED tpl=false inact=false to=15m0s",
		"10.0.0.10:0 ASSURED tpl=true inact=true to=6m0s",
	}
	if s := r.take(); !eq(s, want) {
		t.Fatalf("got\n%v\nwant\n%v", s, want)
	}
	setSysctl(t, e.tb, "sync_persist_mode", 1)
	e.out(cli, F|A)
	e.in(cli, A)
	if s := r.take(); !eq(s, []string{"10.0.0.10:0 ASSURED tpl=true inact=true to=6m0s"}) {
		t.Fatalf("persist mode: %v", s)
	}
}

// TestSyncMasterUDPAndVersion0: UDP at the third datagram; version 0
// leaves IPv6 out; a one-packet (--ops) connection is never sent.
func TestSyncMasterUDPAndVersion0(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 17))
	r := &recorder{}
	e.tb.SetSyncSender(r)
	for range 3 {
		e.tb.Process(nattest.UDP(cli, vip, []byte("x")), &e.p, e.now)
	}
	if s := r.take(); !eq(s, []string{"10.0.0.10:40000 UDP tpl=false inact=true to=5m0s"}) {
		t.Fatalf("udp: %v", s)
	}
	if _, err := e.tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip6.Addr(), Port: vip6.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip6.Addr(), Port: vip6.Port()}, nat.DestConfig{Addr: rs6, Port: 53, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	setSysctl(t, e.tb, "sync_version", 0)
	for range 3 {
		e.tb.Process(nattest.UDP(cli6, vip6, []byte("x")), &e.p, e.now)
	}
	if s := r.take(); len(s) != 0 {
		t.Fatalf("ipv6 in version 0: %v", s)
	}
	setSysctl(t, e.tb, "sync_version", 1)
	c6 := nattest.AP("[fd01::10]:40001")
	for range 3 {
		e.tb.Process(nattest.UDP(c6, vip6, []byte("x")), &e.p, e.now)
	}
	if s := r.take(); len(s) != 1 {
		t.Fatalf("ipv6 in version 1: %v", s)
	}
	if err := e.tb.EditService(nat.ServiceConfig{Proto: 17, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr", OnePacket: true}); err != nil {
		t.Fatal(err)
	}
	c2 := nattest.AP("10.0.0.12:5000")
	for range 6 {
		e.tb.Process(nattest.UDP(c2, vip, []byte("x")), &e.p, e.now)
	}
	if s := r.take(); len(s) != 0 {
		t.Fatalf("one-packet connections sent: %v", s)
	}
}

// TestSyncRefreshPeriod: with sync_refresh_period, a connection whose
// expiry moved less than the period is not sent again (sync_retries 0).
func TestSyncRefreshPeriod(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 17))
	setSysctl(t, e.tb, "sync_refresh_period", 30)
	setSysctl(t, e.tb, "sync_period", 0)
	r := &recorder{}
	e.tb.SetSyncSender(r)
	send := func() { e.tb.Process(nattest.UDP(cli, vip, []byte("x")), &e.p, e.now) }
	send()
	if s := r.take(); len(s) != 1 {
		t.Fatalf("first datagram: %v", s)
	}
	e.advance(10 * time.Second)
	send()
	if s := r.take(); len(s) != 0 {
		t.Fatalf("10 s later: %v", s)
	}
	e.advance(25 * time.Second)
	send()
	if s := r.take(); len(s) != 1 {
		t.Fatalf("35 s later: %v", s)
	}
}

// TestApplySync is ip_vs_proc_conn: a new connection bound to the local
// real server, an update, a replacement, an ignored expiration of a
// replaced one, an unbound one, a template; then a packet finds the
// synced connection and is forwarded as the master would have.
func TestApplySync(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	sc := nat.SyncedConn{
		Proto: 6, CAddr: cli.Addr(), CPort: cli.Port(), VAddr: vip.Addr(), VPort: vip.Port(),
		DAddr: rs2, DPort: 8080, State: nat.StateEstablished, Timeout: 900 * time.Second,
	}
	if err := e.tb.ApplySync(&sc, e.now); err != nil {
		t.Fatal(err)
	}
	c, dir := e.tb.Lookup(6, cli, vip)
	if c == nil || dir != nat.DirIn || !c.Synced() || c.State() != nat.StateEstablished || c.Dest() != dest(t, e.tb, rs2) {
		t.Fatalf("synced connection: %+v", c)
	}
	if d := dest(t, e.tb, rs2); d.ActiveConns() != 1 || d.InactConns() != 0 {
		t.Fatalf("rs2 counts %d/%d", d.ActiveConns(), d.InactConns())
	}
	if got := c.Expires().Sub(time.Unix(0, e.now)); got != 900*time.Second {
		t.Fatalf("expires in %v", got)
	}
	// Update: FIN_WAIT, inactive, timeout 0 (version 0): the state's.
	sc.State, sc.Inactive, sc.Timeout = nat.StateFinWait, true, 0
	if err := e.tb.ApplySync(&sc, e.now); err != nil {
		t.Fatal(err)
	}
	if d := dest(t, e.tb, rs2); d.ActiveConns() != 0 || d.InactConns() != 1 || c.State() != nat.StateFinWait {
		t.Fatalf("update: rs2 %d/%d, %v", d.ActiveConns(), d.InactConns(), c.State())
	}
	if got := c.Expires().Sub(time.Unix(0, e.now)); got != 2*time.Minute {
		t.Fatalf("fin_wait expires in %v", got)
	}
	// An inactive message for another real server is the expiry of a
	// replaced connection: ignored.
	other := sc
	other.DAddr = rs1
	if err := e.tb.ApplySync(&other, e.now); err != nil {
		t.Fatal(err)
	}
	if c2, _ := e.tb.Lookup(6, cli, vip); c2 != c {
		t.Fatal("inactive message replaced the connection")
	}
	// An active one replaces it.
	other.Inactive, other.State = false, nat.StateEstablished
	if err := e.tb.ApplySync(&other, e.now); err != nil {
		t.Fatal(err)
	}
	c2, _ := e.tb.Lookup(6, cli, vip)
	if c2 == c || c2.DAddr() != rs1 || dest(t, e.tb, rs2).InactConns() != 0 || dest(t, e.tb, rs1).ActiveConns() != 1 {
		t.Fatalf("replacement: %+v", c2)
	}
	// The backup takes over: the client's next packet goes to rs1 as on
	// the master, and the reply back from the VIP.
	if res := e.in(cli, A); res.Verdict != nat.Forward || e.p.Dst() != rs1 {
		t.Fatalf("forwarded: %+v to %v", res, e.p.Dst())
	}
	if res := e.out(cli, A); res.Verdict != nat.Forward || e.p.Src() != vip.Addr() {
		t.Fatalf("reply: %+v from %v", res, e.p.Src())
	}
	// No such real server here: unbound, still forwarded to its address.
	ub := nat.SyncedConn{
		Proto: 6, CAddr: cli.Addr(), CPort: 999, VAddr: vip.Addr(), VPort: vip.Port(),
		DAddr: netip.MustParseAddr("172.16.1.9"), DPort: 8080, State: nat.StateEstablished, Timeout: time.Minute,
	}
	if err := e.tb.ApplySync(&ub, e.now); err != nil {
		t.Fatal(err)
	}
	if uc, _ := e.tb.Lookup(6, netip.AddrPortFrom(cli.Addr(), 999), vip); uc == nil || uc.Service() != nil {
		t.Fatalf("unbound: %+v", uc)
	} else if res := e.tb.Process(nattest.TCP(netip.AddrPortFrom(cli.Addr(), 999), vip, A, 0), &e.p, e.now); res.Verdict != nat.Forward || e.p.Dst() != ub.DAddr {
		t.Fatalf("unbound forwarded: %+v to %v", res, e.p.Dst())
	}
	// A template: a new connection of the client goes where it says.
	tpl := nat.SyncedConn{Proto: 6, CAddr: cli.Addr(), VAddr: vip.Addr(), VPort: vip.Port(), DAddr: rs2, DPort: 8080, Template: true, State: nat.StateAssured, Timeout: 360 * time.Second}
	if err := e.tb.ApplySync(&tpl, e.now); err != nil {
		t.Fatal(err)
	}
	n := 0
	e.tb.Conns(func(c *nat.Conn) {
		if c.Template() && c.Synced() && c.State() == nat.StateAssured {
			n++
		}
	})
	if n != 1 || dest(t, e.tb, rs2).PersistConns() != 1 {
		t.Fatalf("%d synced templates, rs2 persist %d", n, dest(t, e.tb, rs2).PersistConns())
	}
	// Refused: a UDP connection in a TCP state.
	bad := ub
	bad.Proto = 17
	if err := e.tb.ApplySync(&bad, e.now); !errors.Is(err, nat.ErrSyncRefused) {
		t.Fatalf("bad state: %v", err)
	}
	// Expiry as usual.
	e.advance(16 * time.Minute)
	e.tb.SweepAll(e.now)
	if e.tb.Len() != 0 {
		t.Fatalf("%d left after expiry", e.tb.Len())
	}
}

// TestSyncNoAlloc: a master's check on the packet path allocates nothing
// (the sender here keeps nothing either).
func TestSyncNoAlloc(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	e.tb.SetSyncSender(nopSender{})
	e.in(cli, S)
	e.out(cli, S|A)
	e.in(cli, A)
	conn, _ := e.tb.Lookup(6, cli, vip)
	in := nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: A, Size: 100})
	out := nattest.Build(nattest.Seg{Src: netip.AddrPortFrom(conn.DAddr(), conn.DPort), Dst: cli, Proto: 6, Flags: A, Size: 100})
	bi, bo := make([]byte, len(in)), make([]byte, len(out))
	var p nat.Packet
	allocs := testing.AllocsPerRun(1000, func() {
		copy(bi, in)
		copy(bo, out)
		if e.tb.Process(bi, &p, e.now).Verdict != nat.Forward || e.tb.Process(bo, &p, e.now).Verdict != nat.Forward {
			panic("not forwarded")
		}
	})
	if allocs != 0 {
		t.Errorf("established path with a sync master allocates %.1f per packet pair", allocs)
	}
}

type nopSender struct{}

func (nopSender) Send(*nat.Conn) {}

// TestConnSize: the sync fields fit in the 160-byte size class.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(nat.Conn{}); n > 160 {
		t.Errorf("Conn is %d bytes, more than the allocator's 160-byte class", n)
	}
}
