package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: ap.Port()}
	if ap.Addr().IsValid() && !ap.Addr().IsUnspecified() {
		fa.Addr = toTCPIP(ap.Addr())
	}
	return fa
}

// DialTCP opens a TCP connection from the host's stack.
func (h *Host) DialTCP(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	c, err := gonet.DialContextTCP(ctx, h.s, fullAddr(to), protoOf(to.Addr()))
	if err != nil {
		return nil, fmt.Errorf("dial tcp %v: %w", to, err)
	}
	return c, nil
}

// ListenTCP listens on the host's stack; an unspecified address listens on
// all the host's addresses of that family.
func (h *Host) ListenTCP(on netip.AddrPort) (net.Listener, error) {
	l, err := gonet.ListenTCP(h.s, fullAddr(on), protoOf(on.Addr()))
	if err != nil {
		return nil, fmt.Errorf("listen tcp %v: %w", on, err)
	}
	return l, nil
}

// ListenUDP binds a UDP socket on the host's stack.
func (h *Host) ListenUDP(on netip.AddrPort) (net.PacketConn, error) {
	fa := fullAddr(on)
	c, err := gonet.DialUDP(h.s, &fa, nil, protoOf(on.Addr()))
	if err != nil {
		return nil, fmt.Errorf("listen udp %v: %w", on, err)
	}
	return c, nil
}

// DialUDP opens a connected UDP socket from the host's stack.
func (h *Host) DialUDP(to netip.AddrPort) (net.Conn, error) {
	fa := fullAddr(to)
	c, err := gonet.DialUDP(h.s, nil, &fa, protoOf(to.Addr()))
	if err != nil {
		return nil, fmt.Errorf("dial udp %v: %w", to, err)
	}
	return c, nil
}
