package health_test

import (
	"context"
	. "github.com/tunvs/tunvs/health"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/waitfor"
	"github.com/tunvs/tunvs/nat"
)

// client keeps requesting VIP:8080 and records, per request, when it
// started, which server answered and whether it failed.
type client struct {
	mu   sync.Mutex
	reqs []req
	stop atomic.Bool
	wg   sync.WaitGroup
}

type req struct {
	start time.Time
	body  string
	err   error
}

func (c *client) run(tl *testLab) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for !c.stop.Load() {
			start := time.Now()
			body, err := tl.get(context.Background())
			c.mu.Lock()
			c.reqs = append(c.reqs, req{start, body, err})
			c.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

func (c *client) halt() []req {
	c.stop.Store(true)
	c.wg.Wait()
	return c.reqs
}

func (c *client) since(t0 time.Time) []req {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []req
	for _, r := range c.reqs {
		if !r.start.Before(t0) {
			out = append(out, r)
		}
	}
	return out
}

// The demonstration, with a TCP check and with an HTTP check whose
// status turns 500: while a client keeps requesting, the failed server
// gets no new connection within fall × interval and no request fails after
// that; once it is back it takes traffic again after rise × interval.
func TestLabFailover(t *testing.T) {
	for _, tc := range []struct {
		name   string
		check  Check
		onFail OnFail
		fail   func(r *rs)
		heal   func(r *rs)
	}{
		{"tcp stop/inhibit", Check{Kind: KindTCP}, Inhibit, (*rs).stop, (*rs).start},
		{"tcp stop/remove", Check{Kind: KindTCP}, Remove, (*rs).stop, (*rs).start},
		{"http 500/inhibit", Check{Kind: KindHTTP, Path: "/", Status: []StatusRange{{Lo: 200, Hi: 299}}}, Inhibit,
			func(r *rs) { r.status.Store(500) }, func(r *rs) { r.status.Store(200) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := newTestLab(t, 2)
			events := make(chan Event, 64)
			c := tc.check
			c.Interval, c.Timeout, c.Fall, c.Rise = tInterval, tTimeout, 3, 2
			m, err := New(Config{Services: []ServiceConfig{{Proto: nat.ProtoTCP, VIP: testVIP, OnFail: tc.onFail, Default: &c}}}, tl.opts(t, events))
			if err != nil {
				t.Fatal(err)
			}
			m.Start()
			defer m.Stop()
			rs1, rs2 := tl.rs[0], tl.rs[1]
			var cl client
			cl.run(tl)
			defer cl.halt()
			// The client runs on real time, the checks on the lab's
			// clock: requests are counted, not waited for.
			waitfor.Until(t, 10*time.Second, "5 requests before the failure", func() bool {
				return len(cl.since(time.Time{})) >= 5
			})
			tl.settle(t, 2)

			failed := time.Now()
			tc.fail(rs1)
			down, detected := tl.waitEvent(t, 2, events, EventDown, rs1.addr, tInterval, 3)
			if detected != 3*tInterval {
				t.Errorf("down after %v, want fall × interval = %v", detected, 3*tInterval)
			}
			t.Logf("failed server out after %v (%s)", detected, down.Reason)
			// A request that started before the NAT changed may still
			// have been scheduled to the failed server.
			settled := time.Now().Add(20 * time.Millisecond)
			waitfor.Until(t, 10*time.Second, "10 requests while the server is down", func() bool {
				return len(cl.since(settled)) >= 10
			})
			after := cl.since(settled)
			for _, r := range after {
				if r.err != nil {
					t.Errorf("request at +%v failed after the failover: %v", r.start.Sub(failed), r.err)
				} else if !strings.HasPrefix(r.body, rs2.name) {
					t.Errorf("request at +%v went to %q", r.start.Sub(failed), r.body)
				}
			}
			failedReqs := 0
			for _, r := range cl.since(failed) {
				if r.err != nil || strings.HasPrefix(r.body, rs1.name) && strings.Contains(tc.name, "500") {
					failedReqs++
				}
			}
			t.Logf("%d requests in all while down, %d failed before the failover", len(cl.since(failed)), failedReqs)

			tc.heal(rs1)
			_, back := tl.waitEvent(t, 2, events, EventUp, rs1.addr, tInterval, 2)
			if back != 2*tInterval {
				t.Errorf("up after %v, want rise × interval = %v", back, 2*tInterval)
			}
			upAt := time.Now()
			waitfor.Until(t, 10*time.Second, "10 requests after recovery", func() bool {
				return len(cl.since(upAt)) >= 10
			})
			n1, n2 := 0, 0
			for _, r := range cl.since(upAt) {
				switch {
				case r.err != nil:
					t.Errorf("request failed after recovery: %v", r.err)
				case strings.HasPrefix(r.body, rs1.name):
					n1++
				default:
					n2++
				}
			}
			t.Logf("back after %v; then %s took %d requests, %s %d", back, rs1.name, n1, rs2.name, n2)
			if n1 == 0 || n2 == 0 {
				t.Errorf("after recovery: %d and %d requests", n1, n2)
			}
		})
	}
}

// udpAsk sends a datagram on the client socket (one NAT connection) and
// returns the reply.
// An error (the dead server's port unreachable, translated back by the
// NAT, makes the client's socket report "refused") or no reply is "".
func udpAsk(t *testing.T, tl *testLab, c net.Conn) string {
	t.Helper()
	if _, err := c.Write([]byte("q")); err != nil {
		return ""
	}
	buf := make([]byte, 512)
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	n, err := c.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// A UDP flow whose real server dies: without expire it stays bound to the
// dead server (blackholed) until its UDP timeout, even though the check
// has taken the server out; with expire (needs nat.Table.ExpireDest) the
// flow's next datagram is scheduled to a live server.
func TestLabUDPExpire(t *testing.T) {
	for _, expire := range []bool{false, true} {
		name := "no expire"
		if expire {
			name = "expire"
		}
		t.Run(name, func(t *testing.T) {
			tl := newTestLab(t, 2)
			if _, has := any(tl.NAT()).(ConnExpirer); expire && !has {
				t.Skip("nat.Table has no ExpireDest yet: see ConnExpirer")
			}
			events := make(chan Event, 64)
			m, err := New(Config{Services: []ServiceConfig{{
				Proto: nat.ProtoUDP, VIP: testVIP, OnFail: Inhibit, Expire: expire,
				Default: &Check{Kind: KindUDP, Payload: []byte("hc"), Expect: []byte("hc"), Interval: tInterval, Timeout: tUDPTimeout, Fall: 2, Rise: 2},
			}}}, tl.opts(t, events))
			if err != nil {
				t.Fatal(err)
			}
			m.Start()
			defer m.Stop()
			conn, err := tl.Client.DialUDP(testVIP)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			first := udpAsk(t, tl, conn)
			var dead, live *rs
			for i, r := range tl.rs {
				if strings.HasPrefix(first, r.name) {
					dead, live = r, tl.rs[1-i]
				}
			}
			if dead == nil {
				t.Fatalf("first reply %q", first)
			}
			tl.settle(t, 2)
			dead.stop()
			tl.waitEvent(t, 2, events, EventDown, dead.addr, tInterval, 2)
			got := map[string]int{}
			for range 5 {
				r := udpAsk(t, tl, conn)
				switch {
				case r == "":
					got["(failed)"]++
				case strings.HasPrefix(r, live.name):
					got[live.name]++
				default:
					got[r]++
				}
			}
			t.Logf("after %s died: %v", dead.name, got)
			if expire && got[live.name] != 5 {
				t.Errorf("with expire the flow should move to %s: %v", live.name, got)
			}
			if !expire && got["(failed)"] != 5 {
				t.Errorf("without expire the flow should stay on the dead server (IPVS's behaviour): %v", got)
			}
		})
	}
}

var _ = netip.AddrPort{}
