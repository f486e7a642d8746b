package health_test

import (
	"errors"
	. "github.com/tunvs/tunvs/health"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
)

func TestParse(t *testing.T) {
	in := `# health checks
--check -t 172.16.1.100:80 tcp interval=1s fall=2 rise=2 on-fail=inhibit sorry=172.16.1.9:80 quorum=1
--check -t 172.16.1.100:80 -r 172.16.1.5:80 http path=/ status=200-299 interval=2s timeout=1s fall=3 rise=2
--check -t 172.16.1.100:80 -r 172.16.1.6 http path=/health host=www.example.com status=200,301-302 digest=md5:9e107d9d372bb6826bd81d3542a419d6
-t 172.16.1.100:80 -r 172.16.1.7:8080 misc cmd="/usr/local/bin/check \"x y\"" dynamic timeout=2.5

--check -u 172.16.1.100:53 udp send=hex:0001 expect='ok' interval=500ms warmup=3 expire on-fail=remove hysteresis=1 quorum=2 sorry-weight=5 sorry=172.16.1.9
--check -u 172.16.1.100:53 -r 172.16.1.5:53 ping alpha
--check -u 172.16.1.100:53 -r 172.16.1.6:53 none
--check -t [2001:db8::100]:443 -r [2001:db8::5]:443 https digest=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 port=8443
`
	cfg, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 3 {
		t.Fatalf("%d services", len(cfg.Services))
	}
	web := cfg.Services[0]
	want := ServiceConfig{
		Proto: nat.ProtoTCP, VIP: netip.MustParseAddrPort("172.16.1.100:80"), OnFail: Inhibit,
		Sorry: netip.MustParseAddrPort("172.16.1.9:80"), Quorum: 1,
		Default: &Check{Kind: KindTCP, Interval: time.Second, Fall: 2, Rise: 2},
	}
	got := web
	got.Servers = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("service:\n got %+v\nwant %+v", got, want)
	}
	if len(web.Servers) != 3 {
		t.Fatalf("servers %+v", web.Servers)
	}
	if s := web.Servers[0]; s.Addr != netip.MustParseAddrPort("172.16.1.5:80") ||
		!reflect.DeepEqual(*s.Check, Check{Kind: KindHTTP, Path: "/", Status: []StatusRange{{Lo: 200, Hi: 299}}, Interval: 2 * time.Second, Timeout: time.Second, Fall: 3, Rise: 2}) {
		t.Errorf("server 0: %v %+v", s.Addr, *s.Check)
	}
	if s := web.Servers[1]; s.Addr != netip.MustParseAddrPort("172.16.1.6:80") || s.Check.VHost != "www.example.com" ||
		!reflect.DeepEqual(s.Check.Status, []StatusRange{{Lo: 200, Hi: 200}, {Lo: 301, Hi: 302}}) || s.Check.DigestAlg != DigestMD5 || len(s.Check.Digest) != 16 {
		t.Errorf("server 1 (port from the service): %v %+v", s.Addr, *s.Check)
	}
	if c := web.Servers[2].Check; c.Command != `/usr/local/bin/check "x y"` || !c.Dynamic || c.Timeout != 2500*time.Millisecond {
		t.Errorf("misc %+v", *c)
	}
	dns := cfg.Services[1]
	if dns.Proto != nat.ProtoUDP || !dns.Expire || dns.OnFail != Remove || dns.Quorum != 2 || dns.Hysteresis != 1 ||
		dns.SorryWeight != 5 || dns.Sorry != netip.MustParseAddrPort("172.16.1.9:53") ||
		string(dns.Default.Payload) != "\x00\x01" || string(dns.Default.Expect) != "ok" || dns.Default.Warmup != 3*time.Second {
		t.Errorf("udp service %+v default %+v", dns, *dns.Default)
	}
	if c := dns.Servers[0].Check; c.Kind != KindPing || !c.StartDown {
		t.Errorf("ping %+v", *c)
	}
	if c := dns.Servers[1].Check; c.Kind != KindNone {
		t.Errorf("none %+v", *c)
	}
	if c := cfg.Services[2].Servers[0].Check; c.Kind != KindHTTPS || c.Port != 8443 || c.DigestAlg != DigestSHA256 {
		t.Errorf("https %+v", *c)
	}
	// Merging: a server's check takes the service default's unset fields.
	m, _ := web.Servers[1].Check.Merge(web.Default).WithDefaults()
	if m.Interval != time.Second || m.Fall != 2 || m.Timeout != time.Second || m.Path != "/health" {
		t.Errorf("merged %+v", m)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"--check tcp", "no service"},
		{"--check -t 172.16.1.100 tcp", `service "172.16.1.100": want ADDR:PORT`},
		{"--check -t 172.16.1.100:80 -r 172.16.1.5:80", "no check for the real server"},
		{"--check -t 172.16.1.100:80 -r bogus tcp", `real server "bogus"`},
		{"--check -t 172.16.1.100:80 -r 2001:db8::5 tcp", "address family"},
		{"--check -t 172.16.1.100:80 tcp http", "two check kinds"},
		{"--check -t 172.16.1.100:80 smtp", `unknown check kind or option "smtp"`},
		{"--check -t 172.16.1.100:80 tcp colour=blue", `unknown option "colour"`},
		{"--check -t 172.16.1.100:80 tcp interval=soon", "interval=soon: want a duration"},
		{"--check -t 172.16.1.100:80 tcp fall=0", "fall=0: want a number from 1"},
		{"--check -t 172.16.1.100:80 tcp interval", "interval needs a value"},
		{"--check -t 172.16.1.100:80 http status=200-199", "status=200-199"},
		{"--check -t 172.16.1.100:80 http path=health", "must start with /"},
		{"--check -t 172.16.1.100:80 http digest=md5:abc", "digest=md5:abc"},
		{"--check -t 172.16.1.100:80 http digest=xyz", "digest=xyz"},
		{"--check -t 172.16.1.100:80 -r 172.16.1.5 tcp on-fail=inhibit", "on-fail=inhibit is a service option"},
		{"--check -t 172.16.1.100:80 on-fail=drop", "on-fail=drop: want inhibit or remove"},
		{"--check -t 172.16.1.100:80 quorum=x", "quorum=x"},
		{"--check -t 172.16.1.100:80 misc cmd='unterminated", "unterminated"},
		{"--check -t 172.16.1.100:80 udp send=hex:zz", "hex"},
		{"--check -t 172.16.1.100:80", "nothing to set"},
		{"--check -t 172.16.1.100:80 fall=2", "without a kind"},
	} {
		_, err := Parse(strings.NewReader("# first line\n" + tc.line))
		var le *LineError
		if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want line 2 and %q", tc.line, err, tc.want)
		}
	}
	// Twice the same thing.
	_, err := ParseLines([]string{
		"-t 172.16.1.100:80 -r 172.16.1.5 tcp",
		"-t 172.16.1.100:80 -r 172.16.1.5:80 http",
	})
	if err == nil || !strings.Contains(err.Error(), "line 2: real server 172.16.1.5:80 already has a check") {
		t.Errorf("duplicate: %v", err)
	}
	_, err = ParseLines([]string{"-t 172.16.1.100:80 tcp", "-t 172.16.1.100:80 http"})
	if err == nil || !strings.Contains(err.Error(), "already has a default") {
		t.Errorf("duplicate default: %v", err)
	}
	if !IsCheckLine("--check -t 1.2.3.4:80 tcp") || IsCheckLine("-A -t 1.2.3.4:80 -s rr") {
		t.Error("IsCheckLine")
	}
}

