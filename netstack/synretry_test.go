package netstack_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// A SYN-proxied connection whose real server does not answer: the
// director's timer resends the SYN (nat/synretry.go), and the host puts
// it on the wire to the server through the stack.
func TestSynProxyRetransmitThroughHost(t *testing.T) {
	_, c, r, tb := director(t, tun.KindTUN, true)
	if err := tb.EditService(nat.ServiceConfig{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80, Scheduler: "rr", SynProxy: true}); err != nil {
		t.Fatal(err)
	}
	cli := nattest.AP("10.0.0.10:40000")
	vip := nattest.AP("172.16.1.100:80")
	isTCP := func(flags byte) func([]byte) bool {
		return func(b []byte) bool { return len(b) >= 40 && b[0]>>4 == 4 && b[9] == 6 && b[33] == flags }
	}
	c.send(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.SYN, Seq: 100, Options: []byte{2, 4, 5, 0xb4}}))
	sa := c.recv(isTCP(nattest.SYN | nattest.ACK))
	cookie := binary.BigEndian.Uint32(sa[24:])
	c.send(nattest.Build(nattest.Seg{Src: cli, Dst: vip, Proto: 6, Flags: nattest.ACK, Seq: 101, Ack: cookie + 1}))
	first := r.recv(isTCP(nattest.SYN))
	again := r.recv(isTCP(nattest.SYN))
	for _, s := range [][]byte{first, again} {
		if dst := netip.AddrFrom4([4]byte(s[16:20])); dst != netip.MustParseAddr("172.16.1.5") || binary.BigEndian.Uint32(s[24:]) != 100 ||
			!nattest.L4ChecksumOK(s) || !nattest.IPv4HeaderOK(s) {
			t.Fatalf("SYN to the server: %x", s)
		}
	}
	if n := tb.SynProxyCounters(); n[3].Name != "syn_resent" || n[3].Value < 1 {
		t.Fatalf("counters %+v", n)
	}
}
