package health

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxBody bounds what an HTTP check reads (and digests).
const maxBody = 16 << 20

// result of one check run.
type result struct {
	err error
	// weight, from a dynamic misc check, or -1.
	weight int
}

// prober runs one check against one target.
type prober interface {
	probe(ctx context.Context) result
}

func ok() result            { return result{weight: -1} }
func fail(err error) result { return result{err: err, weight: -1} }

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// openConns counts the check sockets open now (tests assert it returns to
// zero).
var openConns atomic.Int64

// dialTCP connects from the director's stack, as gonet.DialContextTCP
// does, but with SO_LINGER 0: closing the check's connection resets it, so
// no check leaves an endpoint in TIME_WAIT on the director (haproxy's
// checks do the same, "nolinger").
func dialTCP(ctx context.Context, s *stack.Stack, to netip.AddrPort) (net.Conn, error) {
	var wq waiter.Queue
	ep, e := s.NewEndpoint(tcp.ProtocolNumber, netProto(to.Addr()), &wq)
	if e != nil {
		return nil, fmt.Errorf("dial tcp %v: %s", to, e)
	}
	ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	we, ch := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	e = ep.Connect(fullAddr(to))
	if _, started := e.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, fmt.Errorf("dial tcp %v: %w", to, ctx.Err())
		case <-ch:
		}
		e = ep.LastError()
	}
	if e != nil {
		ep.Close()
		return nil, fmt.Errorf("dial tcp %v: %s", to, e)
	}
	openConns.Add(1)
	return &countedConn{Conn: gonet.NewTCPConn(&wq, ep)}, nil
}

type countedConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		openConns.Add(-1)
	}
	return c.Conn.Close()
}

// tcpProbe is TCP_CHECK: connect, close.
type tcpProbe struct {
	s  *stack.Stack
	to netip.AddrPort
}

func (p *tcpProbe) probe(ctx context.Context) result {
	c, err := dialTCP(ctx, p.s, p.to)
	if err != nil {
		return fail(err)
	}
	c.Close()
	return ok()
}

// httpProbe is HTTP_GET / SSL_GET.
type httpProbe struct {
	c   Check
	tr  *http.Transport
	url string
}

func newHTTPProbe(s *stack.Stack, to netip.AddrPort, c Check) *httpProbe {
	scheme := "http"
	if c.Kind == KindHTTPS {
		scheme = "https"
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialTCP(ctx, s, to)
		},
		// A new connection per check, as keepalived's.
		DisableKeepAlives: true,
		// keepalived's SSL_GET does not verify the certificate either.
		TLSClientConfig:        &tls.Config{InsecureSkipVerify: true, ServerName: hostOnly(c.VHost)}, //nolint:gosec
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &httpProbe{c: c, tr: tr, url: scheme + "://" + to.String() + c.Path}
}

// hostOnly strips a port from a Host header value, for SNI.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

func (p *httpProbe) probe(ctx context.Context) result {
	defer p.tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fail(err)
	}
	if p.c.VHost != "" {
		req.Host = p.c.VHost
	}
	req.Header.Set("User-Agent", "tunvs-health")
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	good := false
	for _, r := range p.c.Status {
		if resp.StatusCode >= r.Lo && resp.StatusCode <= r.Hi {
			good = true
			break
		}
	}
	if !good {
		return fail(fmt.Errorf("http status %d", resp.StatusCode))
	}
	if p.c.Digest == nil && p.c.Contains == "" {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return ok()
	}
	var h hash.Hash
	switch p.c.DigestAlg {
	case DigestMD5:
		h = md5.New() //nolint:gosec // keepalived's digest is MD5
	case DigestSHA256:
		h = sha256.New()
	}
	var body bytes.Buffer
	w := io.Writer(&body)
	if h != nil {
		w = io.MultiWriter(&body, h)
	}
	if _, err := io.Copy(w, io.LimitReader(resp.Body, maxBody)); err != nil {
		return fail(fmt.Errorf("http body: %w", err))
	}
	if h != nil {
		if sum := h.Sum(nil); !bytes.Equal(sum, p.c.Digest) {
			return fail(fmt.Errorf("http body %s %x, want %x", p.c.DigestAlg, sum, p.c.Digest))
		}
	}
	if p.c.Contains != "" && !bytes.Contains(body.Bytes(), []byte(p.c.Contains)) {
		return fail(fmt.Errorf("http body does not contain %q", p.c.Contains))
	}
	return ok()
}

// udpProbe is UDP_CHECK: send the payload, want a reply (containing
// Expect, if set) within the timeout.
type udpProbe struct {
	s  *stack.Stack
	to netip.AddrPort
	c  Check
}

