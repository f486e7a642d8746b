package admin

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

func mustApply(t *testing.T, tb *nat.Table, lines ...string) {
	t.Helper()
	cmds, err := ParseRules(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(tb, cmds, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// labTable rebuilds the state of ../shared/LAB.md: the article's rules and
// six HTTP connections closed by the client, pushed through the NAT as
// packets whose sizes add up to the counters the kernel printed (6 in and
// 4 out per connection, 396 and 353 bytes).
func labTable(t *testing.T, now int64) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{Seed: 1})
	mustApply(t, tb,
		"-A -t 172.16.1.100:80 -s rr",
		"-a -t 172.16.1.100:80 -r 172.16.1.5 -m",
		"-a -t 172.16.1.100:80 -r 172.16.1.6 -m")
	vip := nattest.AP("172.16.1.100:80")
	var p nat.Packet
	for i := range 6 {
		cli := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.10"), uint16(37500+i))
		send := func(in bool, flags uint8, size int) {
			t.Helper()
			var b []byte
			if in {
				b = nattest.TCP(cli, vip, flags, size)
			} else {
				c, _ := tb.Lookup(6, cli, vip)
				b = nattest.TCP(netip.AddrPortFrom(c.DAddr(), c.DPort), cli, flags, size)
			}
			if r := tb.Process(b, &p, now); r.Verdict != nat.Forward {
				t.Fatalf("conn %d: packet not forwarded: %+v", i, r)
			}
		}
		const A, S, F, P = nattest.ACK, nattest.SYN, nattest.FIN, nattest.PSH
		send(true, S, 60)
		send(false, S|A, 60)
		send(true, A, 52)
		send(true, P|A, 128)
		send(false, P|A, 189)
		send(true, A, 52)
		send(true, F|A, 52)
		send(false, A, 52)
		send(false, F|A, 52)
		send(true, A, 52)
	}
	return tb
}

// The transcripts of LAB.md lost their trailing blanks, and two of them
// start after ipvsadm's first line ("IP Virtual Server version ..." for
// --stats, "IPVS connection entries" for -Lnc), which ipvsadm 1.31 always
// prints; the comparisons account for exactly that.
func TestLabListings(t *testing.T) {
	tb := labTable(t, 0)
	var out bytes.Buffer
	List(&out, tb, FmtNumeric)
	want := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  172.16.1.100:80 rr
  -> 172.16.1.5:80                Masq    1      0          3
  -> 172.16.1.6:80                Masq    1      0          3
`
	if got := trimLines(out.String()); got != want {
		t.Errorf("-L -n:\n%s\nwant:\n%s", got, want)
	}
	// ipvsadm pads the last two columns: the raw line has them.
	if !strings.Contains(out.String(), "  -> 172.16.1.5:80                Masq    1      0          3         \n") {
		t.Errorf("-L -n lost ipvsadm's column padding:\n%q", out.String())
	}

	out.Reset()
	List(&out, tb, FmtNumeric|FmtStats)
	want = `Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  172.16.1.100:80                     6       36       24     2376     2118
  -> 172.16.1.5:80                       3       18       12     1188     1059
  -> 172.16.1.6:80                       3       18       12     1188     1059
`
	first, rest, _ := strings.Cut(out.String(), "\n")
	if first != "IP Virtual Server version 1.2.1 (size=4096)" || trimLines(rest) != want {
		t.Errorf("--stats:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	List(&out, tb, FmtNumeric|FmtRule)
	want = `-A -t 172.16.1.100:80 -s rr
-a -t 172.16.1.100:80 -r 172.16.1.5:80 -m -w 1
-a -t 172.16.1.100:80 -r 172.16.1.6:80 -m -w 1
`
	if out.String() != want {
		t.Errorf("-S -n:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestLabConnList(t *testing.T) {
	start := time.Unix(1000, 0)
	tb := labTable(t, start.UnixNano())
	var out bytes.Buffer
	// Four seconds later, as the kernel's 01:56 shows after a 120 s
	// TIME_WAIT.
	ListConns(&out, tb, start.Add(4*time.Second), FmtNumeric)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if lines[0] != "IPVS connection entries" ||
		lines[1] != "pro expire state       source             virtual            destination" {
		t.Fatalf("header:\n%s", out.String())
	}
	if len(lines) != 8 {
		t.Fatalf("want 6 connections:\n%s", out.String())
	}
	for _, l := range lines[2:] {
		if !strings.HasPrefix(l, "TCP 01:56  TIME_WAIT   10.0.0.10:375") || !strings.Contains(l, "172.16.1.100:80    172.16.1.") {
			t.Errorf("line %q is not a TIME_WAIT entry in ipvsadm's columns", l)
		}
	}
}

func TestTimeoutListing(t *testing.T) {
	tb := nat.New(nat.Config{})
	var out bytes.Buffer
	ListTimeout(&out, tb)
	if out.String() != "Timeout (tcp tcpfin udp): 900 120 300\n" {
		t.Errorf("got %q", out.String())
	}
	if _, err := Execute(tb, []string{"--set", "10", "20", "30"}, ""); err != nil {
		t.Fatal(err)
	}
	s, err := Execute(tb, []string{"-L", "--timeout"}, "")
	if err != nil || s != "Timeout (tcp tcpfin udp): 10 20 30\n" {
		t.Errorf("after --set: %q, %v", s, err)
	}
}

func TestLargeNum(t *testing.T) {
	for _, c := range []struct {
		n     uint64
		exact bool
		want  string
	}{
		{0, false, "        0"},
		{99999999, false, " 99999999"},
		{100000000, false, "  100000K"},
		{999999999, false, "  999999K"},
		{1000000000, false, "    1000M"},
		{123456789012, false, "     123G"},
		{123456789012345, false, "     123T"},
		{123456789012, true, " 123456789012"},
		{5, true, "        5"},
	} {
		f := Format(0)
		if c.exact {
			f = FmtExact
		}
		if got := largeNum(c.n, f); got != c.want {
			t.Errorf("largeNum(%d, exact=%v) = %q, want %q", c.n, c.exact, got, c.want)
		}
	}
}

func TestIPv6Listing(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb,
		"-A -u [fd00::100]:53 -s wrr",
		"-a -u [fd00::100]:53 -r [fd00::6]:5353 -m -w 3",
		"-a -u [fd00::100]:53 -r fd00::5 -m -w 2",
		"-A -t 10.1.1.1:443",
	)
	var out bytes.Buffer
	List(&out, tb, FmtNumeric)
	want := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.1.1.1:443 wlc
UDP  [fd00::100]:53 wrr
  -> [fd00::5]:53                 Masq    2      0          0
  -> [fd00::6]:5353               Masq    3      0          0
`
	if got := trimLines(out.String()); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	out.Reset()
	List(&out, tb, FmtNumeric|FmtRule)
	if want := "-A -t 10.1.1.1:443 -s wlc\n-A -u [fd00::100]:53 -s wrr\n-a -u [fd00::100]:53 -r [fd00::5]:53 -m -w 2\n-a -u [fd00::100]:53 -r [fd00::6]:5353 -m -w 3\n"; out.String() != want {
		t.Errorf("-S:\n%s\nwant:\n%s", out.String(), want)
	}
}

// Sorting follows libipvs's subtraction of host-order words, so addresses
// more than 2^31 apart sort "wrongly", as ipvsadm prints them.
func TestSortLikeLibipvs(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 200.0.0.1:80", "-A -t 1.0.0.1:80", "-A -t 100.0.0.1:80")
	var out bytes.Buffer
	List(&out, tb, FmtNumeric|FmtRule)
	// 1.0.0.1 - 200.0.0.1 overflows to a positive int: 200.x sorts first.
	want := "-A -t 200.0.0.1:80 -s wlc\n-A -t 1.0.0.1:80 -s wlc\n-A -t 100.0.0.1:80 -s wlc\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct {
		args string
		ok   bool
		op   Op
	}{
		{"-A -t 10.0.0.1:80 -s rr", true, OpAddService},
		{"--add-service --tcp-service 10.0.0.1:80 --scheduler rr", true, OpAddService},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3", true, OpAddDest},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m", true, OpAddDest},
		{"-Ln", true, OpList},
		{"-L -n --stats", true, OpList},
		{"-Lnc", true, OpList},
		{"-S -n", true, OpSave},
		{"-Z", true, OpZero},
		{"-C", true, OpClear},
		{"--set 900 120 300", true, OpSetTimeout},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -g", true, OpAddDest},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 5555", false, 0},
		{"-A -f 1", false, 0},
		{"-A -t 10.0.0.1", false, 0},
		{"-A -t 10.0.0.1:99999", false, 0},
		{"-A -t ::1:80", false, 0},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -w 65536", false, 0},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -w -1", false, 0},
		{"-A -D -t 10.0.0.1:80", false, 0},
		{"-a -t 10.0.0.1:80", false, 0},
		{"", false, 0},
		{"--bogus", false, 0},
	} {
		cmd, err := Parse(strings.Fields(c.args))
		if (err == nil) != c.ok {
			t.Errorf("Parse(%q): err = %v, want ok=%v", c.args, err, c.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrUsage) {
			t.Errorf("Parse(%q): %v is not a usage error", c.args, err)
		}
		if c.ok && cmd.Op != c.op {
			t.Errorf("Parse(%q): op %v, want %v", c.args, cmd.Op, c.op)
		}
	}
	c, _ := Parse(strings.Fields("-a -t 10.0.0.1:80 -r 10.0.0.2 -m"))
	if c.DestPort != 80 || c.Weight != 1 {
		t.Errorf("defaults: dest port %d weight %d, want 80 and 1", c.DestPort, c.Weight)
	}
}

