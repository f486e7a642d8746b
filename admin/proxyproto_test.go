package admin

import (
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// DPVS's --proxy-protocol: on -A/-E for the service, on -a/-e for one
// real server (which wins); -L shows " ppv2" after the scheduler as DPVS
// does; -S | -R, rules files and reloads carry it.
func TestProxyProtocolCommands(t *testing.T) {
	tb := nat.New(nat.Config{Seed: 1})
	mustApply(t, tb,
		"-A -t 172.16.1.100:80 -s rr --proxy-protocol v2",
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat",
		"-a -t 172.16.1.100:80 -r 172.16.1.6:8080 --fullnat --proxy-protocol disable",
		"-a -t 172.16.1.100:80 -r 172.16.1.7:8080 --fullnat --proxy-protocol v1-insecure")
	l, err := Execute(tb, []string{"-L", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"TCP  172.16.1.100:80 rr ppv2\n",
		"  -> 172.16.1.5:8080              FullNat 1      0          0         \n",
		"  -> 172.16.1.6:8080              FullNat 1      0          0          ppdisable\n",
		"  -> 172.16.1.7:8080              FullNat 1      0          0          ppv1-insecure\n",
	} {
		if !strings.Contains(l, want) {
			t.Fatalf("-L -n lacks %q:\n%s", want, l)
		}
	}
	saved, err := Execute(tb, []string{"-S", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-A -t 172.16.1.100:80 -s rr --proxy-protocol v2\n",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat -w 1\n",
		"-a -t 172.16.1.100:80 -r 172.16.1.6:8080 --fullnat -w 1 --proxy-protocol disable\n",
	} {
		if !strings.Contains(saved, want) {
			t.Fatalf("-S lacks %q:\n%s", want, saved)
		}
	}
	tb2 := nat.New(nat.Config{Seed: 1})
	if _, err := Execute(tb2, []string{"-R"}, saved); err != nil {
		t.Fatal(err)
	}
	if again, _ := Execute(tb2, []string{"-S", "-n"}, ""); again != saved {
		t.Fatalf("-S | -R | -S:\n%s\nwant\n%s", again, saved)
	}
	// -E without the option sends the whole service, as ipvsadm does:
	// the setting goes.
	mustApply(t, tb2, "-E -t 172.16.1.100:80 -s rr")
	if l, _ := Execute(tb2, []string{"-L", "-n"}, ""); strings.Contains(l, "rr ppv2") {
		t.Fatalf("-E kept it:\n%s", l)
	}
	mustApply(t, tb2, "-e -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat --proxy-protocol v1")
	if d := tb2.Service(nat.ServiceKey{Proto: 6, Addr: mustAddr("172.16.1.100"), Port: 80}).Dests(); d[len(d)-1].ProxyProtocol() != rules.ProxyV1 {
		t.Fatalf("-e: %v", d[len(d)-1].ProxyProtocol())
	}
	// Refusals, nothing changed.
	before, _ := Execute(tb2, []string{"-S", "-n"}, "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-A", "-t", "172.16.1.101:80", "--proxy-protocol", "v3"}, "illegal proxy protocol \"v3\""},
		{[]string{"-A", "-u", "172.16.1.101:53", "--proxy-protocol", "v1"}, "the PROXY protocol is for TCP services"},
		{[]string{"-a", "-t", "172.16.1.100:80", "-r", "172.16.1.9", "-m", "--proxy-protocol", "v2"}, "the PROXY protocol needs --fullnat"},
		{[]string{"-D", "-t", "172.16.1.100:80", "--proxy-protocol", "v2"}, "Illegal 'proxy-protocol' option with the 'delete-service' command"},
	} {
		_, err := Execute(tb2, c.args, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if after, _ := Execute(tb2, []string{"-S", "-n"}, ""); after != before {
		t.Fatalf("a refused command changed the rules:\n%s", after)
	}
}

func TestProxyProtocolRulesFile(t *testing.T) {
	text := "-A -t 172.16.1.100:80 -s rr --proxy-protocol v1\n" +
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250\n" +
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat --proxy-protocol v2\n"
	r, err := ReadRules(text)
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Services[0]; s.ProxyProtocol != rules.ProxyV1 || s.Servers[0].ProxyProtocol != rules.ProxyV2 {
		t.Fatalf("rules %+v", s)
	}
	tb := nat.New(nat.Config{})
	if err := tb.Apply(tb.Rules().Diff(r)); err != nil {
		t.Fatal(err)
	}
	// A reload that drops the server's own setting edits the server.
	r2, err := ReadRules(strings.Replace(text, " --proxy-protocol v2", "", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(tb.Rules().Diff(r2)); err != nil {
		t.Fatal(err)
	}
	if got := tb.Rules(); got.Services[0].Servers[0].ProxyProtocol != rules.ProxyUnset || got.Services[0].ProxyProtocol != rules.ProxyV1 {
		t.Fatalf("after reload: %+v", got.Services[0])
	}
}

// -Lnc with full-NAT connections has DPVS's local column between the
// virtual address and the destination (print_conn_entry); a masqueraded
// connection shows its client there. Without full NAT the listing is
// ipvsadm's.
func TestFullNATConnListing(t *testing.T) {
	tb := nat.New(nat.Config{Seed: 1, LocalPortMin: 5000, LocalPortMax: 5000})
	mustApply(t, tb,
		"-A -t 172.16.1.100:80 -s rr",
		"-a -t 172.16.1.100:80 -r 172.16.1.6:80 -m")
	var p nat.Packet
	tb.Process(nattest.TCP(nattest.AP("10.0.0.10:40001"), nattest.AP("172.16.1.100:80"), nattest.SYN, 0), &p, 1)
	l, err := Execute(tb, []string{"-L", "-n", "-c"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(l, "local") {
		t.Fatalf("masquerading only, yet a local column:\n%s", l)
	}
	mustApply(t, tb,
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat")
	tb.Process(nattest.TCP(nattest.AP("10.0.0.10:40000"), nattest.AP("172.16.1.100:80"), nattest.SYN, 0), &p, 1)
	l, err = Execute(tb, []string{"-L", "-n", "-c"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pro expire state       source             virtual            local              destination\n",
		"TCP 00:00  SYN_RECV    10.0.0.10:40000    172.16.1.100:80    172.16.1.250:5000  172.16.1.5:8080\n",
		"TCP 00:00  SYN_RECV    10.0.0.10:40001    172.16.1.100:80    10.0.0.10:40001    172.16.1.6:80\n",
	} {
		if !strings.Contains(l, want) {
			t.Fatalf("-Lnc lacks %q:\n%s", want, l)
		}
	}
}
