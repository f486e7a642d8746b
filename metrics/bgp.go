package metrics

import (
	"net/netip"

	"github.com/tunvs/tunvs/bgp"
)

// BGPSource is what the metrics read of the BGP speaker (*bgp.Speaker).
type BGPSource interface {
	Peers() []bgp.PeerState
	Announced() []netip.Addr
	Restarts() uint64
}

// writeBGP exports the BGP speaker's sessions and announcements: what a
// router is told about this director.
func writeBGP(m *writer, s BGPSource) {
	m.head("tunvs_bgp_session_established", "gauge", "1 while the BGP session with the router is established")
	for _, p := range s.Peers() {
		up := uint64(0)
		if p.State == "ESTABLISHED" {
			up = 1
		}
		m.val("tunvs_bgp_session_established", `peer="`+escape(p.Peer.String())+`"`, up)
	}
	m.head("tunvs_bgp_announced", "gauge", "1 for each VIP announced to the routers (it has a real server of weight above 0)")
	for _, v := range s.Announced() {
		m.val("tunvs_bgp_announced", `vip="`+escape(v.String())+`"`, 1)
	}
	m.head("tunvs_bgp_speaker_restarts_total", "counter", "times the BGP speaker process (tunvs-bgp) died and was started again")
	m.val("tunvs_bgp_speaker_restarts_total", "", s.Restarts())
}
