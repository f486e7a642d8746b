package metrics

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/nat"
)

// TestBGPMetrics: a speaker whose router cannot be reached shows its
// session down and the VIP it announces.
func TestBGPMetrics(t *testing.T) {
	s, err := bgp.Start(bgp.Config{
		AS: 65001, Peers: []bgp.Peer{{Addr: netip.MustParseAddr("192.0.2.1"), AS: 65000}},
		NextHop: netip.MustParseAddr("192.0.2.11"),
		Dial: func(context.Context, netip.AddrPort) (net.Conn, error) {
			return nil, errors.New("no router in this test")
		},
		Log: zerolog.Nop(),
	})
	if err != nil {
		t.Skipf("loopback relay: %v", err)
	}
	defer s.Close()
	if err := s.Set([]netip.Addr{netip.MustParseAddr("172.16.2.100")}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Write(&b, Source{NAT: nat.New(nat.Config{}), BGP: s})
	for _, want := range []string{
		`tunvs_bgp_session_established{peer="192.0.2.1"} 0`,
		`tunvs_bgp_announced{vip="172.16.2.100"} 1`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.String())
		}
	}
}
