package netstack_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/pcapng"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/netstack"
	"github.com/tunvs/tunvs/tun"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func observedDirector(t *testing.T, cfg netstack.Config) (*netstack.Host, peer, peer) {
	tb := nat.New(nat.Config{})
	cfg.NAT, cfg.Forwarding = tb, true
	h := netstack.New(cfg)
	t.Cleanup(func() { h.Close() })
	ca, cb := tun.NewPair(tun.KindTUN, 1500)
	ra, rb := tun.NewPair(tun.KindTUN, 1500)
	for _, l := range []struct {
		name string
		dev  tun.Device
		addr []string
	}{
		{"c", ca, []string{"10.0.0.1/24", "172.16.1.100/32"}},
		{"r", ra, []string{"172.16.1.3/24"}},
	} {
		if _, err := h.AddNIC(l.name, l.dev); err != nil {
			t.Fatal(err)
		}
		for _, a := range l.addr {
			if err := h.AddAddress(l.name, netip.MustParsePrefix(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tb.AddService(nat.ServiceConfig{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80, Scheduler: "rr"})
	tb.AddDest(nat.ServiceKey{Proto: 6, Addr: netip.MustParseAddr("172.16.1.100"), Port: 80}, nat.DestConfig{Addr: netip.MustParseAddr("172.16.1.5"), Port: 8080, Weight: 1})
	return h, peer{t, cb}, peer{t, rb}
}

func isTCP4(b []byte) bool { return len(b) >= 40 && b[0]>>4 == 4 && b[9] == 6 }

// --trace: a connection's packets, step by step, in the LVS-NAT walk's
// words; past the rate limit, a summary of what was not traced.
func TestTrace(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_000_000_000_000)
	var out syncBuf
	for _, bypass := range []bool{true, false} {
		out = syncBuf{}
		_, c, r := observedDirector(t, netstack.Config{Bypass: bypass, Trace: &out, TraceRate: 3, Now: clock.Load})
		cli, vip, rip := nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.AP("172.16.1.5:8080")
		c.send(nattest.TCP(cli, vip, nattest.SYN, 0))
		r.recv(isTCP4)
		r.send(nattest.TCP(rip, cli, nattest.SYN|nattest.ACK, 0))
		c.recv(isTCP4)
		c.send(nattest.TCP(cli, vip, nattest.ACK, 0))
		r.recv(isTCP4)
		// Each packet's lines are written when its walk ends, by the
		// goroutine of the NIC it came in on: packet 2's may land after
		// packet 3's. Wait for all of them.
		wants := []string{
			"#1.1 arrived on c: TCP 10.0.0.10:40000 -> 172.16.1.100:80 [SYN], 40 bytes",
			"#1.2 no connection: matched virtual service TCP 172.16.1.100:80 (rr)",
			"#1.3 scheduled to real server 172.16.1.5:8080, connection recorded (both directions)",
			"#1.4 DNAT: destination 172.16.1.100:80 -> 172.16.1.5:8080",
			"#2.1 arrived on r: TCP 172.16.1.5:8080 -> 10.0.0.10:40000 [SYN,ACK]",
			"#2.2 connection found (real server -> client reply, SYN_RECV)",
			"#2.3 SNAT: source 172.16.1.5:8080 -> 172.16.1.100:80",
			"#3.2 connection found (client -> real server",
		}
		all := func(got string) bool {
			for _, w := range wants {
				if !strings.Contains(got, w) {
					return false
				}
			}
			return true
		}
		got := out.String()
		for deadline := time.Now().Add(5 * time.Second); !all(got) && time.Now().Before(deadline); got = out.String() {
			time.Sleep(5 * time.Millisecond)
		}
		for _, want := range wants {
			if !strings.Contains(got, want) {
				t.Errorf("bypass=%v: trace lacks %q:\n%s", bypass, want, got)
			}
		}
		if bypass && !strings.Contains(got, "#1.5 bypass: written straight out of r (TTL decremented, the stack skipped)\n") {
			t.Errorf("no bypass step:\n%s", got)
		}
		if !bypass && !strings.Contains(got, "#1.5 routed by the stack: out r to 172.16.1.5\n") {
			t.Errorf("no routed step:\n%s", got)
		}
		if bypass && !strings.Contains(got, "#2.4 bypass: written straight out of c") {
			t.Errorf("no bypass step:\n%s", got)
		}
		if !bypass && !strings.Contains(got, "#2.4 routed by the stack: out c to 10.0.0.10") {
			t.Errorf("no routed step:\n%s", got)
		}
		// Over the limit (3 a second): not traced, then summarised
		// when the next second begins.
		c.send(nattest.TCP(cli, vip, nattest.ACK, 0))
		r.recv(isTCP4)
		clock.Add(1_000_000_000)
		c.send(nattest.TCP(cli, vip, nattest.ACK, 0))
		r.recv(isTCP4)
		// A packet's lines are written when its walk ends, which may
		// be just after the peer has it: wait for them.
		want := "trace: 1 packets not traced in the last second (limit 3/s)\n#4.1 arrived on c"
		deadline := time.Now().Add(2 * time.Second)
		for got = out.String(); !strings.Contains(got, want) && time.Now().Before(deadline); got = out.String() {
			time.Sleep(5 * time.Millisecond)
		}
		if !strings.Contains(got, want) {
			t.Errorf("rate limit:\n%s", got)
		}
	}
}

// --pcap: both directions of every link, in one pcapng file with an
// interface per link and each packet's direction.
func TestPcap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cap.pcap")
	pw, err := netstack.NewPcapWriter(path, map[string]tun.Kind{"c": tun.KindTUN, "r": tun.KindTUN})
	if err != nil {
		t.Fatal(err)
	}
	h, c, r := observedDirector(t, netstack.Config{Bypass: true, Capture: pw})
	cli, vip, rip := nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.AP("172.16.1.5:8080")
	c.send(nattest.TCP(cli, vip, nattest.SYN, 0))
	r.recv(isTCP4)
	r.send(nattest.TCP(rip, cli, nattest.SYN|nattest.ACK, 0))
	c.recv(isTCP4)
	h.Close()
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ifaces, pkts, err := pcapng.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ifaces) != 2 || ifaces[0].Name != "c" || ifaces[1].Name != "r" ||
		ifaces[0].LinkType != netstack.LinkTypeRaw || ifaces[1].LinkType != netstack.LinkTypeRaw {
		t.Fatalf("interfaces %+v", ifaces)
	}
	type seen struct {
		link     string
		dir      uint32
		src, dst netip.AddrPort
	}
	var got []seen
	for _, p := range pkts {
		d := p.Data
		if len(d) < 24 || d[0]>>4 != 4 {
			t.Fatalf("not an IPv4 packet: %x", d)
		}
		got = append(got, seen{ifaces[p.Iface].Name, p.Dir,
			netip.AddrPortFrom(netip.AddrFrom4([4]byte(d[12:16])), binary.BigEndian.Uint16(d[20:])),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte(d[16:20])), binary.BigEndian.Uint16(d[22:]))})
	}
	want := []seen{
		{"c", pcapng.DirInbound, cli, vip},
		{"r", pcapng.DirOutbound, cli, rip},
		{"r", pcapng.DirInbound, rip, cli},
		{"c", pcapng.DirOutbound, vip, cli},
	}
	if len(got) != len(want) {
		t.Fatalf("captured %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("packet %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	// Links of both kinds: still one file, an interface of each type.
	p2 := filepath.Join(t.TempDir(), "mixed.pcapng")
	pw2, err := netstack.NewPcapWriter(p2, map[string]tun.Kind{"b": tun.KindTAP, "a": tun.KindTUN})
	if err != nil {
		t.Fatal(err)
	}
	pw2.Frame("a", tun.KindTUN, false, nattest.TCP(cli, vip, nattest.SYN, 0))
	pw2.Frame("b", tun.KindTAP, true, append(make([]byte, 12), append([]byte{0x08, 0x00}, nattest.TCP(cli, rip, nattest.SYN, 0)...)...))
	pw2.Frame("nosuch", tun.KindTAP, true, []byte{1})
	if err := pw2.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p2)
	if err != nil {
		t.Fatal(err)
	}
	ifaces, pkts, err = pcapng.Read(bytes.NewReader(b))
	if err != nil || len(ifaces) != 2 || ifaces[0] != (pcapng.Interface{Name: "a", LinkType: netstack.LinkTypeRaw, SnapLen: ifaces[0].SnapLen}) ||
		ifaces[1] != (pcapng.Interface{Name: "b", LinkType: netstack.LinkTypeEthernet, SnapLen: ifaces[0].SnapLen}) || len(pkts) != 2 {
		t.Fatalf("mixed: %v %+v %d packets", err, ifaces, len(pkts))
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("no tshark to read the file back")
		return
	}
	out, err := exec.Command(tshark, "-r", p2, "-T", "fields", "-e", "frame.interface_name",
		"-e", "frame.packet_flags_direction", "-e", "ip.dst", "-e", "tcp.dstport").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	if w := "a\t0x00000001\t172.16.1.100\t80\nb\t0x00000002\t172.16.1.5\t8080\n"; string(out) != w {
		t.Errorf("tshark -r:\n%s\nwant\n%s", out, w)
	}
}