// A rules file holds ipvsadm lines and check lines; each parser sees its
// own with the file's line numbers.
func TestSplitRules(t *testing.T) {
	file := "-A -t 172.16.1.100:80 -s rr\n-a -t 172.16.1.100:80 -r 172.16.1.5 -m\n--check -t 172.16.1.100:80 tcp\n--check -t 172.16.1.100:80 -r 172.16.1.5 bogus=1\n"
	ipvs, checks := SplitRules(file)
	if ipvs != "-A -t 172.16.1.100:80 -s rr\n-a -t 172.16.1.100:80 -r 172.16.1.5 -m\n\n\n" {
		t.Errorf("ipvsadm part %q", ipvs)
	}
	_, err := Parse(strings.NewReader(checks))
	if err == nil || err.Error() != `line 4: unknown option "bogus"` {
		t.Errorf("error %v", err)
	}
	var p Parser
	if err := p.Line("--check -t 172.16.1.100:80 tcp"); err != nil {
		t.Fatal(err)
	}
	if err := p.Line("-t 172.16.1.100:80 -r 172.16.1.5 http"); err != nil {
		t.Fatal(err)
	}
	if c := p.Config(); len(c.Services) != 1 || len(c.Services[0].Servers) != 1 {
		t.Errorf("parser %+v", c)
	}
}
