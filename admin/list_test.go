package admin

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
)

// goldenTable has every kind of service ipvsadm lists: IPv4 and IPv6,
// persistence with and without a mask, one-packet scheduling, scheduler
// flags, thresholds and a quiesced server.
func goldenTable(t *testing.T) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{Seed: 1})
	mustApply(t, tb,
		"-A -t 10.0.0.1:80 -s rr -p -M 255.255.255.0 -b flag-1",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 5 -x 100 -y 50",
		"-a -t 10.0.0.1:80 -r 10.0.0.3:8080 -m -w 0",
		"-A -u 10.0.0.1:53 -s wlc -p 60 -o",
		"-a -u 10.0.0.1:53 -r 10.0.0.4 -m",
		"-A -t [fd00::1]:443 -s wrr -p 600 -M 64",
		"-a -t [fd00::1]:443 -r [fd00::2]:8443 -m -x 10",
		"-A -t 192.168.100.200:8080 -s wlc",
		"-a -t 192.168.100.200:8080 -r 192.168.100.201:8080 -m -w 65535")
	return tb
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if os.Getenv("TUNVS_UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, []byte(got), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s: got\n%s\nwant\n%s", name, got, want)
	}
}

func TestGoldenListings(t *testing.T) {
	tb := goldenTable(t)
	// Counters: the 192.168.100.200 service and its server carry
	// numbers above 10^8 for the K/M/G/T columns.
	for _, s := range tb.Services() {
		if s.Addr == netip.MustParseAddr("192.168.100.200") {
			s.Stats.Conns.Store(123456789)
			s.Stats.InPkts.Store(98765432101)
			s.Stats.OutPkts.Store(5)
			s.Stats.InBytes.Store(123456789012345)
			s.Stats.OutBytes.Store(99999999)
			d := s.Dests()[0]
			d.Stats.Conns.Store(100000000)
			d.Stats.InBytes.Store(1000000000)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"list", []string{"-L", "-n"}},
		{"list-nosort", []string{"-L", "-n", "--nosort"}},
		{"stats", []string{"-L", "-n", "--stats"}},
		{"stats-exact", []string{"-L", "-n", "--stats", "--exact"}},
		{"thresholds", []string{"-L", "-n", "--thresholds"}},
		{"persistent-conn", []string{"-L", "-n", "--persistent-conn"}},
		{"save", []string{"-S", "-n"}},
		{"timeout", []string{"-L", "--timeout"}},
		{"one-service", []string{"-L", "-n", "-t", "[fd00::1]:443"}},
		{"one-service-thresholds", []string{"-Ln", "--thresholds", "-t", "10.0.0.1:80"}},
	} {
		out, err := Execute(tb, tc.args, "")
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		golden(t, tc.name, out)
	}
}

// --rate: the estimator's smoothing, one 2-second tick after known deltas.
func TestGoldenRate(t *testing.T) {
	tb := goldenTable(t)
	est := NewEstimator()
	est.Tick(tb) // starts the estimators at the current counters
	s := tb.Service(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80})
	d := s.Dests()[0]
	for _, st := range []*nat.Stats{&s.Stats, &d.Stats} {
		st.Conns.Add(10)
		st.InPkts.Add(1000)
		st.OutPkts.Add(500)
		st.InBytes.Add(1000000)
		st.OutBytes.Add(500000)
	}
	est.Tick(tb)
	// cps: (10<<9)>>2 = 1280, read (1280+0x1FF)>>10 = 1; inpps 125,
	// outpps 62; inbps ((1e6<<4)>>2+0xF)>>5 = 125000; outbps 62500.
	r := est.ServiceRates(s)
	if r != (Rates{CPS: 1, InPPS: 125, OutPPS: 62, InBPS: 125000, OutBPS: 62500}) {
		t.Errorf("rates %+v", r)
	}
	out, err := ExecuteWith(Env{Table: tb, Est: est}, []string{"-L", "-n", "--rate"}, "")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "rate", out)
	// A second tick with the same deltas: avg += (rate-avg)>>2.
	s.Stats.Conns.Add(10)
	est.Tick(tb)
	if r := est.ServiceRates(s); r.CPS != 2 || r.InPPS != 94 {
		// cps 1280+(5120-1280)/4 = 2240 -> 2; inpps 128000 + (0-128000)/4 = 96000 -> 94
		t.Errorf("second tick: %+v", r)
	}
	// -Z zeroes the rates too.
	if _, err := ExecuteWith(Env{Table: tb, Est: est}, []string{"-Z"}, ""); err != nil {
		t.Fatal(err)
	}
	if r := est.ServiceRates(s); r != (Rates{}) {
		t.Errorf("after -Z: %+v", r)
	}
}

