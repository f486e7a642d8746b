// Package guard keeps the daemon's own listeners (the control socket, the
// metrics server) answering when descriptors run out or clients sit idle.
//
// A Listener's Accept never gives up on a temporary error (EMFILE, ENFILE,
// ENOBUFS, ECONNABORTED...): it backs off as net/http's Server.Serve does,
// 5 ms doubling to 1 s, and tries again, so that the listener answers
// again as soon as descriptors are free. It holds at most Max connections
// at once, so that idle clients cannot take every descriptor of the
// process: at the limit a new connection takes the place of the oldest one
// that has not sent a byte in evictAfter (a client that connects and says
// nothing, as a slow-loris attack does, cannot keep others out), and if
// there is none the new one is closed at once. Each of these is counted, and
// logged once when it starts (and accept errors again when they stop), not
// once per connection.
package guard

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Backoff bounds of a failing Accept: net/http's Server.Serve uses the
// same (5 ms, doubling, at most 1 s).
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// defaultEvictAfter is how long a connection may stay silent (no byte
// received since it was accepted) before a new one at the limit takes its
// place: long enough for any client's first write to arrive.
const defaultEvictAfter = 100 * time.Millisecond

// Stats are a listener's counters.
type Stats struct {
	// Accepted connections, those closed at once over the limit included.
	Accepted atomic.Uint64
	// AcceptErrors are failed accepts that were retried after a backoff.
	AcceptErrors atomic.Uint64
	// OverLimit are connections closed at once because Max were open
	// and none was silent.
	OverLimit atomic.Uint64
	// Evicted are silent connections closed to make room for a new one.
	Evicted atomic.Uint64
	// Timeouts are connections whose read deadline passed (an idle
	// keep-alive, a client too slow to send its request).
	Timeouts atomic.Uint64
	// TooLarge are requests refused for their size.
	TooLarge atomic.Uint64
}

// Config describes a Listener.
type Config struct {
	// Name names the listener in logs and metrics ("control", "metrics").
	Name string
	// Max is how many connections may be open at once (0: 64).
	Max int
	// EvictAfter is how long a connection may have sent nothing before a
	// new one at the limit takes its place (0: 100 ms).
	EvictAfter time.Duration
	Log        zerolog.Logger
	// sleep waits d or until done is closed (tests shorten it).
	sleep func(d time.Duration, done <-chan struct{})
}

// Listener wraps a net.Listener (see the package comment).
type Listener struct {
	net.Listener
	name  string
	log   zerolog.Logger
	slots chan struct{}
	Stats Stats
	done  chan struct{}
	close sync.Once
	sleep func(time.Duration, <-chan struct{})
	// failing is set while accepts fail; overLimit while connections are
	// refused for the limit; timedOut and tooLarge once the first of
	// those was logged. They keep each condition to one log line.
	failing, overLimit, timeoutLogged, tooLargeLogged, evictLogged atomic.Bool
	// silent are the open connections that have sent nothing yet, oldest
	// first, under mu.
	mu         sync.Mutex
	silent     []*conn
	evictAfter time.Duration
}

// New wraps ln.
func New(ln net.Listener, cfg Config) *Listener {
	if cfg.Max <= 0 {
		cfg.Max = 64
	}
	if cfg.sleep == nil {
		cfg.sleep = sleep
	}
	if cfg.EvictAfter <= 0 {
		cfg.EvictAfter = defaultEvictAfter
	}
	return &Listener{Listener: ln, name: cfg.Name, log: cfg.Log, slots: make(chan struct{}, cfg.Max),
		done: make(chan struct{}), sleep: cfg.sleep, evictAfter: cfg.EvictAfter}
}

func sleep(d time.Duration, done <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
}

// Name is the listener's name.
func (l *Listener) Name() string { return l.name }

