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

// --pcap: both directions of every link, in a file tcpdump reads.
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
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(b[0:]) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != netstack.LinkTypeRaw {
		t.Fatalf("header %x", b[:24])
	}
	var n int
	for off := 24; off+16 <= len(b); n++ {
		off += 16 + int(binary.LittleEndian.Uint32(b[off+8:]))
	}
	if n != 4 {
		t.Errorf("%d packets captured, want 4 (SYN in and out, SYN-ACK in and out)", n)
	}
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Log("no tcpdump to read the file back")
		return
	}
	out, err := exec.Command(tcpdump, "-n", "-r", path).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	for _, want := range []string{
		"10.0.0.10.40000 > 172.16.1.100.80: Flags [S]",
		"10.0.0.10.40000 > 172.16.1.5.8080: Flags [S]",
		"172.16.1.5.8080 > 10.0.0.10.40000: Flags [S.]",
		"172.16.1.100.80 > 10.0.0.10.40000: Flags [S.]",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tcpdump -r lacks %q:\n%s", want, out)
		}
	}
	// Links of both kinds: a file per link, each with its link type.
	p2 := filepath.Join(t.TempDir(), "mixed.pcap")
	pw2, err := netstack.NewPcapWriter(p2, map[string]tun.Kind{"a": tun.KindTUN, "b": tun.KindTAP})
	if err != nil {
		t.Fatal(err)
	}
	pw2.Close()
	for name, lt := range map[string]uint32{"a": netstack.LinkTypeRaw, "b": netstack.LinkTypeEthernet} {
		b, err := os.ReadFile(netstack.PerLinkPath(p2, name))
		if err != nil || binary.LittleEndian.Uint32(b[20:]) != lt {
			t.Errorf("link %s: %v %x", name, err, b)
		}
	}
}
