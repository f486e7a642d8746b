package lab

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// TestServeProxyProtocol: the lab's real server answers a request that
// starts with a PROXY header tunvs makes (v1, v2, IPv4 and IPv6) and logs
// the client it names; a plain request is answered and logged as before.
func TestServeProxyProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// A file, as `tunvs lab serve`'s stdout is (and no lock to share
	// with the server's goroutines).
	log, err := os.Create(filepath.Join(t.TempDir(), "rs1.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	logText := func() string {
		b, _ := os.ReadFile(log.Name())
		return string(b)
	}
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, "Proxy01 Real Server", log) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	vip := netip.MustParseAddrPort("172.16.1.100:80")
	for _, tc := range []struct {
		name   string
		header []byte
		want   string
	}{
		{"plain", nil, "GET /plain\n"},
		{"v1", nat.AppendProxyHeader(nil, 1, netip.MustParseAddrPort("10.0.0.10:40000"), vip), "GET /v1 (PROXY v1: client 10.0.0.10:40000)\n"},
		{"v2", nat.AppendProxyHeader(nil, 2, netip.MustParseAddrPort("10.0.0.11:40001"), vip), "GET /v2 (PROXY v2: client 10.0.0.11:40001)\n"},
		{"v2-6", nat.AppendProxyHeader(nil, 2, netip.MustParseAddrPort("[2001:db8::10]:40002"), netip.MustParseAddrPort("[2001:db8::100]:80")), "GET /v2-6 (PROXY v2: client [2001:db8::10]:40002)\n"},
		{"v1-unknown", nat.AppendProxyHeader(nil, 1, netip.AddrPort{}, vip), "GET /v1-unknown (PROXY v1: client unknown)\n"},
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		req := append(tc.header, "GET /"+tc.name+" HTTP/1.1\r\nHost: rs1\r\nConnection: close\r\n\r\n"...)
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", tc.name, resp, err)
			continue
		}
		if l := logText(); !strings.Contains(l, tc.want) {
			t.Errorf("%s: the log has no %q:\n%s", tc.name, tc.want, l)
		}
	}
}
