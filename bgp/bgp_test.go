package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/internal/waitfor"
)

// speakerProg is tunvs-bgp, built by TestMain (the tests link GoBGP for
// their router; package bgp does not).
var speakerProg string

func TestMain(m *testing.M) {
	if os.Getenv("TUNVS_BGP_STRANGER") != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "tunvs-bgp-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	speakerProg = filepath.Join(dir, SpeakerName)
	if out, err := exec.Command("go", "build", "-o", speakerProg, "../cmd/tunvs-bgp").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ../cmd/tunvs-bgp: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// quiet is a GoBGP logger that says nothing, for the test's router.
type quiet struct{}

func (quiet) Panic(msg string, _ gobgplog.Fields) { panic(msg) }
func (quiet) Fatal(string, gobgplog.Fields)       {}
func (quiet) Error(string, gobgplog.Fields)       {}
func (quiet) Warn(string, gobgplog.Fields)        {}
func (quiet) Info(string, gobgplog.Fields)        {}
func (quiet) Debug(string, gobgplog.Fields)       {}
func (quiet) SetLevel(gobgplog.LogLevel)          {}
func (quiet) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }

func TestParseSpec(t *testing.T) {
	c, err := ParseSpec("as=65001,peer=10.1.0.1,peer=10.1.0.2,peer-as=65000,next-hop=10.1.0.11,hold=3s")
	if err != nil {
		t.Fatal(err)
	}
	if c.AS != 65001 || len(c.Peers) != 2 || c.Peers[1] != (Peer{netip.MustParseAddr("10.1.0.2"), 65000, 179}) ||
		c.NextHop != netip.MustParseAddr("10.1.0.11") || c.Hold != 3*time.Second {
		t.Fatalf("%+v", c)
	}
	for spec, want := range map[string]string{
		"peer=10.1.0.1,peer-as=65000":                "as= is missing",
		"as=65001,peer-as=65000":                     "peer= is missing",
		"as=65001,peer=10.1.0.1":                     "peer-as= is missing",
		"as=0,peer=10.1.0.1,peer-as=1":               "AS 0 is reserved",
		"as=1,peer=10.1.0.1,peer-as=1,hold=1s":       "hold=1s: want 3s",
		"as=1,peer=10.1.0.1,peer-as=1,next-hop=::1":  "IPv6",
		"as=1,peer=10.1.0.1,peer-as=1,router-id=::1": "IPv4",
		"as=1,peer=x,peer-as=1":                      "peer=x",
		"as=1,peer=10.1.0.1,peer-as=1,colour=red":    `unknown key "colour"`,
		"as=1,peer":                           "not key=value",
		"as=x,peer=10.1.0.1,peer-as=1":        "as=x: want an AS number",
		"as=1,peer=10.1.0.1,peer-as=1,port=0": "port=0: want a port",
		"as=1,peer=10.1.0.1,peer-as=1,hold=3": "hold=3: want 3s",
	} {
		if _, err := ParseSpec(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", spec, err, want)
		}
	}
}

// router is a GoBGP server standing in for the router: it listens on the
// loopback and accepts the speaker's session from src.
func router(t *testing.T, listen, src netip.Addr, peerAS uint32) (*server.BgpServer, int) {
	t.Helper()
	// A free port on listen, released for GoBGP to take.
	l, err := net.Listen("tcp", netip.AddrPortFrom(listen, 0).String())
	if err != nil {
		t.Skipf("loopback: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := server.NewBgpServer(server.LoggerOption(quiet{}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: "10.9.9.9",
		ListenPort: int32(port), ListenAddresses: []string{listen.String()}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: src.String(), PeerAsn: peerAS},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 3, KeepaliveInterval: 1}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.StopBgp(context.Background(), &api.StopBgpRequest{}) })
	return r, port
}

// routes is what r has learnt: prefix -> next hop.
func routes(r *server.BgpServer) map[string]string {
	out := map[string]string{}
	for _, f := range []*api.Family{familyV4, familyV6} {
		r.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f}, func(d *api.Destination) {
			for _, p := range d.Paths {
				nh := ""
				for _, a := range p.Pattrs {
					var n api.NextHopAttribute
					var mp api.MpReachNLRIAttribute
					if a.UnmarshalTo(&n) == nil {
						nh = n.NextHop
					} else if a.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0 {
						nh = mp.NextHops[0]
					}
				}
				out[d.Prefix] = nh
			}
		})
	}
	return out
}

