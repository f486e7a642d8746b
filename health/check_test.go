package health_test

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	. "github.com/tunvs/tunvs/health"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/nat"
)

// Each kind of check, run once from the director's stack against the
// lab's real servers: what passes and what fails.
func TestProbes(t *testing.T) {
	tl := newTestLab(t, 1)
	s := tl.Director.Host.Stack()
	srv := tl.rs[0].addr
	body := tl.rs[0].name + " host=www.example.com\n"
	md := md5.Sum([]byte(body))
	sh := sha256.Sum256([]byte(body))
	nobody := netip.AddrPortFrom(netip.MustParseAddr("172.16.1.77"), testPort) // no host there
	closed := netip.AddrPortFrom(srv.Addr(), 9)                                // a host, no listener
	cases := []struct {
		name   string
		to     netip.AddrPort
		c      Check
		ok     bool
		weight int
		errHas string
	}{
		{"tcp", srv, Check{Kind: KindTCP}, true, -1, ""},
		{"tcp refused", closed, Check{Kind: KindTCP}, false, -1, "refused"},
		{"tcp no host", nobody, Check{Kind: KindTCP}, false, -1, "deadline"},
		{"http", srv, Check{Kind: KindHTTP}, true, -1, ""},
		{"http status", srv, Check{Kind: KindHTTP, Status: []StatusRange{{Lo: 300, Hi: 399}}}, false, -1, "status 200"},
		{"http md5", srv, Check{Kind: KindHTTP, VHost: "www.example.com", DigestAlg: DigestMD5, Digest: md[:]}, true, -1, ""},
		{"http md5 wrong vhost", srv, Check{Kind: KindHTTP, DigestAlg: DigestMD5, Digest: md[:]}, false, -1, "md5"},
		{"http sha256", srv, Check{Kind: KindHTTP, VHost: "www.example.com", DigestAlg: DigestSHA256, Digest: sh[:]}, true, -1, ""},
		{"http contains", srv, Check{Kind: KindHTTP, Contains: "Proxy01"}, true, -1, ""},
		{"http not contains", srv, Check{Kind: KindHTTP, Contains: "Proxy02"}, false, -1, "contain"},
		{"http refused", closed, Check{Kind: KindHTTP}, false, -1, "refused"},
		{"udp", srv, Check{Kind: KindUDP, Payload: []byte("ping"), Expect: []byte("Proxy01 Real Server ping")}, true, -1, ""},
		{"udp any reply", srv, Check{Kind: KindUDP}, true, -1, ""},
		{"udp wrong reply", srv, Check{Kind: KindUDP, Payload: []byte("x"), Expect: []byte("pong")}, false, -1, "does not contain"},
		{"udp no reply", nobody, Check{Kind: KindUDP}, false, -1, ""},
		{"ping", srv, Check{Kind: KindPing}, true, -1, ""},
		{"ping no host", nobody, Check{Kind: KindPing}, false, -1, "no reply"},
		{"misc 0", srv, Check{Kind: KindMisc, Command: `test "$TUNVS_SERVER" = 172.16.1.5:8080`}, true, -1, ""},
		{"misc 1", srv, Check{Kind: KindMisc, Command: "echo broken; exit 1"}, false, -1, "exit status 1: broken"},
		{"misc 3 static", srv, Check{Kind: KindMisc, Command: "exit 3"}, false, -1, "exit status 3"},
		{"misc dynamic 7", srv, Check{Kind: KindMisc, Command: "exit 7", Dynamic: true}, true, 5, ""},
		{"misc dynamic 1", srv, Check{Kind: KindMisc, Command: "exit 1", Dynamic: true}, false, -1, "exit status 1"},
		{"misc timeout", srv, Check{Kind: KindMisc, Command: "sleep 10"}, false, -1, "deadline"},
		{"misc timeout grandchild", srv, Check{Kind: KindMisc, Command: "sleep 10 & sleep 10; wait"}, false, -1, "deadline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.c.WithDefaults()
			if err != nil {
				t.Fatal(err)
			}
			timeout := 300 * time.Millisecond
			if tc.c.Kind == KindMisc && !strings.Contains(tc.name, "timeout") {
				timeout = 3 * time.Second // forking a shell on a loaded machine
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			weight, err := RunProbe(ctx, s, "TCP "+testVIP.String(), tc.to, c)
			if el := time.Since(start); el > timeout+500*time.Millisecond {
				t.Errorf("took %v", el)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("ok=%v, want %v (err %v)", err == nil, tc.ok, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not mention %q", err, tc.errHas)
			}
			if weight != tc.weight {
				t.Errorf("weight %d, want %d", weight, tc.weight)
			}
		})
	}
	if n := OpenConns(); n != 0 {
		t.Errorf("%d check sockets open after the probes", n)
	}
}

// New refuses what cannot work, with the service named.
func TestNewErrors(t *testing.T) {
	tl := newTestLab(t, 2)
	o := tl.opts(t, nil)
	rs1 := tl.rs[0].addr
	for _, tc := range []struct {
		cfg  ServiceConfig
		want string
	}{
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: netip.MustParseAddrPort("172.16.1.100:81"), Default: &Check{Kind: KindTCP}}, "no such virtual service"},
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: testVIP, Servers: []ServerConfig{{Addr: netip.MustParseAddrPort("172.16.1.9:8080"), Check: &Check{Kind: KindTCP}}}}, "not a real server"},
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: testVIP, Servers: []ServerConfig{{Addr: rs1}}}, "no check and no service default"},
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: testVIP, Default: &Check{Kind: KindTCP, Interval: time.Second, Timeout: 2 * time.Second}}, "longer than interval"},
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: testVIP, Default: &Check{Kind: KindMisc}}, "without cmd"},
		{ServiceConfig{Proto: nat.ProtoTCP, VIP: testVIP, Sorry: rs1, Default: &Check{Kind: KindTCP}}, "also a real server"},
	} {
		_, err := New(Config{Services: []ServiceConfig{tc.cfg}}, o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	if _, has := any(tl.NAT()).(ConnExpirer); !has {
		_, err := New(Config{Services: []ServiceConfig{{Proto: nat.ProtoTCP, VIP: testVIP, Expire: true, Default: &Check{Kind: KindTCP}}}}, o)
		if err == nil || !strings.Contains(err.Error(), "ExpireDest") {
			t.Errorf("expire without an expirer: %v", err)
		}
	}
	_ = lab.VIP
}
