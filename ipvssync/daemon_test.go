package ipvssync

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// memNet is an in-process multicast network: what a sender writes to a
// group:port reaches every listener of it.
type memNet struct {
	mu        sync.Mutex
	listeners map[netip.AddrPort][]*memListener
	sent      [][]byte
	sentTo    map[netip.AddrPort]int
}

func (n *memNet) LinkMTU(ifname string) (int, error) {
	if ifname != "eth0" {
		return 0, errors.New("no such link")
	}
	return 1500, nil
}

type memSender struct {
	n *memNet
	g netip.AddrPort
}

func (s memSender) Write(b []byte) (int, error) {
	s.n.mu.Lock()
	s.n.sent = append(s.n.sent, append([]byte(nil), b...))
	if s.n.sentTo == nil {
		s.n.sentTo = map[netip.AddrPort]int{}
	}
	s.n.sentTo[s.g]++
	ls := append([]*memListener(nil), s.n.listeners[s.g]...)
	s.n.mu.Unlock()
	for _, l := range ls {
		select {
		case l.ch <- append([]byte(nil), b...):
		default:
		}
	}
	return len(b), nil
}

func (s memSender) Close() error { return nil }

func (n *memNet) MulticastSender(ifname string, g netip.AddrPort, ttl uint8) (io.WriteCloser, error) {
	return memSender{n, g}, nil
}

type memListener struct {
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

func (l *memListener) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-l.ch:
		return copy(b, p), nil, nil
	case <-l.done:
		return 0, nil, net.ErrClosed
	}
}
func (l *memListener) WriteTo([]byte, net.Addr) (int, error) { return 0, errors.New("read only") }
func (l *memListener) Close() error                          { l.once.Do(func() { close(l.done) }); return nil }
func (l *memListener) LocalAddr() net.Addr                   { return nil }
func (l *memListener) SetDeadline(time.Time) error           { return nil }
func (l *memListener) SetReadDeadline(time.Time) error       { return nil }
func (l *memListener) SetWriteDeadline(time.Time) error      { return nil }

func (n *memNet) MulticastListener(ifname string, g netip.AddrPort) (net.PacketConn, error) {
	l := &memListener{ch: make(chan []byte, 64), done: make(chan struct{})}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners == nil {
		n.listeners = map[netip.AddrPort][]*memListener{}
	}
	n.listeners[g] = append(n.listeners[g], l)
	return l, nil
}

var (
	tvip = nattest.AP("10.0.0.100:80")
	trs  = netip.MustParseAddr("10.1.0.1")
)

func director(t *testing.T) *nat.Table {
	tb := nat.New(nat.Config{})
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: tvip.Addr(), Port: tvip.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: tvip.Addr(), Port: tvip.Port()}, nat.DestConfig{Addr: trs, Port: 8080, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	return tb
}

// establish makes n connections from 10.9.0.1:1000... through tb, each
// established and at its third client packet, when a master sends it.
func establish(tb *nat.Table, n int, now int64) {
	var p nat.Packet
	for i := range n {
		c := netip.AddrPortFrom(netip.MustParseAddr("10.9.0.1"), uint16(1000+i))
		tb.Process(nattest.TCP(c, tvip, nattest.SYN, 0), &p, now)
		conn, _ := tb.Lookup(6, c, tvip)
		tb.Process(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, nattest.SYN|nattest.ACK, 0), &p, now)
		tb.Process(nattest.TCP(c, tvip, nattest.ACK, 0), &p, now)
		tb.Process(nattest.TCP(c, tvip, nattest.ACK, 10), &p, now)
	}
}