// TestAnnounceWithdraw runs the speaker (the tunvs-bgp process) against
// a GoBGP router over the kernel loopback (Dial stands in for the
// director's stack: it dials from src, as the director dials from its
// DIP): the VIPs arrive with the director's next hop, a VIP taken out of
// Set is withdrawn; the speaker process killed, the router loses the
// routes, the process is started again, counted, and the next Set
// announces again; Close ends the session, which drops the rest.
func TestAnnounceWithdraw(t *testing.T) {
	listen, src := netip.MustParseAddr("127.0.0.100"), netip.MustParseAddr("127.0.0.101")
	r, port := router(t, listen, src, 65001)
	var dialed atomic.Int32
	var logs strings.Builder
	var logMu sync.Mutex
	s, err := Start(Config{
		AS: 65001, Peers: []Peer{{Addr: listen, AS: 65000, Port: uint16(port)}},
		NextHop: netip.MustParseAddr("10.1.0.11"), NextHop6: netip.MustParseAddr("fd00::11"), Hold: 3 * time.Second,
		Dial: func(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
			dialed.Add(1)
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			return d.DialContext(ctx, "tcp", to.String())
		},
		Log:     zerolog.New(lockedWriter{&logMu, &logs}),
		Program: speakerProg,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitfor.Until(t, 30*time.Second, "session established", func() bool { return s.Peers()[0].State == "ESTABLISHED" })
	vip, vip6 := netip.MustParseAddr("172.16.1.100"), netip.MustParseAddr("fd00::100")
	if err := s.Set([]netip.Addr{vip, vip6, netip.MustParseAddr("172.16.1.101")}); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "three routes", func() bool { return len(routes(r)) == 3 })
	got := routes(r)
	if got["172.16.1.100/32"] != "10.1.0.11" || got["fd00::100/128"] != "fd00::11" {
		t.Fatalf("router learnt %v", got)
	}
	if err := s.Set([]netip.Addr{vip}); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "withdrawal", func() bool { return len(routes(r)) == 1 })
	if a := s.Announced(); len(a) != 1 || a[0] != vip {
		t.Fatalf("announced %v", a)
	}

	// The speaker process dies: its sessions go with it, and so do the
	// router's routes; it is started again.
	s.mu.Lock()
	proc := s.p.cmd.Process
	s.mu.Unlock()
	pid := proc.Pid
	if err := proc.Kill(); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "routes gone with the speaker", func() bool { return len(routes(r)) == 0 })
	waitfor.Until(t, 30*time.Second, "the speaker restarted", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.restarts == 1 && s.p != nil && s.p.cmd.Process.Pid != pid
	})
	waitfor.Until(t, 30*time.Second, "session established again", func() bool { return s.Peers()[0].State == "ESTABLISHED" })
	if err := s.Set([]netip.Addr{vip}); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "the route back", func() bool { return routes(r)["172.16.1.100/32"] == "10.1.0.11" })
	logMu.Lock()
	for _, ev := range []string{"bgp_established", "bgp_announce", "bgp_withdraw", "bgp_speaker_exited", "bgp_speaker_started"} {
		if !strings.Contains(logs.String(), `"event":"`+ev+`"`) {
			t.Errorf("no %s in the log:\n%s", ev, logs.String())
		}
	}
	logMu.Unlock()

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, 30*time.Second, "routes gone after Close", func() bool { return len(routes(r)) == 0 })
	if dialed.Load() == 0 {
		t.Fatal("the session did not go through Dial")
	}
	if err := s.Set([]netip.Addr{vip}); err == nil {
		t.Fatal("Set after Close succeeded")
	}
	s.mu.Lock()
	p := s.p
	s.mu.Unlock()
	select {
	case <-p.exited:
	default:
		t.Fatal("the speaker process runs after Close")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestStartRefuses(t *testing.T) {
	t.Setenv("PATH", "")
	dial := func(context.Context, netip.AddrPort) (net.Conn, error) { return nil, nil }
	peers := []Peer{{Addr: netip.MustParseAddr("10.0.0.1"), AS: 2}}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{AS: 1, Peers: peers}, "no Dial"},
		{Config{AS: 1, Dial: dial}, "at least one peer"},
		{Config{AS: 1, Peers: peers, Dial: dial}, "no router-id"},
		// No tunvs-bgp beside the test binary, none on PATH.
		{Config{AS: 1, Peers: peers, Dial: dial, NextHop: netip.MustParseAddr("10.0.0.2")}, "`make build` puts it in bin/"},
	} {
		if _, err := Start(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestRelayRefusesStrangers: a connection to the relay from its loopback
// address but not from the speaker process (here this test's process; the
// stranger is a child process, this test binary again: any program on
// the machine could do it) is closed at once, without a connection to the
// router being dialled.
func TestRelayRefusesStrangers(t *testing.T) {
	loop := netip.MustParseAddr("127.0.0.77")
	dialed := make(chan struct{}, 1)
	r, err := newRelay(loop, netip.MustParseAddrPort("127.0.0.78:179"), func(context.Context, netip.AddrPort) (net.Conn, error) {
		dialed <- struct{}{}
		return nil, errors.New("no router here")
	}, zerolog.Nop())
	if err != nil {
		t.Skipf("loopback: %v", err)
	}
	// This process stands for the speaker.
	r.owner.Store(int64(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)
	defer r.close()
	// Another process, bound to the relay's address: refused, not dialled.
	cmd := exec.Command(os.Args[0], "-test.run=^TestStrangerHelper$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("TUNVS_BGP_STRANGER=%s %d", loop, r.port()))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stranger: closed") {
		t.Fatalf("a stranger's connection: %v %s", err, out)
	}
	select {
	case <-dialed:
		t.Fatal("the relay dialled the router for a stranger")
	default:
	}
	// This process, from the same address: accepted and dialled.
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(loop, 0))}
	c, err := d.Dial("tcp", netip.AddrPortFrom(loop, r.port()).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-dialed:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not dial the router for this process's connection")
	}
}

// TestStrangerHelper is the other process of TestRelayRefusesStrangers.
func TestStrangerHelper(t *testing.T) {
	v := os.Getenv("TUNVS_BGP_STRANGER")
	if v == "" {
		t.Skip("run by TestRelayRefusesStrangers")
	}
	addr, port, _ := strings.Cut(v, " ")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}
	c, err := d.Dial("tcp", net.JoinHostPort(addr, port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		fmt.Println("stranger: closed")
	} else {
		fmt.Println("stranger: open", n, err)
	}
}
