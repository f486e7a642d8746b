// Package bgp announces the director's VIPs to routers over BGP, so that
// a router can spread the VIPs' traffic over several directors (ECMP),
// as IPVS directors behind BGP, Maglev, Katran and GLB are scaled out.
//
// The BGP engine is GoBGP (github.com/osrg/gobgp/v3), run in a helper
// process, tunvs-bgp (cmd/tunvs-bgp, package bgp/speaker), that the
// director starts for --bgp and drives over a pipe: announce, withdraw,
// close; it reports its sessions and announcements back. GoBGP is not
// linked into tunvs itself: its package initialisation (GoBGP, gRPC,
// protobuf, viper) doubled the binary and added 7.8 MB to every
// director's RSS, with or without --bgp (issue 11).
//
// The session must leave from the director's own addresses, which live
// in its gVisor stack, not in the kernel. GoBGP cannot be handed a
// connection or a dialer: its FSM dials with a net.Dialer and
// type-asserts *net.TCPConn for the TTL and MSS socket options
// (pkg/server/fsm.go, connectLoop and setPeerConnTTL, v3.37.0; v4.8.0
// is the same). So each peer gets a relay: GoBGP's neighbor is a kernel
// loopback listener of the director, and every connection the speaker
// process makes to it is spliced to a TCP connection from the director's
// stack to the real peer's port 179 (Config.Dial). The router sees the
// director's address and the director's stack carries every byte of the
// session; GoBGP sees only the loopback.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config is what to announce and to whom.
type Config struct {
	// AS is the director's autonomous system number.
	AS uint32
	// RouterID is the BGP identifier (default: NextHop, else the first
	// peer's loopback relay address is refused: an identifier is needed).
	RouterID netip.Addr
	// Peers are the routers.
	Peers []Peer
	// NextHop is the next hop announced with each IPv4 VIP: the
	// director's own address on the routers' segment. NextHop6 is the
	// one for IPv6 VIPs; without it IPv6 VIPs are not announced.
	NextHop, NextHop6 netip.Addr
	// Hold is the hold time offered (default 9 s; BGP's minimum is 3 s).
	// It bounds how long a router keeps sending to a director that died
	// without a word: nothing else tells it.
	Hold time.Duration
	// Dial opens a TCP connection from the director's stack.
	Dial func(ctx context.Context, to netip.AddrPort) (net.Conn, error)
	Log  zerolog.Logger
	// Program is the tunvs-bgp executable (default: SpeakerPath's).
	Program string
}

// Peer is one router.
type Peer struct {
	Addr netip.Addr
	AS   uint32
	Port uint16 // default 179
}

// DefaultHold is the hold time when Config.Hold is 0.
const DefaultHold = 9 * time.Second

// ParseSpec reads --bgp's value:
//
//	as=ASN,peer=ADDR[,peer=ADDR...],peer-as=ASN[,router-id=ADDR][,next-hop=ADDR][,next-hop6=ADDR][,hold=DURATION][,port=PORT]
func ParseSpec(s string) (Config, error) {
	var c Config
	var peerAS uint64
	port := uint64(179)
	var peers []netip.Addr
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("%q is not key=value", kv)
		}
		var err error
		switch k {
		case "as", "peer-as":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 32)
			if err != nil {
				err = errors.New("want an AS number, 1 to 4294967295")
			} else if n == 0 {
				err = errors.New("AS 0 is reserved")
			}
			if k == "as" {
				c.AS = uint32(n)
			} else {
				peerAS = n
			}
		case "peer":
			var a netip.Addr
			a, err = netip.ParseAddr(v)
			peers = append(peers, a)
		case "router-id":
			c.RouterID, err = netip.ParseAddr(v)
			if err == nil && !c.RouterID.Is4() {
				err = errors.New("a BGP identifier is an IPv4 address")
			}
		case "next-hop":
			c.NextHop, err = netip.ParseAddr(v)
			if err == nil && !c.NextHop.Is4() {
				err = errors.New("want an IPv4 address (next-hop6 is for IPv6)")
			}
		case "next-hop6":
			c.NextHop6, err = netip.ParseAddr(v)
			if err == nil && !c.NextHop6.Is6() {
				err = errors.New("want an IPv6 address")
			}
		case "hold":
			c.Hold, err = time.ParseDuration(v)
			if err != nil || (c.Hold < 3*time.Second || c.Hold > 65535*time.Second) {
				err = errors.New("want 3s to 65535s (RFC 4271: 0 or at least 3 s)")
			}
		case "port":
			port, err = strconv.ParseUint(v, 10, 16)
			if err != nil || port == 0 {
				err = errors.New("want a port, 1 to 65535")
			}
		default:
			return c, fmt.Errorf("unknown key %q (as, peer, peer-as, router-id, next-hop, next-hop6, hold, port)", k)
		}
		if err != nil {
			return c, fmt.Errorf("%s=%s: %w", k, v, err)
		}
	}
	if c.AS == 0 {
		return c, errors.New("as= is missing")
	}
	if len(peers) == 0 {
		return c, errors.New("peer= is missing")
	}
	if peerAS == 0 {
		return c, errors.New("peer-as= is missing")
	}
	for _, p := range peers {
		c.Peers = append(c.Peers, Peer{Addr: p, AS: uint32(peerAS), Port: uint16(port)})
	}
	return c, nil
}
