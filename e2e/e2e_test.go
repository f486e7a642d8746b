//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// The binaries are built once, outside the sandbox, into a directory any
// user can read (the sandbox may run as uid 65534, whose go build would
// have no cache to write to).
const envBin = "TUNVS_E2E_BIN"

func TestMain(m *testing.M) {
	if !netns.Inside() && os.Getenv(envBin) == "" {
		dir, err := os.MkdirTemp("", "tunvs-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Chmod(dir, 0o755)
		for _, c := range []string{"tunvs", "tunvsadm", "tunvs-bgp"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c).CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", c, err, out)
				os.RemoveAll(dir)
				os.Exit(1)
			}
		}
		os.Setenv(envBin, dir)
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

var (
	vip4 = netip.MustParseAddr("172.16.1.100")
	vip6 = netip.MustParseAddr("fd00:100::100")
	cip4 = netip.MustParseAddr("10.0.0.10")
	cip6 = netip.MustParseAddr("fd00:1::10")
)

type rs struct {
	name     string
	host     *netns.Host
	dev      string
	v4, v6   netip.Addr
	mu       sync.Mutex
	clients  map[netip.Addr]int // remote addresses the server saw
	httpSrvs []*http.Server
	mux      *http.ServeMux
	fail     atomic.Bool // answer 500
}

// env is one running topology: the director in the sandbox's own fresh
// namespace, a client and two real servers in namespaces of their own,
// each joined to the director by a TUN device the director created.
type env struct {
	t      *testing.T
	topo   *netns.Topology
	client *netns.Host
	rss    []*rs
	sock   string
	daemon *exec.Cmd
	// wrap runs the daemon under another command (prlimit, say).
	wrap []string
	log  *lockedBuffer
}

type opts struct {
	clientMTU, rsMTU int
	// The client or the real servers advertise an MSS larger than their
	// link allows, so that the other side sends full-size segments that
	// only path-MTU discovery through the director can cut down.
	clientAdvmss, rsAdvmss bool
	// extra are more tunvs run arguments.
	extra []string
	// nofile, if set, bounds the daemon's descriptors (prlimit --nofile).
	nofile int
	// fullNAT: every real server is --fullnat, each service has a local
	// address (lad4, lad6) on the real servers' network, and the real
	// servers have no route but their own network's: none to the
	// client's.
	fullNAT bool
}

func bin(name string) string { return filepath.Join(os.Getenv(envBin), name) }

// newEnv starts a topology in the sandbox, torn down when the test ends.
func newEnv(t *testing.T) *env {
	t.Helper()
	// Cleanups run last first: e.close stops the daemon and servers
	// before NewTopology's cleanup removes the namespaces.
	e := &env{t: t, topo: netns.NewTopology(t, true), log: &lockedBuffer{}}
	t.Cleanup(func() { e.close() })
	return e
}

// startDaemon runs tunvs with args in the sandbox's own namespace and
// waits for it to create devs there.
func (e *env) startDaemon(args []string, devs ...string) {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd := append(append(slices.Clone(e.wrap), bin("tunvs")), args...)
	e.daemon = exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	e.daemon.Stdout, e.daemon.Stderr = e.log, e.log
	e.daemon.Cancel = func() error { return e.daemon.Process.Signal(os.Interrupt) }
	e.daemon.WaitDelay = 5 * time.Second
	if err := e.daemon.Start(); err != nil {
		t.Fatal(err)
	}
	for _, dev := range devs {
		if err := netns.WaitLink(e.topo.Root(), dev, 10*time.Second); err != nil {
			t.Fatalf("director did not create %s: %v\n%s", dev, err, e.log)
		}
	}
}

func setup(t *testing.T, o opts) *env {
	t.Helper()
	e := newEnv(t)
	topo := e.topo
	var err error
	if o.clientMTU == 0 {
		o.clientMTU = 1500
	}
	if o.rsMTU == 0 {
		o.rsMTU = 1500
	}
	e.client, err = topo.AddHost("client")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		h, err := topo.AddHost(fmt.Sprintf("rs%d", i+1))
		if err != nil {
			t.Fatal(err)
		}
		e.rss = append(e.rss, &rs{
			name: fmt.Sprintf("RS%d", i+1), host: h, dev: fmt.Sprintf("tvr%d", i+1),
			v4: netip.AddrFrom4([4]byte{172, 16, 1, byte(5 + i)}), v6: netip.MustParseAddr(fmt.Sprintf("fd00:2::%d", 5+i)),
			clients: map[netip.Addr]int{},
		})
	}
	dir, err := os.MkdirTemp("", "tunvs-e2e-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.sock = filepath.Join(dir, "ctl.sock")
	args := []string{"run", "--socket", e.sock, "--log-level", "info",
		fmt.Sprintf("--link=name=tvc,mtu=%d,addr=10.0.0.1/24,addr=fd00:1::1/64,addr=%s/32,addr=%s/128", o.clientMTU, vip4, vip6),
		// Short timeouts, so the table drains within the test.
		"--timeouts=10,2,3", "--state-timeout=TIME_WAIT=2s", "--state-timeout=CLOSE=2s",
		"--state-timeout=LAST_ACK=2s", "--state-timeout=CLOSE_WAIT=2s",
		"--rule", fmt.Sprintf("-A -t %s:80 -s rr", vip4),
		"--rule", fmt.Sprintf("-A -u %s:53 -s rr", vip4),
		"--rule", fmt.Sprintf("-A -t [%s]:80 -s rr", vip6),
	}
	method := "-m"
	if o.fullNAT {
		method = "--fullnat"
		args = append(args,
			"--rule", fmt.Sprintf("--add-laddr -t %s:80 -z %s", vip4, lad4),
			"--rule", fmt.Sprintf("--add-laddr -u %s:53 -z %s", vip4, lad4),
			"--rule", fmt.Sprintf("--add-laddr -t [%s]:80 -z %s", vip6, lad6))
	}
	for _, r := range e.rss {
		args = append(args,
			fmt.Sprintf("--link=name=%s,mtu=%d,addr=172.16.1.3/32,addr=fd00:2::3/128", r.dev, o.rsMTU),
			fmt.Sprintf("--route=%s/32,dev=%s", r.v4, r.dev),
			fmt.Sprintf("--route=%s/128,dev=%s", r.v6, r.dev),
			"--rule", fmt.Sprintf("-a -t %s:80 -r %s:8080 %s", vip4, r.v4, method),
			"--rule", fmt.Sprintf("-a -u %s:53 -r %s:5353 %s", vip4, r.v4, method),
			"--rule", fmt.Sprintf("-a -t [%s]:80 -r [%s]:8080 %s", vip6, r.v6, method),
		)
	}
	args = append(args, o.extra...)
	if o.nofile > 0 {
		e.wrap = []string{"prlimit", fmt.Sprintf("--nofile=%d:%d", o.nofile, o.nofile), "--"}
	}
	e.startDaemon(args, "tvc", "tvr1", "tvr2")
	// The TUN devices move into the hosts; the director keeps their fds.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\ndirector log:\n%s", err, e.log)
		}
	}
	must(topo.Root().MoveLink("tvc", e.client))
	must(e.client.LinkUp("tvc"))
	must(e.client.AddAddr("tvc", cip4.String()+"/24"))
	must(e.client.AddAddr("tvc", cip6.String()+"/64"))
	advmss := func(on bool) []string {
		if on {
			return []string{"advmss", "1460"}
		}
		return nil
	}
	must(e.client.AddRoute(append([]string{"172.16.1.0/24", "dev", "tvc"}, advmss(o.clientAdvmss)...)...))
	must(e.client.AddRoute(append([]string{"fd00:100::/64", "dev", "tvc"}, advmss(o.clientAdvmss)...)...))
	for _, r := range e.rss {
		must(topo.Root().MoveLink(r.dev, r.host))
		must(r.host.LinkUp(r.dev))
		must(r.host.AddAddr(r.dev, r.v4.String()+"/24"))
		must(r.host.AddAddr(r.dev, r.v6.String()+"/64"))
		if !o.fullNAT {
			must(r.host.AddRoute(append([]string{"default", "dev", r.dev}, advmss(o.rsAdvmss)...)...))
			must(r.host.AddRoute(append([]string{"::/0", "dev", r.dev}, advmss(o.rsAdvmss)...)...))
		}
		e.startServers(r)
	}
	return e
}

