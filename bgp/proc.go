package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// SpeakerName is the speaker program's name (cmd/tunvs-bgp).
const SpeakerName = "tunvs-bgp"

// SpeakerPath finds the speaker program for the tunvs executable self:
// next to it (make build puts both in bin/, go install ./cmd/... both in
// GOBIN), else on PATH.
func SpeakerPath(self string) (string, error) {
	name := SpeakerName
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	if self != "" {
		p := filepath.Join(filepath.Dir(self), name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(SpeakerName); err == nil {
		return p, nil
	}
	where := "next to the tunvs executable"
	if self != "" {
		where = "in " + filepath.Dir(self)
	}
	return "", fmt.Errorf("bgp: --bgp needs the speaker program %s, neither %s nor on PATH: `make build` puts it in bin/ beside tunvs, `go install ./cmd/...` in GOBIN", name, where)
}

// Times of the speaker's supervision.
const (
	// replyWait bounds the wait for the speaker's answer to a command.
	replyWait = 10 * time.Second
	// restartMin and restartMax bound the wait before a speaker that
	// died is started again; it doubles while the speaker keeps dying
	// within restartMax of its start.
	restartMin, restartMax = time.Second, 30 * time.Second
)

// Speaker is the director's BGP speaker: the tunvs-bgp process, its
// relays, and what it last reported. If the process dies, the speaker
// logs it (bgp_speaker_exited), counts it (Restarts), and starts it
// again: the director keeps forwarding meanwhile, and the routers, whose
// sessions ended with the process's sockets, take the routes back once
// the new sessions are up and the director's next Set has announced.
type Speaker struct {
	cfg    Config
	prog   string
	sc     SpeakerConfig
	relays []*relay
	cancel context.CancelFunc
	wg     sync.WaitGroup

	op sync.Mutex // one command at a time

	mu        sync.Mutex
	p         *proc // nil between a death and the restart
	states    []string
	announced []netip.Addr
	restarts  uint64
	closed    bool
}

// proc is one run of the speaker program.
type proc struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies chan Report
	exited  chan struct{} // closed once cmd.Wait returned
	err     error         // cmd.Wait's, once exited
}

// ErrClosed is Set's error once the speaker is closed.
var ErrClosed = errors.New("bgp: speaker closed")

// Start starts the speaker program with its sessions; nothing is
// announced until Set.
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
	prog := cfg.Program
	if prog == "" {
		self, _ := os.Executable()
		if prog, err = SpeakerPath(self); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Speaker{cfg: cfg, prog: prog, cancel: cancel, states: make([]string, len(cfg.Peers))}
	s.sc = SpeakerConfig{AS: cfg.AS, RouterID: rid, NextHop: cfg.NextHop, NextHop6: cfg.NextHop6, Hold: cfg.Hold,
		LogLevel: int8(cfg.Log.GetLevel())}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	for i, p := range cfg.Peers {
		if p.Port == 0 {
			p.Port = 179
			s.cfg.Peers[i] = p
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
		s.sc.Peers = append(s.sc.Peers, SpeakerPeer{Router: p.Addr, AS: p.AS, Relay: netip.AddrPortFrom(loop, r.port())})
		cfg.Log.Info().Str("event", "bgp_peer_added").Stringer("peer", p.Addr).Uint32("peer_as", p.AS).
			Uint32("as", cfg.AS).Dur("hold", cfg.Hold).Msg("bgp: connecting to the router from the director's stack")
	}
	p, err := s.spawn()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.supervise(ctx, p)
	}()
	return s, nil
}

// spawn starts the program, hands it the configuration and waits for it
// to say it started.
func (s *Speaker) spawn() (*proc, error) {
	cmd := exec.Command(s.prog)
	// The speaker's own stderr is the director's: a panic shows there.
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bgp: start %s: %w", s.prog, err)
	}
	p := &proc{cmd: cmd, in: in, replies: make(chan Report, 1), exited: make(chan struct{})}
	for _, r := range s.relays {
		r.owner.Store(int64(cmd.Process.Pid))
	}
	go s.read(p, out)
	if err := json.NewEncoder(in).Encode(s.sc); err != nil {
		s.kill(p)
		return nil, fmt.Errorf("bgp: configure %s: %w", s.prog, err)
	}
	r, err := p.await("start")
	if err == nil && r.Event != "started" {
		err = errors.New(r.Err)
	}
	if err != nil {
		s.kill(p)
		return nil, fmt.Errorf("bgp: %s: %w", s.prog, err)
	}
	return p, nil
}

