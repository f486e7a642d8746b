package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// The lab's real server sends N bytes after its name for ?bytes=N (the
// download the README measures the lab with) and refuses a bad N.
func TestServeBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, "Proxy01 Real Server", io.Discard) }()
	defer func() {
		cancel()
		<-done
	}()
	url := "http://" + ln.Addr().String() + "/"
	for _, c := range []struct {
		query  string
		status int
		length int64
	}{
		{"", 200, 20},
		{"?bytes=0", 200, 20},
		{"?bytes=3000000", 200, 20 + 3000000},
		{"?bytes=-1", 400, -1},
		{"?bytes=lots", 400, -1},
		{"?bytes=1099511627777", 400, -1},
	} {
		resp, err := http.Get(url + c.query)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != c.status || (c.length >= 0 && (n != c.length || resp.ContentLength != c.length)) {
			t.Errorf("%s: status %d, %d bytes (Content-Length %d), %v; want %d, %d", c.query, resp.StatusCode, n, resp.ContentLength, err, c.status, c.length)
		}
	}
}
