package health_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	. "github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/lab"
)

// An https check (SSL_GET) against a real server with a self-signed
// certificate, which keepalived does not verify either; the SNI is the
// virtual host.
func TestHTTPSProbe(t *testing.T) {
	tl := newTestLab(t, 1)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "www.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"www.example.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(lab.RealServerAddr(0), 8443)
	ln, err := listen(tl.Servers[0], addr)
	if err != nil {
		t.Fatal(err)
	}
	sni := make(chan string, 1)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case sni <- h.ServerName:
			default:
			}
			return nil, nil
		},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure "+r.Host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, cfg))
	defer srv.Close()
	s := tl.Director.Host.Stack()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, _ := Check{Kind: KindHTTPS, VHost: "www.example.com:8443", Contains: "secure www.example.com:8443"}.WithDefaults()
	if _, err := RunProbe(ctx, s, "TCP x", addr, c); err != nil {
		t.Fatal(err)
	}
	if got := <-sni; got != "www.example.com" {
		t.Errorf("SNI %q", got)
	}
	// Plain HTTP against the TLS port fails with the status the Go
	// server answers plain requests with.
	c, _ = Check{Kind: KindHTTP}.WithDefaults()
	if _, err := RunProbe(ctx, s, "TCP x", addr, c); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("http to an https port: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"--check -t 172.16.1.100:80 tcp interval=1s fall=2 rise=2 on-fail=inhibit sorry=172.16.1.9:80 quorum=1",
		"--check -t 172.16.1.100:80 -r 172.16.1.5:80 http path=/ status=200-299 digest=md5:9e107d9d372bb6826bd81d3542a419d6",
		`-u [2001:db8::1]:53 -r [2001:db8::5] udp send=hex:00 expect="a b" cmd='x'`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cfg, err := ParseLines([]string{line})
		if err != nil {
			return
		}
		for _, s := range cfg.Services {
			if s.Default != nil && s.Default.Kind == "" {
				t.Errorf("default without a kind: %q", line)
			}
		}
	})
}
