package netstack

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/tun"
)

// failingDev is a device whose reads fail with err from the moment fail
// is set (until Close), then block until Close.
type failingDev struct {
	tun.Device
	err    error
	fail   atomic.Bool
	failed atomic.Int64 // how many reads failed
	closed chan struct{}
	once   sync.Once
}

func newFailingDev(err error) *failingDev {
	a, _ := tun.NewPair(tun.KindTUN, 1500)
	return &failingDev{Device: a, err: err, closed: make(chan struct{})}
}

func (d *failingDev) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	for {
		select {
		case <-d.closed:
			return 0, tun.ErrClosed
		default:
		}
		if d.fail.Load() {
			d.failed.Add(1)
			return 0, d.err
		}
		time.Sleep(time.Millisecond)
	}
}

func (d *failingDev) Close() error {
	d.once.Do(func() { close(d.closed) })
	return d.Device.Close()
}

func (d *failingDev) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// A NIC whose device is gone (EBADFD: the TUN's namespace was deleted) is
// closed and reported once with how many links remain; its reader stops
// instead of retrying (it used to spin, logging each failure).
func TestDeviceGoneClosesNICOnce(t *testing.T) {
	type report struct {
		nic       string
		remaining int
	}
	reports := make(chan report, 10)
	h := New(Config{OnLinkLost: func(nic string, err error, remaining int) { reports <- report{nic, remaining} }})
	defer h.Close()
	a, b := newFailingDev(syscall.EBADFD), newFailingDev(syscall.EBADFD)
	if _, err := h.AddNIC("a", a); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddNIC("b", b); err != nil {
		t.Fatal(err)
	}
	a.fail.Store(true)
	r := <-reports
	if r.nic != "a" || r.remaining != 1 {
		t.Fatalf("report %+v, want a with 1 remaining", r)
	}
	if !a.isClosed() || b.isClosed() {
		t.Fatalf("closed: a %v b %v, want only a", a.isClosed(), b.isClosed())
	}
	n, _ := h.NICByName("a")
	if !n.Gone() {
		t.Error("NIC a not marked gone")
	}
	b.fail.Store(true)
	if r := <-reports; r.nic != "b" || r.remaining != 0 {
		t.Fatalf("report %+v, want b with 0 remaining", r)
	}
	select {
	case r := <-reports:
		t.Fatalf("reported twice: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if got := a.failed.Load() + b.failed.Load(); got != 2 {
		t.Errorf("%d failed reads, want 2 (one each, no retry)", got)
	}
}

// Other read errors are retried with a backoff and logged once per run
// of failures, not once per failure.
func TestReadErrorBacksOff(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	h := New(Config{Log: zerolog.New(&lockedWriter{w: &logs, mu: &mu})})
	d := newFailingDev(syscall.EIO)
	if _, err := h.AddNIC("a", d); err != nil {
		t.Fatal(err)
	}
	d.fail.Store(true)
	for d.failed.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	h.Close()
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "device read failed"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	// The backoff after n failures is 5ms<<n: 5 failures take at least
	// 5+10+20+40 ms. Without it they would be thousands.
	if n := h.Counters.ReadErrors.Load(); n > 10 {
		t.Errorf("%d read errors counted: the reader did not back off", n)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