// A bad line names its number and changes nothing.
func TestRulesRefusedWhole(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.0.0.2 -m")
	before := save(tb)

	_, err := ParseRules(strings.NewReader("-A -t 10.0.0.9:80\n\n# comment\n-a -t 10.0.0.9:80 -r 10.0.0.3 -m -w x\n"))
	var le *LineError
	if !errors.As(err, &le) || le.Line != 4 || !strings.Contains(err.Error(), "weight") {
		t.Fatalf("want a weight error on line 4, got %v", err)
	}

	// Well-formed lines that fail in order: the whole batch is refused.
	cmds, err := ParseRules(strings.NewReader("-A -t 10.0.0.9:80 -s rr\n-a -t 10.0.0.9:80 -r 10.0.0.3 -m\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = Apply(tb, cmds, []int{1, 2, 3}, nil)
	if !errors.As(err, &le) || le.Line != 3 || !errors.Is(err, nat.ErrDestExists) {
		t.Fatalf("want ErrDestExists on line 3, got %v", err)
	}
	if after := save(tb); after != before {
		t.Errorf("a refused batch changed the table:\n%s\nwas:\n%s", after, before)
	}
	if _, err := Execute(tb, []string{"-A", "-t", "10.0.0.5:80", "-s", "nosuch"}, ""); err == nil {
		t.Error("unknown scheduler accepted")
	}
}

// -S then -C then -R gives back the same table.
func TestSaveClearRestore(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb,
		"-A -t 10.0.0.1:80 -s wrr",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 5",
		"-a -t 10.0.0.1:80 -r 10.0.0.3:8080 -m -w 0",
		"-A -u [fd00::1]:53 -s rr",
		"-a -u [fd00::1]:53 -r fd00::2 -m")
	saved, err := Execute(tb, []string{"-S", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Execute(tb, []string{"-C"}, ""); err != nil {
		t.Fatal(err)
	}
	if len(tb.Services()) != 0 {
		t.Fatal("-C left services")
	}
	if _, err := Execute(tb, []string{"-R"}, saved); err != nil {
		t.Fatal(err)
	}
	if again := save(tb); again != saved {
		t.Errorf("restored:\n%s\nsaved:\n%s", again, saved)
	}
}

func save(tb *nat.Table) string {
	var b bytes.Buffer
	List(&b, tb, FmtNumeric|FmtRule)
	return b.String()
}

func TestControlSocket(t *testing.T) {
	tb := nat.New(nat.Config{})
	path := t.TempDir() + "/ctl.sock"
	srv, err := Listen(path, tb, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	resp, err := Call(path, Request{Args: []string{"-A", "-t", "10.0.0.1:80", "-s", "rr"}})
	if err != nil || resp.Exit != 0 {
		t.Fatalf("-A: %+v %v", resp, err)
	}
	resp, err = Call(path, Request{Args: []string{"-A", "-t", "10.0.0.1:80", "-s", "rr"}})
	if err != nil || resp.Exit == 0 || !strings.Contains(resp.Error, "exists") {
		t.Fatalf("duplicate -A: %+v %v", resp, err)
	}
	resp, err = Call(path, Request{Args: []string{"-L", "-n"}})
	if err != nil || !strings.Contains(resp.Output, "TCP  10.0.0.1:80 rr") {
		t.Fatalf("-L: %+v %v", resp, err)
	}
	if _, err := Listen(path, tb, testLogger()); err == nil {
		t.Error("a second daemon could listen on the same socket")
	}
	_, err = Call(t.TempDir()+"/none.sock", Request{Args: []string{"-L"}})
	if !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: got %v", err)
	}
}
