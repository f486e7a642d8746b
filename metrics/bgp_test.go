package metrics

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/nat"
)

// speaker stands for the BGP speaker (package bgp runs the real one,
// a process, against a router).
type speaker struct {
	peers     []bgp.PeerState
	announced []netip.Addr
	restarts  uint64
}

func (s speaker) Peers() []bgp.PeerState  { return s.peers }
func (s speaker) Announced() []netip.Addr { return s.announced }
func (s speaker) Restarts() uint64        { return s.restarts }

// TestBGPMetrics: a session down, one up, the VIP announced and the
// speaker's restarts.
func TestBGPMetrics(t *testing.T) {
	s := speaker{
		peers: []bgp.PeerState{{Peer: netip.MustParseAddr("192.0.2.1"), State: "ACTIVE"},
			{Peer: netip.MustParseAddr("192.0.2.2"), State: "ESTABLISHED"}},
		announced: []netip.Addr{netip.MustParseAddr("172.16.2.100")},
		restarts:  2,
	}
	var b strings.Builder
	Write(&b, Source{NAT: nat.New(nat.Config{}), BGP: s})
	for _, want := range []string{
		`tunvs_bgp_session_established{peer="192.0.2.1"} 0`,
		`tunvs_bgp_session_established{peer="192.0.2.2"} 1`,
		`tunvs_bgp_announced{vip="172.16.2.100"} 1`,
		`tunvs_bgp_speaker_restarts_total 2`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.String())
		}
	}
}
