package nat_test

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// halfOpenListed counts the table's connections of svc in SYN_RECV or
// SYNACK, as a listing would: what Service.HalfOpen must equal.
func halfOpenListed(tb *nat.Table, svc *nat.Service) int64 {
	var n int64
	tb.Conns(func(c *nat.Conn) {
		if s := c.State(); c.Service() == svc && !c.Template() && (s == nat.StateSynRecv || s == nat.StateSynAck) {
			n++
		}
	})
	return n
}

func theService(t *testing.T, tb *nat.Table) *nat.Service {
	t.Helper()
	svc := tb.Service(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()})
	if svc == nil {
		t.Fatal("no service")
	}
	return svc
}

// The automatic mode answers a service's SYNs with cookies from the
// moment its half-open connections reach synproxy_backlog, as
// tcp_syncookies=1 does once a listener's SYN queue is full
// (inet_csk_reqsk_queue_is_full), and stops as soon as one of them
// leaves SYN_RECV, the table far from its bound.
func TestSynProxyBacklog(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	if v, _ := e.tb.Sysctl("synproxy_backlog"); v != nat.DefaultSynProxyBacklog || e.tb.SynProxyBacklog() != 4096 {
		t.Fatalf("default backlog %d", v)
	}
	setSysctl(t, e.tb, "synproxy_backlog", 4)
	svc := theService(t, e.tb)
	for i := range 4 {
		if r := e.in(spoofed(i), S); r.Verdict != nat.Forward {
			t.Fatalf("SYN %d below the backlog: %+v", i, r)
		}
	}
	if svc.HalfOpen() != 4 {
		t.Fatalf("half-open %d, want 4", svc.HalfOpen())
	}
	syn := func(c netip.AddrPort) nat.Result {
		return e.tb.Process(roomy(nattest.Build(nattest.Seg{Src: c, Dst: vip, Proto: 6, Flags: S, Seq: 1, Options: synOpts(1460, 1, 0, 7)})), &e.p, e.now)
	}
	if r := syn(cli); r.Verdict != nat.Reply {
		t.Fatalf("SYN at the backlog: %+v", r)
	}
	if e.tb.Len() != 4 || svc.HalfOpen() != 4 {
		t.Fatalf("the cookie made an entry: %d entries, %d half-open", e.tb.Len(), svc.HalfOpen())
	}
	// One handshake completes: below the backlog, SYNs are forwarded again.
	e.out(spoofed(0), S|A)
	if svc.HalfOpen() != 4 {
		t.Fatalf("SYN-ACK: half-open %d, want 4", svc.HalfOpen())
	}
	e.in(spoofed(0), A)
	if svc.HalfOpen() != 3 {
		t.Fatalf("established: half-open %d, want 3", svc.HalfOpen())
	}
	if r := e.in(cli, S); r.Verdict != nat.Forward {
		t.Fatalf("SYN below the backlog: %+v", r)
	}
	// Off: no cookies whatever the count; 0: always.
	e.tb.SetSynProxy(nat.SynProxyOff)
	if r := syn(spoofed(100)); r.Verdict != nat.Forward {
		t.Fatalf("SYN with the proxy off: %+v", r)
	}
	e.tb.SetSynProxy(nat.SynProxyAuto)
	setSysctl(t, e.tb, "synproxy_backlog", 0)
	if r := syn(spoofed(101)); r.Verdict != nat.Reply {
		t.Fatalf("SYN with backlog 0: %+v", r)
	}
	// The half-open entries time out: the count is 0.
	e.run(2 * time.Minute)
	if e.tb.Len() != 1 || svc.HalfOpen() != 0 {
		t.Fatalf("after expiry: %d entries, %d half-open", e.tb.Len(), svc.HalfOpen())
	}
}

