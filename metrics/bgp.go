package metrics

import "github.com/tunvs/tunvs/bgp"

// writeBGP exports the BGP speaker's sessions and announcements: what a
// router is told about this director.
func writeBGP(m *writer, s *bgp.Speaker) {
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
}
