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
// servers are the test's.
type testLab struct {
	*lab.Lab
	rs []*rs
}

func newTestLab(t *testing.T, servers int) *testLab {
	t.Helper()
	l, err := lab.New(lab.Config{Scheduler: "rr", Servers: servers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tl := &testLab{Lab: l}
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

// waitEvent waits for an event of a type about a server.
func waitEvent(t *testing.T, ch <-chan Event, typ EventType, server netip.AddrPort, within time.Duration) Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e := <-ch:
			if e.Type == typ && (!server.IsValid() || e.Server == server) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event for %v within %v", typ, server, within)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