func (p *udpProbe) probe(ctx context.Context) result {
	fa := fullAddr(p.to)
	uc, err := gonet.DialUDP(p.s, nil, &fa, netProto(p.to.Addr()))
	if err != nil {
		return fail(fmt.Errorf("dial udp %v: %w", p.to, err))
	}
	openConns.Add(1)
	defer openConns.Add(-1)
	defer uc.Close()
	if d, has := ctx.Deadline(); has {
		_ = uc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = uc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := uc.Write(p.c.Payload); err != nil {
		return fail(fmt.Errorf("udp send: %w", err))
	}
	buf := make([]byte, 64<<10)
	n, err := uc.Read(buf)
	if err != nil {
		return fail(fmt.Errorf("udp reply: %w", err))
	}
	if p.c.Expect != nil && !bytes.Contains(buf[:n], p.c.Expect) {
		return fail(fmt.Errorf("udp reply %q does not contain %q", truncate(buf[:n]), p.c.Expect))
	}
	return ok()
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// pingProbe is PING_CHECK: an ICMP echo from the director's stack (a
// gVisor ping endpoint, like a Linux ping socket: the stack sets the
// identifier and checksum).
type pingProbe struct {
	s   *stack.Stack
	to  netip.Addr
	seq uint16
}

func (p *pingProbe) probe(ctx context.Context) result {
	v4 := p.to.Is4()
	tp, np := icmp.ProtocolNumber4, ipv4.ProtocolNumber
	if !v4 {
		tp, np = icmp.ProtocolNumber6, ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, e := p.s.NewEndpoint(tp, np, &wq)
	if e != nil {
		return fail(fmt.Errorf("ping endpoint: %s", e))
	}
	openConns.Add(1)
	defer openConns.Add(-1)
	defer ep.Close()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	if e := ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(p.to.AsSlice())}); e != nil {
		return fail(fmt.Errorf("ping %v: %s", p.to, e))
	}
	p.seq++
	payload := []byte("tunvs-health")
	msg := make([]byte, 8+len(payload))
	if v4 {
		msg[0] = byte(header.ICMPv4Echo)
	} else {
		msg[0] = byte(header.ICMPv6EchoRequest)
	}
	msg[6], msg[7] = byte(p.seq>>8), byte(p.seq)
	copy(msg[8:], payload)
	var r bytes.Reader
	r.Reset(msg)
	if _, e := ep.Write(&r, tcpip.WriteOptions{}); e != nil {
		return fail(fmt.Errorf("ping %v: %s", p.to, e))
	}
	for {
		var b bytes.Buffer
		_, e := ep.Read(&b, tcpip.ReadOptions{})
		if _, would := e.(*tcpip.ErrWouldBlock); would {
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("ping %v: no reply: %w", p.to, ctx.Err()))
			case <-ch:
			}
			continue
		}
		if e != nil {
			return fail(fmt.Errorf("ping %v: %s", p.to, e))
		}
		rep := b.Bytes()
		if len(rep) >= 8 && rep[6] == msg[6] && rep[7] == msg[7] &&
			((v4 && rep[0] == byte(header.ICMPv4EchoReply)) || (!v4 && rep[0] == byte(header.ICMPv6EchoReply))) {
			return ok()
		}
	}
}

// miscProbe is MISC_CHECK: a command on the machine.
type miscProbe struct {
	c      Check
	env    []string
	server netip.AddrPort
}

func (p *miscProbe) probe(ctx context.Context) result {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", p.c.Command)
	cmd.Env = append(os.Environ(), p.env...)
	ownGroup(cmd)
	// A child that keeps the pipes open must not hold the check.
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout = &limited{w: &out, n: 4096}
	cmd.Stderr = cmd.Stdout
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ctx.Err() != nil || ee.ExitCode() < 0 {
			return fail(fmt.Errorf("misc %q: %w", p.c.Command, errOr(ctx.Err(), err)))
		}
		code = ee.ExitCode()
	}
	msg := strings.TrimSpace(out.String())
	switch {
	case code == 0:
		return ok()
	case !p.c.Dynamic || code == 1:
		return fail(fmt.Errorf("misc %q: exit status %d%s", p.c.Command, code, suffix(msg)))
	default:
		return result{weight: code - 2}
	}
}

func errOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return ": " + msg
}

type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(b []byte) (int, error) {
	n := len(b)
	if l.n > 0 {
		k := min(l.n, len(b))
		l.w.Write(b[:k])
		l.n -= k
	}
	return n, nil
}

func newProber(s *stack.Stack, svc string, target netip.AddrPort, c Check) prober {
	switch c.Kind {
	case KindTCP:
		return &tcpProbe{s: s, to: target}
	case KindHTTP, KindHTTPS:
		return newHTTPProbe(s, target, c)
	case KindUDP:
		return &udpProbe{s: s, to: target, c: c}
	case KindPing:
		return &pingProbe{s: s, to: target.Addr()}
	case KindMisc:
		return &miscProbe{c: c, server: target, env: []string{
			"TUNVS_SERVICE=" + svc,
			"TUNVS_SERVER=" + target.String(),
			"TUNVS_SERVER_ADDR=" + target.Addr().String(),
			"TUNVS_SERVER_PORT=" + strconv.Itoa(int(target.Port())),
		}}
	}
	return nil
}