// Close closes the listener; an Accept backing off returns at once.
func (l *Listener) Close() error {
	l.close.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// temporary tells the errors worth retrying from a closed or broken
// listener. net/http asks the error's Temporary method, which syscall's
// Errno answers for EMFILE, ENFILE, ECONNABORTED, EINTR, EAGAIN and a few
// more; ENOBUFS and ENOMEM are the kernel's own shortage and pass too.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	return errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// Accept returns the next connection, waiting out temporary errors and
// closing connections over the limit.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return nil, err
			default:
			}
			if !temporary(err) {
				return nil, err
			}
			l.Stats.AcceptErrors.Add(1)
			if delay == 0 {
				delay = minBackoff
			} else {
				delay = min(2*delay, maxBackoff)
			}
			if !l.failing.Swap(true) {
				l.log.Error().Str("listener", l.name).Err(err).
					Msg("accept failed; retrying with backoff (5ms doubling to 1s) until it works again")
			}
			l.sleep(delay, l.done)
			continue
		}
		delay = 0
		if l.failing.Swap(false) {
			l.log.Info().Str("listener", l.name).Uint64("errors", l.Stats.AcceptErrors.Load()).
				Msg("accept works again")
		}
		l.Stats.Accepted.Add(1)
		if gc, ok := l.admit(c); ok {
			return gc, nil
		}
		if l.evict() {
			if gc, ok := l.admit(c); ok {
				return gc, nil
			}
		}
		l.Stats.OverLimit.Add(1)
		if !l.overLimit.Swap(true) {
			l.log.Warn().Str("listener", l.name).Int("max", cap(l.slots)).
				Msg("connection limit reached; closing new connections until one ends")
		}
		_ = c.Close()
	}
}

// admit takes a slot for c, if one is free.
func (l *Listener) admit(c net.Conn) (net.Conn, bool) {
	select {
	case l.slots <- struct{}{}:
	default:
		return nil, false
	}
	l.overLimit.Store(false)
	gc := &conn{Conn: c, l: l, at: time.Now()}
	l.mu.Lock()
	l.silent = append(l.silent, gc)
	l.mu.Unlock()
	return gc, true
}

// evict closes the oldest connection silent for l.evictAfter, if any, and
// reports whether it did.
func (l *Listener) evict() bool {
	l.mu.Lock()
	var old *conn
	if len(l.silent) > 0 && time.Since(l.silent[0].at) >= l.evictAfter {
		old = l.silent[0]
	}
	l.mu.Unlock()
	if old == nil {
		return false
	}
	_ = old.Close()
	l.Stats.Evicted.Add(1)
	if !l.evictLogged.Swap(true) {
		l.log.Warn().Str("listener", l.name).Int("max", cap(l.slots)).
			Msg("connection limit reached: closing connections that sent nothing to make room (counted from now on, not logged again)")
	}
	return true
}

// spoke takes c off the silent list.
func (l *Listener) spoke(c *conn) {
	l.mu.Lock()
	for i, s := range l.silent {
		if s == c {
			l.silent = append(l.silent[:i], l.silent[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
}

// Open is how many connections are open.
func (l *Listener) Open() int { return len(l.slots) }

// TooLarge counts a request refused for its size (logged the first time).
func (l *Listener) TooLarge(limit int64) {
	l.Stats.TooLarge.Add(1)
	if !l.tooLargeLogged.Swap(true) {
		l.log.Warn().Str("listener", l.name).Int64("limit", limit).
			Msg("request refused: larger than the limit (counted from now on, not logged again)")
	}
}

func (l *Listener) timedOut() {
	l.Stats.Timeouts.Add(1)
	if !l.timeoutLogged.Swap(true) {
		l.log.Warn().Str("listener", l.name).
			Msg("connection closed: idle or too slow past its deadline (counted from now on, not logged again)")
	}
}

// conn gives its slot back when closed and counts read deadlines passed.
type conn struct {
	net.Conn
	l     *Listener
	once  sync.Once
	at    time.Time   // accepted
	spoke atomic.Bool // a byte was received
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.spoke.Swap(true) {
		c.l.spoke(c)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.l.timedOut()
	}
	return n, err
}

func (c *conn) Close() error {
	c.once.Do(func() {
		if !c.spoke.Swap(true) {
			c.l.spoke(c)
		}
		<-c.l.slots
	})
	return c.Conn.Close()
}

// Unwrap is the connection Accept wrapped (a *net.UnixConn for its peer's
// credentials, say).
func Unwrap(c net.Conn) net.Conn {
	if g, ok := c.(*conn); ok {
		return g.Conn
	}
	return c
}

// ErrTooLarge is what a LimitReader returns past its limit.
var ErrTooLarge = errors.New("request too large")

// LimitReader reads r up to n bytes, then fails with ErrTooLarge (rather
// than io.LimitReader's EOF, which reads as a truncated request).
func LimitReader(r io.Reader, n int64) *Limited {
	return &Limited{r: r, n: n}
}

// Limited is the reader LimitReader returns.
type Limited struct {
	r io.Reader
	n int64
}

func (l *Limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
