package nat_test

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

func opsService(persist bool) func(tb *nat.Table) {
	return func(tb *nat.Table) {
		if _, err := tb.AddService(nat.ServiceConfig{Proto: 17, Addr: vip.Addr(), Port: 80, Scheduler: "rr", OnePacket: true, Persistent: persist}); err != nil {
			panic(err)
		}
		for _, d := range []netip.Addr{rs1, rs2} {
			if _, err := tb.AddDest(nat.ServiceKey{Proto: 17, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: d, Port: 8080, Weight: 1}); err != nil {
				panic(err)
			}
		}
	}
}

// --ops: every datagram is scheduled on its own and no connection stays.
func TestOnePacketScheduling(t *testing.T) {
	e := newEnv(t, nat.Config{}, opsService(false))
	var to []netip.Addr
	for range 4 {
		r := e.tb.Process(nattest.UDP(cli, vip, []byte("q")), &e.p, e.now)
		if r.Verdict != nat.Forward || e.p.DstPort != 8080 || !e.p.VerifyL4Checksum() {
			t.Fatalf("%+v to %v:%d", r, e.p.Dst(), e.p.DstPort)
		}
		to = append(to, e.p.Dst())
	}
	if to[0] != rs2 || to[1] != rs1 || to[2] != rs2 || to[3] != rs1 {
		t.Errorf("datagrams of one socket went to %v, want rr alternating", to)
	}
	if e.tb.Len() != 0 {
		t.Errorf("%d connections kept", e.tb.Len())
	}
	for _, a := range []netip.Addr{rs1, rs2} {
		d := dest(t, e.tb, a)
		if st := d.Stats.Snapshot(); st.Conns != 2 || st.InPkts != 2 || d.InactConns() != 0 || d.ActiveConns() != 0 {
			t.Errorf("%v: stats %+v, counts %d/%d", a, st, d.ActiveConns(), d.InactConns())
		}
	}

	// The reply finds no connection: the kernel does not translate it
	// (ip_vs_out_hook has nothing to hand to handle_response, and
	// ip_vs_update_conntrack leaves OPS alone), so it passes unchanged.
	reply := nattest.UDP(netip.AddrPortFrom(rs1, 8080), cli, []byte("a"))
	orig := append([]byte(nil), reply...)
	if r := e.tb.Process(reply, &e.p, e.now); r.Verdict != nat.Pass || !bytes.Equal(reply, orig) {
		t.Errorf("OPS reply: %+v", r)
	}

	// TCP services ignore --ops.
	tb := nat.New(nat.Config{})
	tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: 80, Scheduler: "rr", OnePacket: true})
	tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: 80}, nat.DestConfig{Addr: rs1, Weight: 1})
	var p nat.Packet
	tb.Process(nattest.TCP(cli, vip, S, 0), &p, 0)
	if tb.Len() != 1 {
		t.Error("TCP connection of an --ops service not kept")
	}
}

// --ops with persistence: the template is kept (it is not one-packet), so
// every datagram of the client goes to one server.
func TestOnePacketPersistent(t *testing.T) {
	e := newEnv(t, nat.Config{}, opsService(true))
	var first netip.Addr
	for i := range 4 {
		c := netip.AddrPortFrom(cli.Addr(), uint16(3000+i%2))
		if r := e.tb.Process(nattest.UDP(c, vip, []byte("q")), &e.p, e.now); r.Verdict != nat.Forward {
			t.Fatal(r)
		}
		if i == 0 {
			first = e.p.Dst()
		} else if e.p.Dst() != first {
			t.Errorf("datagram %d went to %v, not %v", i, e.p.Dst(), first)
		}
	}
	ts := templates(e.tb)
	if e.tb.Len() != 1 || len(ts) != 1 || ts[0].Dest.Addr() != first {
		t.Errorf("want the template alone, got %d entries %+v", e.tb.Len(), ts)
	}
	d := dest(t, e.tb, first)
	if d.PersistConns() != 1 || d.TotalConns() != 0 {
		t.Errorf("persist %d total %d", d.PersistConns(), d.TotalConns())
	}
	e.run(301 * time.Second)
	if e.tb.Len() != 0 {
		t.Error("template of an --ops service did not expire")
	}
}
