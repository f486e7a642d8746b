package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Serve is `tunvs lab serve`: the real servers' HTTP server. It answers
// every request with name and a newline, and logs who asked (the client's
// own address: NAT mode keeps it; full NAT's local address, and the
// client a PROXY protocol header named, proxyserve.go). A request with
// ?bytes=N (up to MaxServeBytes) gets N bytes more after the name, a
// download to measure the lab with (curl -o /dev/null -w
// '%{speed_download}').
func Serve(ctx context.Context, name, listen string, log io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	return serveOn(ctx, ln, name, log)
}

func serveOn(ctx context.Context, ln net.Listener, name string, log io.Writer) error {
	var mu sync.Mutex
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			fmt.Fprintf(log, "%s %s %s %s%s\n", time.Now().Format("15:04:05.000"), r.RemoteAddr, r.Method, r.URL.Path, proxyNote(r.Context()))
			mu.Unlock()
			n, err := downloadSize(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Length", strconv.FormatInt(int64(len(name))+1+n, 10))
			io.WriteString(w, name+"\n")
			io.CopyN(w, zeros{}, n)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       proxyConnContext,
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(proxyListener{ln}); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// MaxServeBytes bounds a download from the lab's real servers (?bytes=).
const MaxServeBytes = 1 << 40

// downloadSize is the ?bytes= of r, 0 without it.
func downloadSize(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("bytes")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > MaxServeBytes {
		return 0, fmt.Errorf("bytes=%q: want 0 to %d", v, int64(MaxServeBytes))
	}
	return n, nil
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Fetch is `tunvs lab fetch`: one HTTP/1.1 request on a new connection; it
// prints the body at once and keeps the connection open for hold before
// closing it, so that the director's table can be looked at while the
// connection is ESTABLISHED.
func Fetch(ctx context.Context, url string, hold time.Duration, w io.Writer) error {
	u, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return fmt.Errorf("fetch: %q: only http:// URLs", url)
	}
	hostport, path, _ := strings.Cut(u, "/")
	if !strings.Contains(hostport, ":") {
		hostport += ":80"
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", hostport)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10*time.Second + hold))
	fmt.Fprintf(c, "GET /%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tunvs-lab\r\n\r\n", path, hostport)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s (from %s, local %s)\n", strings.TrimSpace(string(b)), c.RemoteAddr(), c.LocalAddr())
	if f, ok := w.(interface{ Sync() error }); ok {
		f.Sync()
	}
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	return nil
}
