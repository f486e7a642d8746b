package lab

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/tunvs/tunvs/nat"
)

// The lab's real servers take the PROXY protocol header tunvs sends with
// --proxy-protocol (haproxy's doc/proxy-protocol.txt, v1 and v2) when a
// connection starts with one, and plain HTTP otherwise, as nginx's
// "listen ... proxy_protocol" does not (it demands the header): so that
// in the lab `tunvsadm -E ... --proxy-protocol v1` shows the client in
// the real server's log instead of making every request a 400.

// proxyListener hands out connections that strip a leading PROXY header.
type proxyListener struct{ net.Listener }

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &proxyConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// proxyConn reads its PROXY header, if any, on its first Read.
type proxyConn struct {
	net.Conn
	r       *bufio.Reader
	once    sync.Once
	version int    // 1 or 2; 0: no header
	client  string // the client the header names ("unknown" for v1's UNKNOWN, v2's LOCAL or AF_UNSPEC)
}

func (c *proxyConn) Read(p []byte) (int, error) {
	c.once.Do(c.readHeader)
	return c.r.Read(p)
}

// proxied is the header's version and client, once the first Read is done.
func (c *proxyConn) proxied() (int, string) {
	c.once.Do(c.readHeader)
	return c.version, c.client
}

func (c *proxyConn) readHeader() {
	first, err := c.r.Peek(1)
	if err != nil {
		return
	}
	switch first[0] {
	case 'P': // v1: "PROXY TCP4 SRC DST SPORT DPORT\r\n", at most 107 bytes
		if b, err := c.r.Peek(6); err != nil || string(b) != "PROXY " {
			return
		}
		line, err := c.r.ReadSlice('\n')
		if err != nil || len(line) > nat.ProxyV1MaxLen {
			return
		}
		c.version, c.client = 1, "unknown"
		if f := strings.Fields(string(line)); len(f) == 6 {
			c.client = net.JoinHostPort(f[2], f[4])
		}
	case '\r': // v2: signature, version and command, family, length
		fixed, err := c.r.Peek(16)
		if err != nil {
			return
		}
		b, err := c.r.Peek(16 + int(binary.BigEndian.Uint16(fixed[14:16])))
		if err != nil {
			return
		}
		n, v := nat.ClientProxyHeaderLen(b)
		if v != 2 {
			return
		}
		c.version, c.client = 2, "unknown"
		addrLen := map[byte]int{0x11: 4, 0x21: 16}[b[13]] // TCP over IPv4, IPv6
		if b[12]&0x0f == 1 && addrLen > 0 && n >= 16+2*addrLen+4 {
			a, _ := netip.AddrFromSlice(b[16 : 16+addrLen])
			port := binary.BigEndian.Uint16(b[16+2*addrLen:])
			c.client = netip.AddrPortFrom(a, port).String()
		}
		c.r.Discard(n)
	}
}

type proxyConnKey struct{}

// proxyConnContext keeps the connection in its requests' context.
func proxyConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, proxyConnKey{}, c)
}

// proxyNote is what the log adds for a request that came with a header.
func proxyNote(ctx context.Context) string {
	c, ok := ctx.Value(proxyConnKey{}).(*proxyConn)
	if !ok {
		return ""
	}
	if v, client := c.proxied(); v != 0 {
		return fmt.Sprintf(" (PROXY v%d: client %s)", v, client)
	}
	return ""
}
