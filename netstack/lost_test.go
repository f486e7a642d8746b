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
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/nat/nattest"
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

// partialDev writes the first packet of each batch and fails the rest.
type partialDev struct{ tun.Device }

func (d *partialDev) Write(bufs [][]byte, off int) (int, error) {
	if len(bufs) > 1 {
		return 1, syscall.ENOBUFS
	}
	return len(bufs), nil
}

// WritePackets reports what the device wrote, not the whole batch.
func TestWritePacketsPartial(t *testing.T) {
	h := New(Config{})
	defer h.Close()
	a, _ := tun.NewPair(tun.KindTUN, 1500)
	n, err := h.AddNIC("a", &partialDev{Device: a})
	if err != nil {
		t.Fatal(err)
	}
	var list stack.PacketBufferList
	for range 3 {
		list.PushBack(stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(nattest.TCP(nattest.AP("10.0.0.1:1"), nattest.AP("10.0.0.2:2"), nattest.SYN, 0))}))
	}
	defer list.DecRef()
	got, terr := n.ep.WritePackets(list)
	if got != 1 || terr == nil {
		t.Errorf("WritePackets = %d, %v; want 1 and an error", got, terr)
	}
	if h.Counters.WriteErrors.Load() != 1 {
		t.Errorf("WriteErrors = %d", h.Counters.WriteErrors.Load())
	}
}