// The count stays equal to the listed SYN_RECV and SYNACK connections
// through any sequence of packets both ways, secure_tcp's table, sync
// messages, early drop, removed servers, expiry; and is 0 once the table
// has drained.
func TestHalfOpenExact(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 7))
		e := newEnv(t, nat.Config{MaxConns: 40}, twoServers("rr", 6))
		e.tb.SetSynProxy(nat.SynProxyOff)
		setSysctl(t, e.tb, "expire_nodest_conn", 1)
		svc := theService(t, e.tb)
		flags := []uint8{S, S | A, A, R, F | A, F}
		states := []nat.State{nat.StateSynRecv, nat.StateSynAck, nat.StateEstablished, nat.StateFinWait, nat.StateClose, nat.StateNone}
		for step := range 600 {
			c := spoofed(r.IntN(60))
			switch k := r.IntN(20); {
			case k < 9:
				e.tb.Process(nattest.TCP(c, vip, flags[r.IntN(len(flags))], 0), &e.p, e.now)
			case k < 15:
				if conn, _ := e.tb.Lookup(6, c, vip); conn != nil {
					e.tb.Process(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, flags[r.IntN(len(flags))], 0), &e.p, e.now)
				}
			case k < 17:
				sc := nat.SyncedConn{Proto: 6, CAddr: c.Addr(), CPort: c.Port(), VAddr: vip.Addr(), VPort: vip.Port(),
					DAddr: []netip.Addr{rs1, rs2}[r.IntN(2)], DPort: 8080, State: states[r.IntN(len(states))], Inactive: r.IntN(2) == 0}
				_ = e.tb.ApplySync(&sc, e.now)
			case k < 18:
				setSysctl(t, e.tb, "secure_tcp", 3*r.IntN(2))
				e.tb.Defend(e.now, 1<<30)
			case k < 19:
				e.advance(time.Duration(r.IntN(40)) * time.Second)
				e.sweep()
			default:
				// A real server goes and comes back.
				d := []netip.Addr{rs1, rs2}[r.IntN(2)]
				k := nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}
				if err := e.tb.DelDest(k, netip.AddrPortFrom(d, 8080)); err == nil {
					e.tb.AddDest(k, nat.DestConfig{Addr: d, Port: 8080, Weight: 1})
				}
			}
			if got, want := svc.HalfOpen(), halfOpenListed(e.tb, svc); got != want {
				t.Fatalf("seed %d step %d: half-open %d, listed %d", seed, step, got, want)
			}
		}
		e.run(20 * time.Minute)
		if e.tb.Len() != 0 || svc.HalfOpen() != 0 {
			t.Fatalf("seed %d drained: %d entries, half-open %d", seed, e.tb.Len(), svc.HalfOpen())
		}
	}
}

// Racing packets on the same connections from both sides, with sweeps
// and early drop, leave the count exact (run with -race).
func TestHalfOpenConcurrent(t *testing.T) {
	e := newEnv(t, nat.Config{MaxConns: 64}, twoServers("rr", 6))
	e.tb.SetSynProxy(nat.SynProxyOff)
	svc := theService(t, e.tb)
	now := e.now
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			var p nat.Packet
			flags := []uint8{S, S | A, A, R, F | A}
			for range 5000 {
				c := spoofed(r.IntN(100))
				f := flags[r.IntN(len(flags))]
				if r.IntN(2) == 0 {
					e.tb.Process(nattest.TCP(c, vip, f, 0), &p, now)
				} else if conn, _ := e.tb.Lookup(6, c, vip); conn != nil {
					e.tb.Process(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, f, 0), &p, now)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			e.tb.Sweep(now + int64(i)*int64(time.Second))
		}
	}()
	wg.Wait()
	if got, want := svc.HalfOpen(), halfOpenListed(e.tb, svc); got != want {
		t.Fatalf("half-open %d, listed %d", got, want)
	}
	e.advance(time.Hour)
	e.sweep()
	if e.tb.Len() != 0 || svc.HalfOpen() != 0 {
		t.Fatalf("drained: %d entries, half-open %d", e.tb.Len(), svc.HalfOpen())
	}
}

// Keeping the count allocates nothing: a connection taken round SYN_RECV,
// ESTABLISHED and CLOSE again and again (conn_reuse_mode 0 keeps the
// same entry for the new SYN).
func TestHalfOpenAllocatesNothing(t *testing.T) {
	e := newEnv(t, nat.Config{}, twoServers("rr", 6))
	setSysctl(t, e.tb, "conn_reuse_mode", 0)
	svc := theService(t, e.tb)
	e.in(cli, S)
	pkts := [][]byte{nattest.TCP(cli, vip, A, 0), nattest.TCP(cli, vip, R, 0), nattest.TCP(cli, vip, S, 0)}
	work := make([]byte, 256)
	if n := testing.AllocsPerRun(200, func() {
		for _, b := range pkts {
			w := work[:len(b)]
			copy(w, b)
			if r := e.tb.Process(w, &e.p, e.now); r.Verdict != nat.Forward {
				t.Fatalf("%+v", r)
			}
		}
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
	if c, _ := e.tb.Lookup(6, cli, vip); c == nil || c.State() != nat.StateSynRecv || svc.HalfOpen() != 1 || e.tb.Len() != 1 {
		t.Fatalf("after the cycles: %v, half-open %d, %d entries", c, svc.HalfOpen(), e.tb.Len())
	}
}
