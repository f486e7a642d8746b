package director

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/tun"
)

// TestSyncPair: two directors on one sync link, the rules start a master
// on one and a backup on the other; a connection established through the
// master appears on the backup, through both directors' own stacks
// (multicast to 224.0.0.81 on link sync0).
func TestSyncPair(t *testing.T) {
	sa, sb := tun.NewPair(tun.KindTUN, 1500)
	mk := func(sync tun.Device, addr, role string) (*Director, tun.Device) {
		ca, cb := tun.NewPair(tun.KindTUN, 1500)
		cmds, lines, err := admin.ParseRulesLines(strings.NewReader(testRules))
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Config{
			Links: []Link{
				{Name: "c", Dev: ca, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.100/32")}},
				{Name: "sync0", Dev: sync, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)}},
			},
			Rules: cmds, RuleLines: lines, Log: zerolog.Nop(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		// As tunvsadm would, through the control socket's environment.
		start, err := admin.Parse(strings.Fields("--start-daemon " + role + " --mcast-interface sync0 --syncid 7"))
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.ApplyWith(d.env(), []admin.Command{start}, nil, nil); err != nil {
			t.Fatal(err)
		}
		return d, cb
	}
	master, cli := mk(sa, "10.2.0.1/24", "master")
	backup, _ := mk(sb, "10.2.0.2/24", "backup")
	c := nattest.AP("10.9.0.1:40000")
	vip := nattest.AP("10.0.0.100:80")
	send := func(b []byte) {
		if _, err := cli.Write([][]byte{b}, 0); err != nil {
			t.Fatal(err)
		}
	}
	send(nattest.TCP(c, vip, nattest.SYN, 0))
	var conn *nat.Conn
	for deadline := time.Now().Add(5 * time.Second); conn == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		conn, _ = master.NAT.Lookup(6, c, vip)
	}
	if conn == nil {
		t.Fatal("the master made no connection")
	}
	send(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, nattest.SYN|nattest.ACK, 0))
	send(nattest.TCP(c, vip, nattest.ACK, 0))
	send(nattest.TCP(c, vip, nattest.ACK, 10))
	// Sent within the flush time (2 s) and the master's look (1 s).
	var got *nat.Conn
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got, _ = backup.NAT.Lookup(6, c, vip); got != nil {
			break
		}
	}
	if got == nil {
		t.Fatalf("the backup has no connection; master: %+v", master.Sync.Master().Stats.Messages.Load())
	}
	if got.State() != nat.StateEstablished || got.DAddr() != conn.DAddr() || !got.Synced() {
		t.Fatalf("backup's connection: %+v state %v, master's to %v", got.Info(), got.State(), conn.DAddr())
	}
}