// listing is the -Lnc view of a table without expiry: proto, state,
// client, virtual, destination, sorted.
func listing(tb *nat.Table) string {
	var lines []string
	tb.Conns(func(c *nat.Conn) {
		i := c.Info()
		lines = append(lines, nat.ProtoName(i.Proto)+" "+i.State.String()+" "+i.Client.String()+" "+i.Virtual.String()+" "+i.Dest.String())
	})
	sortStrings(lines)
	return strings.Join(lines, "\n")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestMasterToBackup: connections made on a master table reach a backup
// table through the daemons, as -Lnc shows them; -L --daemon prints what
// ipvsadm prints; a stopped master sends nothing.
func TestMasterToBackup(t *testing.T) {
	net := &memNet{}
	clock := time.Unix(1_000_000, 0).UnixNano()
	mt, bt := director(t), director(t)
	md := NewDaemons(mt, net, func() int64 { return clock }, zerolog.Nop())
	bd := NewDaemons(bt, net, func() int64 { return clock }, zerolog.Nop())
	defer md.Close()
	defer bd.Close()
	if err := md.Start(Master, Config{Interface: "eth1"}); err == nil {
		t.Fatal("unknown link accepted")
	}
	if err := md.Start(Master, Config{Interface: "eth0", SyncID: 9}); err != nil {
		t.Fatal(err)
	}
	if err := md.Start(Master, Config{Interface: "eth0"}); !errors.Is(err, ErrRunning) {
		t.Fatalf("second master: %v", err)
	}
	if err := bd.Start(Backup, Config{Interface: "eth0", SyncID: 9}); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	md.List(&w)
	bd.List(&w)
	want := "master sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
		"backup sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
	if w.String() != want {
		t.Fatalf("-L --daemon:\n%s\nwant\n%s", w.String(), want)
	}
	// Speed the flush up: the test does not wait 2 s a message.
	m := md.Master()
	m.mu.Lock()
	m.flush = 0
	m.mu.Unlock()

	establish(mt, 20, clock)
	deadline := time.Now().Add(10 * time.Second)
	for bt.Len() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got, want := listing(bt), listing(mt); got != want {
		t.Fatalf("backup:\n%s\nmaster:\n%s", got, want)
	}
	if b := bd.Backup(); b.Stats.Conns.Load() != 20 || m.Stats.Records.Load() != 20 {
		t.Fatalf("records: master %d, backup %d", m.Stats.Records.Load(), b.Stats.Conns.Load())
	}
	// Another sync id is dropped and counted.
	e := Encoder{Version: 1, SyncID: 3, MaxLen: 1472}
	rec := Conn{Proto: 6, CAddr: netip.MustParseAddr("10.9.9.9"), CPort: 1, VAddr: tvip.Addr(), VPort: 80, DAddr: trs, DPort: 8080, State: 1}
	e.Put(&rec)
	var msg Message
	bd.Backup().Process(&msg, e.Bytes(), len(e.Bytes()), clock)
	if bd.Backup().Stats.Dropped(ReasonSyncID) != 1 || bt.Len() != 20 {
		t.Fatalf("other syncid applied")
	}
	if err := md.Stop(Master); err != nil {
		t.Fatal(err)
	}
	if err := md.Stop(Master); !errors.Is(err, ErrStopped) {
		t.Fatalf("second stop: %v", err)
	}
	w.Reset()
	md.List(&w)
	if w.Len() != 0 {
		t.Fatalf("stopped master listed: %q", w.String())
	}
}

// TestMasterSendAllocs: packing a connection on the packet path allocates
// nothing.
func TestMasterSendAllocs(t *testing.T) {
	tb := director(t)
	net := &memNet{}
	d := NewDaemons(tb, net, nil, zerolog.Nop())
	defer d.Close()
	if err := d.Start(Master, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	var p nat.Packet
	c := nattest.AP("10.9.0.1:1000")
	tb.Process(nattest.TCP(c, tvip, nattest.SYN, 0), &p, 0)
	conn, _ := tb.Lookup(6, c, tvip)
	m := d.Master()
	allocs := testing.AllocsPerRun(1000, func() { m.Send(conn) })
	if allocs != 0 {
		t.Errorf("Send: %v allocations", allocs)
	}
}

// nullNet is a Transport whose sockets take datagrams and drop them,
// allocating nothing.
type nullNet struct{ memNet }

type nullSender struct{}

func (nullSender) Write(b []byte) (int, error) { return len(b), nil }
func (nullSender) Close() error                { return nil }

func (*nullNet) MulticastSender(string, netip.AddrPort, uint8) (io.WriteCloser, error) {
	return nullSender{}, nil
}

// TestMasterPathAllocs: with a master running and every client packet
// sent (sync_threshold 0, sync_period 1), the packet path allocates
// nothing anywhere in the process: records packed, full buffers handed to
// the sender and recycled.
func TestMasterPathAllocs(t *testing.T) {
	tb := director(t)
	if err := tb.Apply(rules.Diff{
		{Kind: rules.SetSysctl, Sysctl: "sync_threshold", Value: 0},
		{Kind: rules.SetSysctl, Sysctl: "sync_period", Value: 1},
	}); err != nil {
		t.Fatal(err)
	}
	d := NewDaemons(tb, &nullNet{}, nil, zerolog.Nop())
	defer d.Close()
	if err := d.Start(Master, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	var p nat.Packet
	c := nattest.AP("10.9.0.1:1000")
	tb.Process(nattest.TCP(c, tvip, nattest.SYN, 0), &p, 0)
	conn, _ := tb.Lookup(6, c, tvip)
	tb.Process(nattest.TCP(netip.AddrPortFrom(conn.DAddr(), conn.DPort), c, nattest.SYN|nattest.ACK, 0), &p, 0)
	in := nattest.TCP(c, tvip, nattest.ACK, 10)
	b := make([]byte, len(in))
	m := d.Master()
	allocs := testing.AllocsPerRun(5000, func() {
		copy(b, in)
		if tb.Process(b, &p, 0).Verdict != nat.Forward {
			panic("not forwarded")
		}
	})
	if allocs != 0 {
		t.Errorf("packet path with a sync master: %v allocations a packet", allocs)
	}
	if n := m.Stats.Records.Load(); n < 5000 {
		t.Errorf("only %d records packed", n)
	}
}

// TestSyncPorts: with sync_ports 2 the master sends on ports 8848 and 8849
// (by connection) and the backup listens on both.
func TestSyncPorts(t *testing.T) {
	net := &memNet{}
	mt, bt := director(t), director(t)
	for _, tb := range []*nat.Table{mt, bt} {
		if err := tb.Apply(rules.Diff{{Kind: rules.SetSysctl, Sysctl: "sync_ports", Value: 2}}); err != nil {
			t.Fatal(err)
		}
	}
	md := NewDaemons(mt, net, nil, zerolog.Nop())
	bd := NewDaemons(bt, net, nil, zerolog.Nop())
	defer md.Close()
	defer bd.Close()
	if err := bd.Start(Backup, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := md.Start(Master, Config{Interface: "eth0"}); err != nil {
		t.Fatal(err)
	}
	net.mu.Lock()
	ports := len(net.listeners)
	net.mu.Unlock()
	if ports != 2 {
		t.Fatalf("backup listens on %d ports", ports)
	}
	m := md.Master()
	m.mu.Lock()
	m.flush = 0
	m.mu.Unlock()
	establish(mt, 64, 0)
	for deadline := time.Now().Add(10 * time.Second); bt.Len() < 64 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if bt.Len() != 64 {
		t.Fatalf("backup has %d of 64", bt.Len())
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	for _, port := range []string{"224.0.0.81:8848", "224.0.0.81:8849"} {
		if net.sentTo[netip.MustParseAddrPort(port)] == 0 {
			t.Errorf("nothing sent to %s: %v", port, net.sentTo)
		}
	}
}
