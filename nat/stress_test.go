package nat_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// New connections of a persistent service from many goroutines while
// servers are edited, removed and added back and the table is swept: when
// everything has expired, no entry and no count is left behind.
func TestPersistConcurrent(t *testing.T) {
	tb := nat.New(nat.Config{})
	persistent(6, 80, 30*time.Second, 24, 8080)(tb)
	tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip.Addr(), Port: 80, Scheduler: "wlc", Persistent: true, OnePacket: true})
	for _, a := range []netip.Addr{rs1, rs2} {
		tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: a, Weight: 1, UThreshold: 3})
	}
	var clock atomic.Int64
	clock.Store(time.Unix(1_000_000, 0).UnixNano())
	var mu sync.Mutex
	seen := map[*nat.Dest]bool{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var p nat.Packet
			for i := range 400 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(g), byte(i % 7), byte(i)}), uint16(1000+i))
				var b []byte
				if i%3 == 0 {
					b = nattest.UDP(c, vip, []byte("x"))
				} else {
					b = nattest.TCP(c, vip, S, 0)
				}
				r := tb.Process(b, &p, clock.Load())
				if r.Conn != nil {
					mu.Lock()
					seen[r.Conn.Dest()] = true
					mu.Unlock()
				}
				if i%5 == 0 {
					tb.Process(nattest.TCP(c, vip, A, 0), &p, clock.Load())
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			clock.Add(int64(200 * time.Millisecond))
			tb.Sweep(clock.Load())
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			w := i % 3
			tb.EditDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Port: 8080, Weight: w, UThreshold: i % 4})
			if i%10 == 0 {
				tb.DelDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, netip.AddrPortFrom(rs2, 8080))
				tb.SetExpireNodestConn(i%20 == 0)
				tb.SetExpireQuiescentTemplate(i%30 == 0)
				tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs2, Port: 8080, Weight: 1})
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	end := clock.Load() + int64(time.Hour)
	for range 3 {
		end += int64(2 * time.Minute)
		tb.SweepAll(end)
	}
	if tb.Len() != 0 {
		t.Errorf("%d entries left", tb.Len())
	}
	for d := range seen {
		if d.TotalConns() != 0 || d.ActiveConns() != 0 || d.PersistConns() != 0 {
			t.Errorf("%v: total %d active %d persist %d", d.Addr, d.TotalConns(), d.ActiveConns(), d.PersistConns())
		}
	}
}
