package health_test

import (
	"context"
	"fmt"
	. "github.com/tunvs/tunvs/health"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tunvs/tunvs/internal/clock"
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/netstack"
)

const testPort = 8080

var testVIP = netip.AddrPortFrom(lab.VIP, testPort)

// rs is a real server's HTTP (and UDP echo) service on port 8080 that a
// test can stop, restart and make answer 500.
type rs struct {
	t      *testing.T
	host   *netstack.Host
	addr   netip.AddrPort
	name   string
	status atomic.Int32

	mu  sync.Mutex
	srv *http.Server
	udp net.PacketConn
	wg  sync.WaitGroup
}

func newRS(t *testing.T, h *netstack.Host, i int) *rs {
	r := &rs{t: t, host: h, addr: netip.AddrPortFrom(lab.RealServerAddr(i), testPort), name: lab.RealServerName(i)}
	r.status.Store(200)
	r.start()
	t.Cleanup(r.stop)
	return r
}

// listen is gonet.ListenTCP with SO_REUSEADDR, so that a restarted server
// binds its port again whatever its old connections are doing.
func listen(h *netstack.Host, ap netip.AddrPort) (net.Listener, error) {
	var wq waiter.Queue
	ep, e := h.Stack().NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if e != nil {
		return nil, fmt.Errorf("%s", e)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if e := ep.Bind(tcpip.FullAddress{Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}); e != nil {
		ep.Close()
		return nil, fmt.Errorf("bind: %s", e)
	}
	if e := ep.Listen(64); e != nil {
		ep.Close()
		return nil, fmt.Errorf("listen: %s", e)
	}
	return gonet.NewTCPListener(h.Stack(), &wq, ep), nil
}

func (r *rs) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return
	}
	ln, err := listen(r.host, r.addr)
	if err != nil {
		r.t.Fatalf("%v: %v", r.addr, err)
	}
	r.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.WriteHeader(int(r.status.Load()))
			io.WriteString(w, r.name+" host="+req.Host+"\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	srv := r.srv
	r.wg.Add(1)
	go func() { defer r.wg.Done(); srv.Serve(ln) }()
	pc, err := r.host.ListenUDP(r.addr)
	if err != nil {
		r.t.Fatalf("udp %v: %v", r.addr, err)
	}
	r.udp = pc
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			reply := append([]byte(r.name+" "), buf[:n]...)
			pc.WriteTo(reply, from)
		}
	}()
}

func (r *rs) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv == nil {
		return
	}
	r.srv.Close()
	r.udp.Close()
	r.wg.Wait()
	r.srv, r.udp = nil, nil
}

// testLab is the lab with a TCP and a UDP service on VIP:8080 whose real
// servers are the test's, and the manual clock the checks run on.
type testLab struct {
	*lab.Lab
	rs    []*rs
	clock *clock.Manual
}

func newTestLab(t *testing.T, servers int) *testLab {
	t.Helper()
	l, err := lab.New(lab.Config{Scheduler: "rr", Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tl := &testLab{Lab: l, clock: clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	for _, proto := range []uint8{nat.ProtoTCP, nat.ProtoUDP} {
		if _, err := l.NAT().AddService(nat.ServiceConfig{Proto: proto, Addr: lab.VIP, Port: testPort, Scheduler: "rr"}); err != nil {
			t.Fatal(err)
		}
		for i := range servers {
			if _, err := l.NAT().AddDest(nat.ServiceKey{Proto: proto, Addr: lab.VIP, Port: testPort}, nat.DestConfig{Addr: lab.RealServerAddr(i), Port: testPort, Weight: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, h := range l.Servers {
		tl.rs = append(tl.rs, newRS(t, h, i))
	}
	return tl
}

func (tl *testLab) opts(t *testing.T, events chan<- Event) Options {
	return Options{
		Table: tl.NAT(),
		Stack: tl.Director.Host.Stack(),
		Log:   zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		Clock: tl.clock,
		OnEvent: func(e Event) {
			if events != nil {
				select {
				case events <- e:
				default:
				}
			}
		},
	}
}

func (tl *testLab) dest(t *testing.T, proto uint8, a netip.AddrPort) *nat.Dest {
	svc := tl.NAT().Service(nat.ServiceKey{Proto: proto, Addr: lab.VIP, Port: testPort})
	if svc == nil {
		t.Fatal("no service")
	}
	return FindDest(svc, a)
}

// get makes one HTTP request from the client to VIP:8080 on a new
// connection.
func (tl *testLab) get(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return tl.Client.DialTCP(ctx, testVIP)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+testVIP.String()+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d from %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// settleTimeout bounds, in real time, how long a test waits for the check
// goroutines to finish reacting to a tick (a probe is real network I/O or
// a process). It guards against a hang; no assertion depends on it.
const settleTimeout = 30 * time.Second

// settle waits until all n checks have run what the clock made due and
// armed their next timers: from then on nothing happens until the clock
// moves.
func (tl *testLab) settle(t *testing.T, n int) {
	t.Helper()
	if !tl.clock.WaitArmed(n, settleTimeout) {
		t.Fatalf("only %d of %d checks waiting for their next turn after %v", tl.clock.Armed(), n, settleTimeout)
	}
}

// tick lets the n checks settle, moves the clock d forward and lets them
// run what fell due.
func (tl *testLab) tick(t *testing.T, n int, d time.Duration) {
	t.Helper()
	tl.settle(t, n)
	tl.clock.Advance(d)
	tl.settle(t, n)
}

// nextEvent returns the first event of a type about a server (any server
// if server is zero) that has already been delivered, skipping others; ok
// is false if there is none.
func nextEvent(ch <-chan Event, typ EventType, server netip.AddrPort) (e Event, ok bool) {
	for {
		select {
		case e := <-ch:
			if e.Type == typ && (!server.IsValid() || e.Server == server) {
				return e, true
			}
		default:
			return Event{}, false
		}
	}
}

// waitEvent ticks the clock by interval, at most ticks times, until an
// event of a type about a server has been delivered, and returns it and
// the clock time it took.
func (tl *testLab) waitEvent(t *testing.T, n int, ch <-chan Event, typ EventType, server netip.AddrPort, interval time.Duration, ticks int) (Event, time.Duration) {
	t.Helper()
	tl.settle(t, n)
	from := tl.clock.Now()
	for range ticks {
		if e, ok := nextEvent(ch, typ, server); ok {
			return e, tl.clock.Now().Sub(from)
		}
		tl.tick(t, n, interval)
	}
	if e, ok := nextEvent(ch, typ, server); ok {
		return e, tl.clock.Now().Sub(from)
	}
	t.Fatalf("no %s event for %v within %d ticks of %v", typ, server, ticks, interval)
	return Event{}, 0
}
