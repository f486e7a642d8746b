// Package bgp announces the director's VIPs to routers over BGP, so that
// a router can spread the VIPs' traffic over several directors (ECMP),
// as IPVS directors behind BGP, Maglev, Katran and GLB are scaled out.
//
// The BGP engine is GoBGP (github.com/osrg/gobgp/v3), embedded: one
// process, the director's own log and lifetime, and the announcements
// follow the director's table (a VIP is withdrawn when health checks
// leave it no real server) without a second daemon to drive.
//
// The session must leave from the director's own addresses, which live
// in its gVisor stack, not in the kernel. GoBGP cannot be handed a
// connection or a dialer: its FSM dials with a net.Dialer and
// type-asserts *net.TCPConn for the TTL and MSS socket options
// (pkg/server/fsm.go, connectLoop and setPeerConnTTL, v3.37.0; v4.8.0
// is the same). So each peer gets a relay: GoBGP's neighbor is a kernel
// loopback listener of this process, and every connection GoBGP makes
// to it is spliced to a TCP connection from the director's stack to the
// real peer's port 179 (Config.Dial). The router sees the director's
// address and the director's stack carries every byte of the session;
// GoBGP sees only the loopback.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/anypb"
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

// Speaker is a running BGP speaker.
type Speaker struct {
	cfg    Config
	srv    *server.BgpServer
	relays []*relay
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	announced map[netip.Addr][]byte // VIP -> GoBGP's path UUID
	closed    bool
}

// Start starts the speaker with its sessions; nothing is announced until
// Set.
func Start(cfg Config) (_ *Speaker, err error) {
	if cfg.Dial == nil {
		return nil, errors.New("bgp: no Dial")
	}
	if cfg.AS == 0 || len(cfg.Peers) == 0 {
		return nil, errors.New("bgp: an AS and at least one peer are needed")
	}
	if len(cfg.Peers) > 250 {
		return nil, errors.New("bgp: at most 250 peers")
	}
	if cfg.Hold == 0 {
		cfg.Hold = DefaultHold
	}
	rid := cfg.RouterID
	if !rid.IsValid() {
		rid = cfg.NextHop
	}
	if !rid.Is4() {
		return nil, errors.New("bgp: no router-id (an IPv4 address) and no IPv4 next-hop to take it from")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Speaker{cfg: cfg, cancel: cancel, announced: map[netip.Addr][]byte{}}
	s.srv = server.NewBgpServer(server.LoggerOption(logAdapter{cfg.Log}))
	go s.srv.Serve()
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	// ListenPort -1: no listener. The director always connects, through
	// its relays; a router's connection to the director's port 179
	// would reach the director's stack, where nothing listens.
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.AS, RouterId: rid.String(), ListenPort: -1,
	}}); err != nil {
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	for i, p := range cfg.Peers {
		if p.Port == 0 {
			p.Port = 179
			cfg.Peers[i] = p
		}
		// One loopback address per peer: GoBGP knows its neighbors by
		// address. The whole of 127.0.0.0/8 is the loopback's on Linux.
		loop := netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)})
		r, err := newRelay(loop, netip.AddrPortFrom(p.Addr, p.Port), cfg.Dial, cfg.Log)
		if err != nil {
			return nil, fmt.Errorf("bgp: peer %v: %w", p.Addr, err)
		}
		s.relays = append(s.relays, r)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			r.run(ctx)
		}()
		hold := uint64(cfg.Hold / time.Second)
		err = s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: loop.String(), PeerAsn: p.AS, Description: p.Addr.String()},
			Transport: &api.Transport{
				LocalAddress: loop.String(),
				RemotePort:   uint32(r.port()),
			},
			Timers: &api.Timers{Config: &api.TimersConfig{
				HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: 1,
				IdleHoldTimeAfterReset: 1,
			}},
			AfiSafis: []*api.AfiSafi{
				{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
				{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
			},
		}})
		if err != nil {
			return nil, fmt.Errorf("bgp: peer %v: %w", p.Addr, err)
		}
		cfg.Log.Info().Str("event", "bgp_peer_added").Stringer("peer", p.Addr).Uint32("peer_as", p.AS).
			Uint32("as", cfg.AS).Dur("hold", cfg.Hold).Msg("bgp: connecting to the router from the director's stack")
	}
	// After the relays exist: watch reads them. A session cannot be
	// established before this, at least one connect retry away.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watch(ctx)
	}()
	return s, nil
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// ErrClosed is Set's error once the speaker is closed.
var ErrClosed = errors.New("bgp: speaker closed")