// read takes in the speaker's reports until its stdout ends, then reaps
// it.
func (s *Speaker) read(p *proc, out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r Report
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			s.cfg.Log.Warn().Err(err).Msg("bgp: the speaker wrote a line that is not a report")
			continue
		}
		s.report(p, r)
	}
	p.err = p.cmd.Wait()
	close(p.exited)
}

// report acts on one of p's reports.
func (s *Speaker) report(p *proc, r Report) {
	log := s.cfg.Log
	switch r.Event {
	case "started", "error", "set", "closed":
		select {
		case p.replies <- r:
		default:
			log.Warn().Str("report", r.Event).Msg("bgp: the speaker answered what was not asked")
		}
	case "state":
		if r.Peer < 0 || r.Peer >= len(s.cfg.Peers) {
			return
		}
		peer := s.cfg.Peers[r.Peer].Addr
		// All of a process's reports are read before it is reaped, and
		// so before supervise forgets its states: none is stale here.
		s.mu.Lock()
		s.states[r.Peer] = r.State
		s.mu.Unlock()
		switch r.State {
		case "ESTABLISHED":
			log.Info().Str("event", "bgp_established").Stringer("peer", peer).Msg("bgp: session established")
		case "IDLE", "ACTIVE":
			log.Info().Str("event", "bgp_down").Stringer("peer", peer).Str("state", r.State).Msg("bgp: session not established")
		}
	case "announce":
		log.Info().Str("event", "bgp_announce").Stringer("vip", r.VIP).Stringer("next_hop", r.NextHop).Msg("bgp: VIP announced")
	case "withdraw":
		log.Info().Str("event", "bgp_withdraw").Stringer("vip", r.VIP).Msg("bgp: VIP withdrawn")
	case "log":
		e := log.WithLevel(zerolog.Level(r.Level)).Str("component", "gobgp")
		for k, v := range r.Fields {
			e = e.Str(k, v)
		}
		e.Msg(r.Msg)
	}
}

// await is p's answer to what it was last asked.
func (p *proc) await(what string) (Report, error) {
	t := time.NewTimer(replyWait)
	defer t.Stop()
	select {
	case r := <-p.replies:
		return r, nil
	case <-p.exited:
		// A last answer may have come with the exit.
		select {
		case r := <-p.replies:
			return r, nil
		default:
		}
		return Report{}, fmt.Errorf("the speaker exited (%v) before answering %s", p.err, what)
	case <-t.C:
		return Report{}, fmt.Errorf("no answer to %s within %v", what, replyWait)
	}
}

// ask sends p a command and returns its answer.
func (p *proc) ask(c Command) (Report, error) {
	if err := json.NewEncoder(p.in).Encode(c); err != nil {
		return Report{}, fmt.Errorf("the speaker does not read its commands: %w", err)
	}
	return p.await(c.Op)
}

