//go:build linux

package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// TestSYNFloodKernel is TestSYNFlood's fastest flood with the kernel in
// the director's place, for comparison (make reliability prints both): the
// same sender, keep-alive connection and clients, against a kernel TCP
// listener that answers every SYN with a cookie (tcp_syncookies=2), over
// a veth pair instead of tunvs's TUN device. The host kernel here has no
// IPVS; what matters is where the flood is handled: veth_xmit hands the
// sender's packet to the receiving namespace's backlog (netif_rx), which
// the same CPU processes before the sender's sendto returns, so the flood
// goes no faster than the kernel answers it and there is no queue in
// between to overflow. Against tunvs the sender only queues its packet on
// the TUN device, and the director reads it later on another thread.
func TestSYNFloodKernel(t *testing.T) {
	if os.Getenv(envReliability) == "" {
		t.Skip("set " + envReliability + "=1 (make reliability)")
	}
	inSandboxes(t, runKernelFlood)
}

func runKernelFlood(t *testing.T) {
	const floodFor = 10 * time.Second
	topo := netns.NewTopology(t, false)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cl, err := topo.AddHost("client")
	must(err)
	srv, err := topo.AddHost("server")
	must(err)
	must(cl.IP("link", "add", "tvk", "type", "veth", "peer", "name", "tvs"))
	must(cl.MoveLink("tvs", srv))
	must(cl.LinkUp("tvk"))
	must(srv.LinkUp("tvs"))
	must(cl.AddAddr("tvk", cip4.String()+"/24"))
	must(srv.AddAddr("tvs", "10.0.0.1/24"))
	must(srv.AddAddr("tvs", vip4.String()+"/32"))
	must(cl.AddRoute("172.16.1.0/24", "via", "10.0.0.1", "dev", "tvk"))
	// The cookies go back to the client's namespace, which drops them
	// (not its address, no forwarding), as they do from the director:
	// through one neighbour, not one per spoofed source.
	must(srv.AddRoute("10.1.0.0/16", "via", cip4.String(), "dev", "tvs"))
	must(srv.Sysctl("net.ipv4.tcp_syncookies", "2"))
	var ln net.Listener
	must(srv.Do(func() (err error) {
		ln, err = net.Listen("tcp", vip4.String()+":80")
		return err
	}))
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "kernel") })}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = cl.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}

	est := newKeepAlive(t, dial, "http://172.16.1.100/")
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	var wg sync.WaitGroup
	est.run(ctx, &wg)
	queued0, dropped0, err := tunTx(cl, "tvk")
	must(err)
	var sent atomic.Int64
	var floodErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		floodErr = synFlood(ctx, cl, 0, &sent)
	}()
	time.Sleep(time.Second)
	var newOK, newFail atomic.Int64
	nc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	for range 2 {
		until(ctx, &wg, 0, &newOK, &newFail, func() bool { return fetched(nc, "http://172.16.1.100/") })
	}
	wg.Wait()
	must(floodErr)
	queued1, dropped1, err := tunTx(cl, "tvk")
	must(err)
	out, err := srv.Run(context.Background(), "nstat", "-asz", "TcpExtSyncookiesSent", "TcpExtListenDrops")
	must(err)
	counter := func(name string) uint64 {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
				n, _ := strconv.ParseUint(f[1], 10, 64)
				return n
			}
		}
		return 0
	}
	total := newOK.Load() + newFail.Load()
	t.Logf("FIGURES kernel rate=max sent=%d (%.0f/s) new_ok=%d/%d (%.2f%%) %s veth_drops=%d/%d cookies_sent=%d listen_drops=%d",
		sent.Load(), float64(sent.Load())/floodFor.Seconds(), newOK.Load(), total, 100*float64(newOK.Load())/float64(max(total, 1)),
		est.figures(),
		dropped1-dropped0, dropped1-dropped0+queued1-queued0, counter("TcpExtSyncookiesSent"), counter("TcpExtListenDrops"))
	est.logFails(t)
	// The comparison is only one if the kernel did answer the flood.
	if counter("TcpExtSyncookiesSent") < uint64(sent.Load())/2 {
		t.Errorf("the kernel sent %d cookies for %d SYNs", counter("TcpExtSyncookiesSent"), sent.Load())
	}
}