// -Lnc with a persistence template (client port 0) and an IPv6 entry.
func TestGoldenConns(t *testing.T) {
	now := time.Unix(1000, 0)
	cs := []nat.ConnInfo{
		{Proto: nat.ProtoTCP, Client: netip.MustParseAddrPort("10.0.0.10:0"), Virtual: netip.MustParseAddrPort("10.0.0.1:80"),
			Dest: netip.MustParseAddrPort("10.0.0.2:80"), State: nat.StateNone, Expires: now.Add(300 * time.Second), Template: true},
		{Proto: nat.ProtoTCP, Client: netip.MustParseAddrPort("10.0.0.10:40000"), Virtual: netip.MustParseAddrPort("10.0.0.1:80"),
			Dest: netip.MustParseAddrPort("10.0.0.2:80"), State: nat.StateEstablished, Expires: now.Add(899500 * time.Millisecond)},
		{Proto: nat.ProtoUDP, Client: netip.MustParseAddrPort("[fd00::10]:5353"), Virtual: netip.MustParseAddrPort("[fd00::1]:53"),
			Dest: netip.MustParseAddrPort("[fd00::2]:53"), State: nat.StateUDP, Expires: now.Add(6001 * time.Second)},
	}
	var b bytes.Buffer
	b.WriteString("IPVS connection entries\n")
	b.WriteString("pro expire state       source             virtual            destination\n")
	printConns(&b, cs, now, FmtNumeric)
	golden(t, "conns", b.String())
	// With --persistent-conn: the persistence engine's columns, empty.
	b.Reset()
	b.WriteString("IPVS connection entries\n")
	b.WriteString("pro expire state       source             virtual            destination        pe name          pe_data\n")
	printConns(&b, cs, now, FmtNumeric|FmtPersistentConn)
	golden(t, "conns-persistent", b.String())
	// The header ListConns prints is the one above.
	var h bytes.Buffer
	ListConns(&h, nat.New(nat.Config{}), now, FmtNumeric|FmtPersistentConn)
	if !strings.HasPrefix(b.String(), h.String()) {
		t.Errorf("header %q", h.String())
	}
}

// Without -n, names come from /etc/hosts and /etc/services (test copies).
func TestNonNumeric(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hosts"), []byte("10.0.0.1 vip.example vip\n10.0.0.2 rs1\nfd00::2 rs6\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "services"), []byte("http 80/tcp www\ndomain 53/udp\nhttps 443/tcp\n"), 0o644)
	oh, os_ := hostsFile, servicesFile
	hostsFile, servicesFile = filepath.Join(dir, "hosts"), filepath.Join(dir, "services")
	names.loaded = nil
	defer func() { hostsFile, servicesFile = oh, os_; names.loaded = nil }()
	tb := goldenTable(t)
	out, err := Execute(tb, []string{"-L"}, "")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "names", out)
	// Names are accepted on input too.
	if _, err := Execute(tb, []string{"-a", "-t", "vip:www", "-r", "rs1:https", "-m"}, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(save(tb), "-a -t 10.0.0.1:80 -r 10.0.0.2:443 -m -w 1") {
		t.Errorf("names not resolved:\n%s", save(tb))
	}
}

// listingLine is a line a listing (args) must hold.
type listingLine struct{ args, want string }

// listingHas checks that each listing of tb holds its line.
func listingHas(t *testing.T, tb *nat.Table, lines []listingLine) {
	t.Helper()
	for _, c := range lines {
		out, err := Execute(tb, strings.Fields(c.args), "")
		if err != nil {
			t.Fatalf("%s: %v", c.args, err)
		}
		if !strings.Contains(out, c.want) {
			t.Errorf("%s: no line %q in\n%s", c.args, c.want, out)
		}
	}
}

// saveRestore checks that -S of tb, restored by -R into a new table,
// saves the same again, and returns that table.
func saveRestore(t *testing.T, tb *nat.Table) *nat.Table {
	t.Helper()
	saved, _ := Execute(tb, []string{"-S", "-n"}, "")
	tb2 := nat.New(nat.Config{})
	if _, err := Execute(tb2, []string{"-R"}, saved); err != nil {
		t.Fatal(err)
	}
	if again, _ := Execute(tb2, []string{"-S", "-n"}, ""); again != saved {
		t.Errorf("-S | -R | -S: got\n%s\nwant\n%s", again, saved)
	}
	return tb2
}

// A direct-routing real server lists as ipvsadm lists it: Route, with the
// service's port; -S saves it with -g, and -R of that makes it again.
func TestRouteListing(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.0.0.2 -g -w 2", "-a -t 10.0.0.1:80 -r 10.0.0.3:8080 -m")
	listingHas(t, tb, []listingLine{
		{"-L -n", "  -> 10.0.0.2:80                  Route   2      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.2:80                  Route   n/a           2      0          0         \n"},
		{"-S -n", "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 2\n"},
	})
	saveRestore(t, tb)
}