func (s *Speaker) kill(p *proc) {
	p.in.Close()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// supervise restarts the speaker program whenever it dies, until Close.
func (s *Speaker) supervise(ctx context.Context, p *proc) {
	wait := restartMin
	for {
		started := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-p.exited:
		}
		s.op.Lock()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.op.Unlock()
			return
		}
		s.p = nil
		clear(s.states)
		s.announced = nil
		s.restarts++
		s.mu.Unlock()
		s.op.Unlock()
		// The relays' sessions ended with the process's sockets; none
		// is accepted until the next process runs.
		for _, r := range s.relays {
			r.owner.Store(0)
		}
		if time.Since(started) > restartMax {
			wait = restartMin
		}
		s.cfg.Log.Error().Str("event", "bgp_speaker_exited").Err(p.err).Dur("restart_in", wait).
			Msg("bgp: the speaker process exited; the routers drop this director's routes until it is back")
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, restartMax)
			np, err := s.spawn()
			if err != nil {
				s.cfg.Log.Error().Str("event", "bgp_speaker_exited").Err(err).Dur("restart_in", wait).Msg("bgp: the speaker process did not start again")
				continue
			}
			s.op.Lock()
			s.mu.Lock()
			closed := s.closed
			if !closed {
				s.p = np
			}
			s.mu.Unlock()
			s.op.Unlock()
			if closed {
				s.kill(np)
				return
			}
			s.cfg.Log.Info().Str("event", "bgp_speaker_started").Int("pid", np.cmd.Process.Pid).Msg("bgp: the speaker process runs again")
			p = np
			break
		}
	}
}

// Set announces exactly vips, each as a host route (/32, /128) with the
// director as next hop, and withdraws what was announced and is not in
// vips. IPv6 VIPs are announced only with a NextHop6, IPv4 ones only with
// a NextHop.
func (s *Speaker) Set(vips []netip.Addr) error {
	var want []netip.Addr
	for _, v := range vips {
		v = v.Unmap()
		if (v.Is4() && s.cfg.NextHop.IsValid() || v.Is6() && s.cfg.NextHop6.IsValid()) && !slices.Contains(want, v) {
			want = append(want, v)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	p, closed, same := s.p, s.closed, slices.Equal(want, s.announced)
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case p == nil:
		// Restarting (supervise logged it): the new process gets the
		// next Set.
		return nil
	case same:
		// The director sets every half second; the speaker hears only of
		// changes.
		return nil
	}
	r, err := p.ask(Command{Op: "set", VIPs: want})
	if err != nil {
		return fmt.Errorf("bgp: %w", err)
	}
	s.mu.Lock()
	s.announced = r.Announced
	s.mu.Unlock()
	if r.Err != "" {
		return errors.New(r.Err)
	}
	return nil
}

// Announced lists the VIPs announced, sorted.
func (s *Speaker) Announced() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.announced)
}

// PeerState is one session's state, as GoBGP names it (ESTABLISHED,
// ACTIVE, ...); empty while the speaker has not reported one.
type PeerState struct {
	Peer  netip.Addr
	State string
}

// Peers lists the sessions' states, in Config.Peers' order.
func (s *Speaker) Peers() []PeerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PeerState, len(s.cfg.Peers))
	for i, p := range s.cfg.Peers {
		out[i] = PeerState{Peer: p.Addr, State: s.states[i]}
	}
	return out
}

// Restarts counts the speaker process's deaths (each followed by a
// restart).
func (s *Speaker) Restarts() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// Close withdraws every VIP and ends the sessions (the speaker sends each
// router a Cease NOTIFICATION, on which it drops the director's routes at
// once), waits for the speaker process to exit, then closes the relays.
// It returns within seconds even if a router or the speaker does not
// answer.
func (s *Speaker) Close() error {
	s.op.Lock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.op.Unlock()
		return nil
	}
	s.closed = true
	p := s.p
	s.mu.Unlock()
	var err error
	if p != nil {
		var r Report
		if r, err = p.ask(Command{Op: "close"}); err == nil && r.Err != "" {
			err = errors.New(r.Err)
		}
		p.in.Close()
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			s.kill(p)
		}
	}
	s.op.Unlock()
	s.stop()
	if err != nil {
		return fmt.Errorf("bgp: close: %w", err)
	}
	return nil
}

// stop ends the supervision and the relays.
func (s *Speaker) stop() {
	s.cancel()
	for _, r := range s.relays {
		r.close()
	}
	s.wg.Wait()
}