func (e *env) startServers(r *rs) {
	t := e.t
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if r.fail.Load() {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
			r.mu.Lock()
			r.clients[ap.Addr().Unmap()]++
			r.mu.Unlock()
		}
		io.WriteString(w, r.name)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, req *http.Request) {
		w.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)) // 1 MiB
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, req *http.Request) {
		h := sha256.New()
		io.Copy(h, req.Body)
		io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	})
	r.mux = mux
	for _, network := range []string{"tcp4", "tcp6"} {
		e.serveHTTP(r, network)
	}
	var pc net.PacketConn
	if err := r.host.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", ":5353")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(r.name+":"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { pc.Close() })
}

// serveHTTP starts the real server's HTTP server on :8080 for a network.
func (e *env) serveHTTP(r *rs, network string) *http.Server {
	var ln net.Listener
	err := r.host.Do(func() (err error) {
		ln, err = net.Listen(network, ":8080")
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := &http.Server{Handler: r.mux, ReadHeaderTimeout: 10 * time.Second}
	r.httpSrvs = append(r.httpSrvs, srv)
	go srv.Serve(ln)
	return srv
}

func (e *env) close() {
	for _, r := range e.rss {
		for _, s := range r.httpSrvs {
			s.Close()
		}
	}
	if e.daemon != nil && e.daemon.Process != nil {
		e.daemon.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- e.daemon.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			e.daemon.Process.Kill()
			<-done
		}
	}
	if e.t.Failed() {
		e.t.Logf("director log:\n%s", e.log)
	}
}

// httpClient dials from the client's namespace: each socket is made on a
// thread inside it.
func (e *env) httpClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
				err = e.client.Do(func() error {
					var d net.Dialer
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

func (e *env) adm(args ...string) string {
	e.t.Helper()
	out, err := exec.Command(bin("tunvsadm"), append([]string{"--socket", e.sock}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("tunvsadm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// drain waits until the director's connection table is empty.
func (e *env) drain(within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		out := e.adm("-L", "-n", "-c")
		lines := strings.Count(strings.TrimSpace(out), "\n") - 1
		if lines == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("connection table did not drain in %v:\n%s", within, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}

// requestSplit makes n requests to url, each on a new connection, and
// checks that rr split them evenly between the real servers, and that the
// servers saw the client's own address (NAT mode keeps it).
func (e *env) requestSplit(c *http.Client, url string, client netip.Addr, n int) {
	e.t.Helper()
	counts := map[string]int{}
	for range n {
		counts[get(e.t, c, url)]++
	}
	for _, r := range e.rss {
		if counts[r.name] != n/2 {
			e.t.Errorf("%s: rr split %v, want %d each", url, counts, n/2)
		}
		r.mu.Lock()
		seen := r.clients[client]
		r.mu.Unlock()
		if seen != n/2 {
			e.t.Errorf("%s saw clients %v, want %d from %v", r.name, r.clients, n/2, client)
		}
	}
}

func runDirector(t *testing.T) {
	e := setup(t, opts{})
	c := e.httpClient()

	// 1000 HTTP requests, each on a new kernel TCP connection to the VIP.
	e.requestSplit(c, "http://172.16.1.100/", cip4, 1000)
	stats := e.adm("-L", "-n", "--stats", "--exact")
	for _, r := range e.rss {
		if !strings.Contains(stats, fmt.Sprintf("  -> %-28s      500", r.v4.String()+":8080")) {
			t.Errorf("stats do not show 500 connections for %s:\n%s", r.name, stats)
		}
	}
	e.drain(20 * time.Second)

	// UDP: 100 datagrams from 100 client sockets, echoed from the VIP.
	ucounts := e.udpEcho(100, 20000)
	if ucounts["RS1"] != 50 || ucounts["RS2"] != 50 {
		t.Errorf("UDP rr split %v, want 50/50", ucounts)
	}
	e.drain(20 * time.Second)

	// IPv6.
	e.requestSplit(c, "http://[fd00:100::100]/", cip6, 100)
	e.drain(20 * time.Second)

	// A service added while the director runs, with tunvsadm only.
	e.adm("-A", "-t", "172.16.1.100:8081", "-s", "wrr")
	e.adm("-a", "-t", "172.16.1.100:8081", "-r", "172.16.1.6:8080", "-m", "-w", "2")
	list := e.adm("-L", "-n")
	if !strings.Contains(list, "TCP  172.16.1.100:8081 wrr\n  -> 172.16.1.6:8080              Masq    2      0          0") {
		t.Errorf("tunvsadm -L -n does not show the new service:\n%s", list)
	}
	if got := get(t, c, "http://172.16.1.100:8081/"); got != "RS2" {
		t.Errorf("new service answered %q", got)
	}
	if out, err := exec.Command(bin("tunvsadm"), "--socket", e.sock, "-a", "-t", "172.16.1.100:8081", "-r", "172.16.1.6:8080", "-m").CombinedOutput(); err == nil || !strings.Contains(string(out), "exists") {
		t.Errorf("duplicate real server accepted: %v %s", err, out)
	}
	e.drain(20 * time.Second)
}

// udpEcho sends n datagrams to the VIP's UDP service, each from its own
// client port (base, base+1, ...), and counts the real servers that
// echoed them. Distinct source ports: an ephemeral port the kernel hands
// out again within the UDP timeout would join the old connection
// (rightly, as with IPVS) and skew the count.
func (e *env) udpEcho(n, base int) map[string]int {
	t := e.t
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		var conn net.Conn
		if err := e.client.Do(func() (err error) {
			d := net.Dialer{LocalAddr: &net.UDPAddr{IP: cip4.AsSlice(), Port: base + i}}
			conn, err = d.Dial("udp4", "172.16.1.100:53")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("ping %d", i)
		var reply string
		for try := 0; try < 3 && reply == ""; try++ {
			conn.Write([]byte(msg))
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 256)
			if n, err := conn.Read(buf); err == nil {
				reply = string(buf[:n])
			}
		}
		// A connected UDP socket only accepts datagrams from the VIP.
		name, rest, _ := strings.Cut(reply, ":")
		if rest != msg {
			t.Fatalf("datagram %d: reply %q", i, reply)
		}
		counts[name]++
		conn.Close()
	}
	return counts
}

// upload posts data to a real server through the VIP, which answers with
// its SHA-256.
func upload(t *testing.T, c *http.Client, data []byte) {
	t.Helper()
	sum := sha256.Sum256(data)
	resp, err := c.Post("http://172.16.1.100/upload", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != hex.EncodeToString(sum[:]) {
		t.Errorf("upload digest %q", b)
	}
}

// Path MTU, upload: the real servers sit on 1280-byte links but advertise
// a 1460-byte MSS, so the client sends full 1500-byte segments to the VIP.
// The director must answer them with "fragmentation needed" quoting what
// the client sent (client -> VIP), so that the client's kernel lowers its
// path MTU for the VIP; the 1 MiB upload then completes.
func runPMTUUpload(t *testing.T) {
	e := setup(t, opts{rsMTU: 1280, rsAdvmss: true})
	upload(t, e.httpClient(), bytes.Repeat([]byte("tunvs pmtu "), 100000))
	out, err := e.client.Run(context.Background(), "ip", "route", "get", vip4.String())
	if err != nil || !strings.Contains(out, "mtu 1280") {
		t.Errorf("the client learnt no path MTU for the VIP (%v):\n%s", err, out)
	}
}

// Path MTU, download: the mirror case. The client's link is small and it
// advertises a large MSS; the servers' full-size replies must be answered
// with "fragmentation needed" quoting server -> client, so that each
// server lowers its path MTU to the client. Two downloads, one per server.
func runPMTUDownload(t *testing.T) {
	e := setup(t, opts{clientMTU: 1280, clientAdvmss: true})
	c := e.httpClient()
	for range 2 {
		if n := len(get(t, c, "http://172.16.1.100/big")); n != 1<<20 {
			t.Errorf("download got %d bytes", n)
		}
	}
	for _, r := range e.rss {
		out, err := r.host.Run(context.Background(), "ip", "route", "get", cip4.String())
		if err != nil || !strings.Contains(out, "mtu 1280") {
			t.Errorf("%s learnt no path MTU for the client (%v):\n%s", r.name, err, out)
		}
	}
}

func TestDirector(t *testing.T) {
	inSandboxes(t, runDirector)
}

func TestPathMTU(t *testing.T) {
	inSandboxes(t, func(t *testing.T) {
		t.Run("upload", runPMTUUpload)
		t.Run("download", runPMTUDownload)
	})
}
