// Package speaker is the tunvs-bgp program (cmd/tunvs-bgp): GoBGP,
// driven by the director over a pipe (package bgp's SpeakerConfig,
// Command and Report). It is the only package that links GoBGP: a
// director without --bgp does not run its initialisation (issue 11).
//
// GoBGP's neighbors are the director's loopback relays, which splice
// each session onto the director's gVisor stack (package bgp).
package speaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tunvs/tunvs/bgp"
)

// reporter writes reports, one JSON line each, from any goroutine.
type reporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *reporter) send(rep bgp.Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A director that is gone reads nothing; stdin's end stops the
	// speaker.
	_ = r.enc.Encode(rep)
}

// Run is the speaker: it reads its configuration and then commands from
// in, reports on out, and returns once told to close or once in ends.
func Run(in io.Reader, out io.Writer) error {
	rep := &reporter{enc: json.NewEncoder(out)}
	dec := json.NewDecoder(in)
	var cfg bgp.SpeakerConfig
	if err := dec.Decode(&cfg); err != nil {
		err = fmt.Errorf("read the configuration: %w", err)
		rep.send(bgp.Report{Event: "error", Err: err.Error()})
		return err
	}
	s, err := start(cfg, rep)
	if err != nil {
		rep.send(bgp.Report{Event: "error", Err: err.Error()})
		return err
	}
	rep.send(bgp.Report{Event: "started"})
	for {
		var c bgp.Command
		if err := dec.Decode(&c); err != nil {
			// The director is gone: its relays, and so the sessions, are
			// too. Nothing to withdraw through.
			s.stop()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read a command: %w", err)
		}
		switch c.Op {
		case "set":
			err := s.set(c.VIPs)
			rep.send(bgp.Report{Event: "set", Announced: s.announcedVIPs(), Err: errString(err)})
		case "close":
			err := s.close()
			rep.send(bgp.Report{Event: "closed", Err: errString(err)})
			return nil
		default:
			rep.send(bgp.Report{Event: "set", Announced: s.announcedVIPs(), Err: fmt.Sprintf("bgp: unknown command %q", c.Op)})
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// speaker is GoBGP with its neighbors.
type speaker struct {
	cfg    bgp.SpeakerConfig
	srv    *server.BgpServer
	rep    *reporter
	cancel context.CancelFunc
	wg     sync.WaitGroup

	announced map[netip.Addr][]byte // VIP -> GoBGP's path UUID
}

func start(cfg bgp.SpeakerConfig, rep *reporter) (_ *speaker, err error) {
	if !cfg.RouterID.Is4() {
		return nil, errors.New("bgp: no router-id (an IPv4 address)")
	}
	if cfg.AS == 0 || len(cfg.Peers) == 0 {
		return nil, errors.New("bgp: an AS and at least one peer are needed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &speaker{cfg: cfg, rep: rep, cancel: cancel, announced: map[netip.Addr][]byte{}}
	s.srv = server.NewBgpServer(server.LoggerOption(logAdapter{rep, zerolog.Level(cfg.LogLevel)}))
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
		Asn: cfg.AS, RouterId: cfg.RouterID.String(), ListenPort: -1,
	}}); err != nil {
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	// Watch before the neighbors exist, so that no state change is
	// missed (the director's metrics follow these reports).
	s.wg.Add(1)
	ready := make(chan struct{})
	go func() {
		defer s.wg.Done()
		s.watch(ctx, ready)
	}()
	<-ready
	hold := uint64(cfg.Hold / time.Second)
	for _, p := range cfg.Peers {
		loop := p.Relay.Addr().String()
		err = s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf: &api.PeerConf{NeighborAddress: loop, PeerAsn: p.AS, Description: p.Router.String()},
			Transport: &api.Transport{
				LocalAddress: loop,
				RemotePort:   uint32(p.Relay.Port()),
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
			return nil, fmt.Errorf("bgp: peer %v: %w", p.Router, err)
		}
	}
	return s, nil
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// set announces exactly vips, each as a host route (/32, /128) with the
// director as next hop, and withdraws what was announced and is not in
// vips. IPv6 VIPs are announced only with a NextHop6, IPv4 ones only with
// a NextHop.
func (s *speaker) set(vips []netip.Addr) error {
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
		s.rep.send(bgp.Report{Event: "withdraw", VIP: v})
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
		s.rep.send(bgp.Report{Event: "announce", VIP: v, NextHop: nh})
	}
	return errors.Join(errs...)
}

// announcedVIPs lists the VIPs announced, sorted.
func (s *speaker) announcedVIPs() []netip.Addr {
	var out []netip.Addr
	for v := range s.announced {
		out = append(out, v)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// path is v's host route with the director as next hop.
func (s *speaker) path(v netip.Addr) (*api.Path, error) {
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

// peerIndex is the index of the peer behind GoBGP's loopback neighbor
// address, -1 if none.
func (s *speaker) peerIndex(loop string) int {
	for i, p := range s.cfg.Peers {
		if p.Relay.Addr().String() == loop {
			return i
		}
	}
	return -1
}

// watch reports the sessions' state changes.
func (s *speaker) watch(ctx context.Context, ready chan<- struct{}) {
	err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil || pe.Peer.State == nil || pe.Peer.Conf == nil {
			return
		}
		i := s.peerIndex(pe.Peer.Conf.NeighborAddress)
		if i < 0 {
			return
		}
		s.rep.send(bgp.Report{Event: "state", Peer: i, State: strings.TrimPrefix(pe.Peer.State.SessionState.String(), "SESSION_STATE_")})
	})
	close(ready)
	if err != nil {
		return
	}
	<-ctx.Done()
}

// close withdraws every VIP and ends the sessions (GoBGP sends each
// router a Cease NOTIFICATION, on which it drops the director's routes at
// once).
func (s *speaker) close() error {
	n := len(s.announced)
	err := s.set(nil)
	if n > 0 {
		// The withdrawal is queued to each session; give it a moment to
		// leave before the sessions end (the NOTIFICATION drops the
		// routes anyway, so this only spares the router a hold time if
		// the notification were lost).
		time.Sleep(100 * time.Millisecond)
	}
	s.stop()
	return err
}

// stop ends GoBGP, within 5 s even if a router does not answer.
func (s *speaker) stop() {
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
		s.rep.send(bgp.Report{Event: "log", Level: int8(zerolog.WarnLevel), Msg: "bgp: the speaker did not stop within 5 s"})
	}
	s.cancel()
	s.wg.Wait()
}
