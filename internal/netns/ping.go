//go:build linux

package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/tunvs/tunvs/internal/csum"
)

// Ping sends ICMP (or ICMPv6) echo requests from the host to dst, one every
// 200ms, until a matching reply arrives or ctx ends. It needs no ping(1):
// the host's root (root of the sandbox's user namespace) may open raw
// sockets there. Without a deadline on ctx it gives up after 5 seconds, so
// that it is always bounded.
func (h *Host) Ping(ctx context.Context, dst string) error {
	addr, err := netip.ParseAddr(dst)
	if err != nil {
		return fmt.Errorf("netns: host %s: ping %q: %w", h.name, dst, err)
	}
	addr = addr.Unmap()
	network, request, reply := "ip4:icmp", byte(8), byte(0)
	if addr.Is6() {
		network, request, reply = "ip6:ipv6-icmp", 128, 129
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	var conn net.PacketConn
	if err := h.Do(func() (err error) {
		conn, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		return fmt.Errorf("netns: host %s: ping %s: %w", h.name, dst, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	id := uint16(rand.Uint32())
	to := &net.IPAddr{IP: addr.AsSlice(), Zone: addr.Zone()}
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		msg := echo(request, id, seq, addr.Is4())
		if _, err := conn.WriteTo(msg, to); err != nil && ctx.Err() == nil {
			// Unreachable networks fail here; keep trying until ctx
			// ends, a route may be on its way.
			time.Sleep(50 * time.Millisecond)
		}
		next := time.Now().Add(200 * time.Millisecond)
		if ctx.Err() == nil {
			conn.SetReadDeadline(next)
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("netns: host %s: no echo reply from %s: %w", h.name, dst, ctx.Err())
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // time for the next request
				}
				return fmt.Errorf("netns: host %s: ping %s: %w", h.name, dst, err)
			}
			// Raw sockets see every ICMP message of the namespace:
			// match type, identifier and sender.
			if n >= 8 && buf[0] == reply && binary.BigEndian.Uint16(buf[4:]) == id {
				if ip, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP); ok && ip.Unmap() == addr.WithZone("") {
					return nil
				}
			}
		}
	}
}

// echo builds an echo request. ICMPv6 checksums cover a pseudo-header, and
// the kernel fills them in for raw ICMPv6 sockets; ICMPv4's is ours.
func echo(typ byte, id, seq uint16, v4 bool) []byte {
	m := make([]byte, 8+16)
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], "tunvs-netns-ping")
	if v4 {
		binary.BigEndian.PutUint16(m[2:], ^csum.Fold(csum.Sum(m, 0)))
	}
	return m
}
