package bgp

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// The relay: GoBGP's loopback connection spliced to the director's stack.

type relay struct {
	loop netip.Addr
	to   netip.AddrPort
	dial func(context.Context, netip.AddrPort) (net.Conn, error)
	ln   *net.TCPListener
	log  zerolog.Logger
	// owner is the process whose connections are relayed: the speaker
	// process of the moment (0: none, every connection is refused).
	owner atomic.Int64

	mu   sync.Mutex
	live []net.Conn // the current session's two halves
}

func newRelay(loop netip.Addr, to netip.AddrPort, dial func(context.Context, netip.AddrPort) (net.Conn, error), log zerolog.Logger) (*relay, error) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(loop, 0)))
	if err != nil {
		return nil, fmt.Errorf("the loopback relay for GoBGP (%v) cannot listen: %w (is the loopback device up?)", loop, err)
	}
	return &relay{loop: loop, to: to, dial: dial, ln: ln, log: log}, nil
}

func (r *relay) port() uint16 { return uint16(r.ln.Addr().(*net.TCPAddr).Port) }

func (r *relay) run(ctx context.Context) {
	for {
		c, err := r.ln.AcceptTCP()
		if err != nil {
			return
		}
		// GoBGP binds its side to the peer's loopback address (Transport
		// LocalAddress); anything else on this machine that finds the
		// port is refused, and so (on Linux) is a connection from any
		// process but the director's speaker that bound the same
		// address.
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		own, err := ownSocket(int(r.owner.Load()), ap, c.LocalAddr().(*net.TCPAddr).AddrPort())
		if ap.Addr() != r.loop || !own {
			r.log.Warn().Err(err).Stringer("from", ap).Msg("bgp: relay refused a connection not from the director's speaker process")
			c.Close()
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		out, err := r.dial(dctx, r.to)
		cancel()
		if err != nil {
			r.log.Debug().Err(err).Stringer("peer", r.to).Msg("bgp: cannot reach the router from the director's stack")
			c.Close()
			continue
		}
		r.mu.Lock()
		// GoBGP opens a new connection only once it has given up the
		// old one: whatever remains of that goes.
		for _, x := range r.live {
			x.Close()
		}
		r.live = []net.Conn{c, out}
		r.mu.Unlock()
		go splice(c, out)
		go splice(out, c)
	}
}

// splice copies src to dst and, when src ends, closes both, so that the
// other direction ends too and each side sees the other go.
func splice(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, x := range r.live {
		x.Close()
	}
	r.live = nil
	r.mu.Unlock()
}