// Set announces exactly vips, each as a host route (/32, /128) with the
// director as next hop, and withdraws what was announced and is not in
// vips. IPv6 VIPs are announced only with a NextHop6, IPv4 ones only with
// a NextHop.
func (s *Speaker) Set(vips []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		v = v.Unmap()
		if v.Is4() && s.cfg.NextHop.IsValid() || v.Is6() && s.cfg.NextHop6.IsValid() {
			want[v] = true
		}
	}
	var errs []error
	for v, id := range s.announced {
		if want[v] {
			continue
		}
		if err := s.srv.DeletePath(context.Background(), &api.DeletePathRequest{Uuid: id}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %v: %w", v, err))
			continue
		}
		delete(s.announced, v)
		s.cfg.Log.Info().Str("event", "bgp_withdraw").Stringer("vip", v).Msg("bgp: VIP withdrawn")
	}
	for v := range want {
		if _, ok := s.announced[v]; ok {
			continue
		}
		p, err := s.path(v)
		if err == nil {
			var r *api.AddPathResponse
			r, err = s.srv.AddPath(context.Background(), &api.AddPathRequest{Path: p})
			if err == nil {
				s.announced[v] = r.Uuid
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %v: %w", v, err))
			continue
		}
		nh := s.cfg.NextHop
		if v.Is6() {
			nh = s.cfg.NextHop6
		}
		s.cfg.Log.Info().Str("event", "bgp_announce").Stringer("vip", v).Stringer("next_hop", nh).Msg("bgp: VIP announced")
	}
	return errors.Join(errs...)
}

// Announced lists the VIPs announced, sorted.
func (s *Speaker) Announced() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.Addr
	for v := range s.announced {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// path is v's host route with the director as next hop.
func (s *Speaker) path(v netip.Addr) (*api.Path, error) {
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: v.String(), PrefixLen: uint32(v.BitLen())})
	if err != nil {
		return nil, err
	}
	if v.Is4() {
		nh, err := anypb.New(&api.NextHopAttribute{NextHop: s.cfg.NextHop.String()})
		if err != nil {
			return nil, err
		}
		return &api.Path{Family: familyV4, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
	}
	mp, err := anypb.New(&api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{s.cfg.NextHop6.String()}, Nlris: []*anypb.Any{nlri}})
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: familyV6, Nlri: nlri, Pattrs: []*anypb.Any{origin, mp}}, nil
}

// PeerState is one session's state, as GoBGP names it (ESTABLISHED, ACTIVE, ...).
type PeerState struct {
	Peer  netip.Addr
	State string
}

// Peers lists the sessions' states, in Config.Peers' order.
func (s *Speaker) Peers() []PeerState {
	byLoop := map[string]string{}
	_ = s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.Conf != nil {
			byLoop[p.Conf.NeighborAddress] = strings.TrimPrefix(p.State.SessionState.String(), "SESSION_STATE_")
		}
	})
	out := make([]PeerState, len(s.cfg.Peers))
	for i, p := range s.cfg.Peers {
		out[i] = PeerState{Peer: p.Addr, State: byLoop[s.relays[i].loop.String()]}
	}
	return out
}

// peerOf is the router behind GoBGP's loopback neighbor address.
func (s *Speaker) peerOf(loop string) string {
	for i, r := range s.relays {
		if r.loop.String() == loop {
			return s.cfg.Peers[i].Addr.String()
		}
	}
	return ""
}

// watch logs the sessions coming up and going down.
func (s *Speaker) watch(ctx context.Context) {
	_ = s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil {
			return
		}
		st := pe.Peer.State.SessionState
		if st != api.PeerState_ESTABLISHED && st != api.PeerState_IDLE && st != api.PeerState_ACTIVE {
			return
		}
		peer := ""
		if pe.Peer.Conf != nil {
			peer = s.peerOf(pe.Peer.Conf.NeighborAddress)
		}
		if peer == "" {
			return
		}
		if st == api.PeerState_ESTABLISHED {
			s.cfg.Log.Info().Str("event", "bgp_established").Str("peer", peer).Msg("bgp: session established")
		} else {
			s.cfg.Log.Info().Str("event", "bgp_down").Str("peer", peer).Str("state", st.String()).Msg("bgp: session not established")
		}
	})
	<-ctx.Done()
}

// Close withdraws every VIP and ends the sessions (GoBGP sends each
// router a Cease NOTIFICATION, on which it drops the director's routes at
// once), then closes the relays. It returns within a few seconds even if
// a router does not answer.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	var vips []netip.Addr
	for v := range s.announced {
		vips = append(vips, v)
	}
	s.mu.Unlock()
	err := s.Set(nil)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if len(vips) > 0 {
		// The withdrawal is queued to each session; give it a moment to
		// leave before the sessions end (the NOTIFICATION drops the
		// routes anyway, so this only spares the router a hold time if
		// the notification were lost).
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return err
}

func (s *Speaker) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		_ = s.srv.StopBgp(ctx, &api.StopBgpRequest{})
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.cfg.Log.Warn().Msg("bgp: the speaker did not stop within 5 s")
	}
	s.cancel()
	for _, r := range s.relays {
		r.close()
	}
	s.wg.Wait()
}

// ---------------------------------------------------------------------
// The relay: GoBGP's loopback connection spliced to the director's stack.

type relay struct {
	loop netip.Addr
	to   netip.AddrPort
	dial func(context.Context, netip.AddrPort) (net.Conn, error)
	ln   *net.TCPListener
	log  zerolog.Logger

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
		// port is refused, and so (on Linux) is a connection from
		// another process that bound the same address.
		ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		own, err := ownSocket(ap, c.LocalAddr().(*net.TCPAddr).AddrPort())
		if ap.Addr() != r.loop || !own {
			r.log.Warn().Err(err).Stringer("from", ap).Msg("bgp: relay refused a connection not from this process's speaker")
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
