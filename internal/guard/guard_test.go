package guard

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// failing is a listener whose first n accepts fail with err.
type failing struct {
	net.Listener
	n   int
	err error
}

func (f *failing) Accept() (net.Conn, error) {
	if f.n > 0 {
		f.n--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", f.err)}
	}
	return f.Listener.Accept()
}

func TestAcceptBacksOffAndRecovers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var slept []time.Duration
	l := New(&failing{Listener: ln, n: 12, err: syscall.EMFILE}, Config{Name: "control", Log: zerolog.New(&logs),
		sleep: func(d time.Duration, _ <-chan struct{}) { slept = append(slept, d) }})
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept gave up: %v", err)
	}
	c.Close()
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000}
	if len(slept) != len(want) {
		t.Fatalf("slept %v, want %v ms", slept, want)
	}
	for i := range want {
		if slept[i] != want[i]*time.Millisecond {
			t.Fatalf("backoff %d = %v, want %v ms (all: %v)", i, slept[i], want[i], slept)
		}
	}
	if n := l.Stats.AcceptErrors.Load(); n != 12 {
		t.Errorf("AcceptErrors = %d, want 12", n)
	}
	out := logs.String()
	if strings.Count(out, "accept failed") != 1 || strings.Count(out, "accept works again") != 1 {
		t.Errorf("want one line when accepts start failing and one when they work again, got:\n%s", out)
	}
}

func TestAcceptReturnsWhenClosedOrBroken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A permanent error ends Accept at once, as net/http does.
	l := New(&failing{Listener: ln, n: 1, err: syscall.EBADF}, Config{})
	if _, err := l.Accept(); err == nil {
		t.Fatal("Accept retried a permanent error")
	}
	// Close during a backoff ends it.
	l = New(&failing{Listener: ln, n: 1 << 30, err: syscall.EMFILE}, Config{})
	done := make(chan error)
	go func() { _, err := l.Accept(); done <- err }()
	for l.Stats.AcceptErrors.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	l.Close()
	if err := <-done; err == nil {
		t.Fatal("Accept returned a connection after Close")
	}
}

func TestConnectionLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	// Silent clients are not evicted here (TestEvictSilent).
	l := New(ln, Config{Name: "metrics", Max: 2, Log: zerolog.New(&logs), EvictAfter: time.Hour})
	defer l.Close()
	accepted := acceptAll(l)
	var clients []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	a, b := <-accepted, <-accepted
	// The three beyond the limit are closed by the server: their reads
	// end.
	for _, c := range clients[2:] {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a client over the limit was not closed: %v", err)
		}
	}
	if n := l.Stats.OverLimit.Load(); n != 3 {
		t.Errorf("OverLimit = %d, want 3", n)
	}
	if l.Open() != 2 {
		t.Errorf("Open = %d, want 2", l.Open())
	}
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("limit logged %d times, want once:\n%s", n, logs.String())
	}
	// Closing one (twice: the slot is given back once) frees a slot.
	a.Close()
	a.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-accepted:
		got.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted after one was closed")
	}
	b.Close()
}

func TestTimeoutCountedAndLoggedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l := New(ln, Config{Name: "control", Log: zerolog.New(&logs)})
	defer l.Close()
	for range 2 {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v", err)
		}
		c.Close()
	}
	if n := l.Stats.Timeouts.Load(); n != 2 {
		t.Errorf("Timeouts = %d, want 2", n)
	}
	if n := strings.Count(logs.String(), "past its deadline"); n != 1 {
		t.Errorf("timeouts logged %d times, want once", n)
	}
}

func TestLimitReader(t *testing.T) {
	r := LimitReader(strings.NewReader("0123456789"), 4)
	b, err := io.ReadAll(r)
	if string(b) != "0123" || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %q, %v; want 0123, ErrTooLarge", b, err)
	}
	// Exactly at the limit the next read reports too large (the limit
	// cannot tell the end from more to come); under it, EOF as usual.
	r = LimitReader(strings.NewReader("012"), 4)
	if b, err := io.ReadAll(r); string(b) != "012" || err != nil {
		t.Fatalf("got %q, %v", b, err)
	}
}

// At the limit a new connection takes the place of the oldest one that has
// sent nothing for EvictAfter; one that has spoken keeps its place.
func TestEvictSilent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l := New(ln, Config{Name: "control", Max: 2, Log: zerolog.New(&logs), EvictAfter: 10 * time.Millisecond})
	defer l.Close()
	accepted := acceptAll(l)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	talker, silent := dial(), dial()
	st := <-accepted
	<-accepted
	// The first speaks (the server reads its byte).
	talker.Write([]byte("x"))
	if _, err := st.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	dial()
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the new connection was not admitted")
	}
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection was not closed: %v", err)
	}
	talker.Write([]byte("y"))
	if _, err := st.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the connection that spoke was closed: %v", err)
	}
	if l.Stats.Evicted.Load() != 1 || l.Stats.OverLimit.Load() != 0 || l.Open() != 2 {
		t.Errorf("evicted %d, over limit %d, open %d", l.Stats.Evicted.Load(), l.Stats.OverLimit.Load(), l.Open())
	}
	if n := strings.Count(logs.String(), "closing connections that sent nothing"); n != 1 {
		t.Errorf("eviction logged %d times:\n%s", n, logs.String())
	}
}

// acceptAll accepts from l into the channel it returns, closed when
// Accept fails.
func acceptAll(l *Listener) chan net.Conn {
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	return accepted
}
