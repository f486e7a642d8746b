package admin

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// DPVS's spelling: --fullnat on -a/-e, --add-laddr/--del-laddr with -z,
// --get-laddr; listings show FullNat; -S | -R round-trips it.
func TestFullNATCommands(t *testing.T) {
	tb := nat.New(nat.Config{Seed: 1})
	mustApply(t, tb,
		"-A -t 172.16.1.100:80 -s rr",
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250",
		"-P -t 172.16.1.100:80 -z 172.16.1.251",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat -w 2",
		"-a -t 172.16.1.100:80 -r 172.16.1.6 -m",
		"-A -u [fd00::100]:53 -s wlc",
		"--add-laddr -u [fd00::100]:53 -z fd00::250",
		"-a -u [fd00::100]:53 -r [fd00::5]:53 --fullnat")
	l, err := Execute(tb, []string{"-L", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l, "  -> 172.16.1.5:8080              FullNat 2      0          0") ||
		!strings.Contains(l, "  -> 172.16.1.6:80                Masq    1") {
		t.Fatalf("-L -n:\n%s", l)
	}
	var p nat.Packet
	// rr: one connection to each server, one of them full NAT.
	for _, c := range []string{"10.0.0.10:40000", "10.0.0.10:40001"} {
		if r := tb.Process(nattest.TCP(nattest.AP(c), nattest.AP("172.16.1.100:80"), nattest.SYN, 0), &p, 1); r.Verdict != nat.Forward {
			t.Fatal(r)
		}
	}
	g, err := Execute(tb, []string{"--get-laddr", "-t", "172.16.1.100:80"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := "VIP:VPORT            TOTAL    LADDR                CONFLICTS  CONNS     \n" +
		"172.16.1.100:80      2        \n" +
		"                              172.16.1.250         0          1         \n" +
		"                              172.16.1.251         0          0         \n"
	if g != want {
		t.Fatalf("--get-laddr:\n%q\nwant\n%q", g, want)
	}
	saved, err := Execute(tb, []string{"-S", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250\n--add-laddr -t 172.16.1.100:80 -z 172.16.1.251\n",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat -w 2\n",
		"--add-laddr -u [fd00::100]:53 -z fd00::250\n",
		"-a -u [fd00::100]:53 -r [fd00::5]:53 --fullnat -w 1\n",
	} {
		if !strings.Contains(saved, line) {
			t.Fatalf("-S lacks %q:\n%s", line, saved)
		}
	}
	tb2 := nat.New(nat.Config{Seed: 1})
	if _, err := Execute(tb2, []string{"-R"}, saved); err != nil {
		t.Fatal(err)
	}
	if again, _ := Execute(tb2, []string{"-S", "-n"}, ""); again != saved {
		t.Fatalf("-S | -R | -S:\n%s\nwant\n%s", again, saved)
	}
	if _, err := Execute(tb2, []string{"--del-laddr", "-t", "172.16.1.100:80", "-z", "172.16.1.250"}, ""); err != nil {
		t.Fatal(err)
	}
	// Refusals: DPVS's messages, nothing changed.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--del-laddr", "-t", "172.16.1.100:80", "-z", "172.16.1.250"}, "local address does not exist"},
		{[]string{"--add-laddr", "-t", "172.16.1.100:80", "-z", "172.16.1.251"}, "local address already exists"},
		{[]string{"--add-laddr", "-t", "172.16.1.100:80", "-z", "fd00::9"}, msgInvalid},
		{[]string{"--add-laddr", "-t", "172.16.1.100:80"}, "You need to supply the 'laddr' option for the 'add-laddr' command"},
		{[]string{"--add-laddr", "-t", "172.16.1.100:80", "-z", "nope:x:y"}, "illegal local address"},
		{[]string{"-A", "-t", "172.16.1.101:80", "-z", "172.16.1.251"}, "Illegal 'laddr' option with the 'add-service' command"},
		{[]string{"-a", "-t", "172.16.1.100:80", "-r", "172.16.1.7", "--fullnat", "-m"}, "multiple 'forwarding-method' options specified"},
	} {
		_, err := Execute(tb2, c.args, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	if _, err := Execute(tb2, []string{"--get-laddr", "-t", "172.16.1.200:80"}, ""); !errors.Is(err, nat.ErrNoService) {
		t.Errorf("--get-laddr of no service: %v", err)
	}
}

// A rules file carries the local addresses and the method: ReadRules
// builds them, and the reload's diff from a running table adds and
// removes them.
func TestFullNATRulesFile(t *testing.T) {
	text := strings.Join([]string{
		"-A -t 172.16.1.100:80 -s rr",
		"--add-laddr -t 172.16.1.100:80 -z 172.16.1.250",
		"-a -t 172.16.1.100:80 -r 172.16.1.5:8080 --fullnat -w 1",
	}, "\n")
	r, err := ReadRules(text)
	if err != nil {
		t.Fatal(err)
	}
	s := r.Services[0]
	if len(s.LocalAddrs) != 1 || s.Servers[0].Method.String() != "FullNat" {
		t.Fatalf("rules %+v", s)
	}
	tb := nat.New(nat.Config{})
	if err := tb.Apply(tb.Rules().Diff(r)); err != nil {
		t.Fatal(err)
	}
	r2, err := ReadRules(strings.Replace(text, "172.16.1.250", "172.16.1.251", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(tb.Rules().Diff(r2)); err != nil {
		t.Fatal(err)
	}
	if ls := tb.Service(nat.ServiceKey{Proto: 6, Addr: s.Addr, Port: 80}).LocalAddrs(); len(ls) != 1 || ls[0].Addr.String() != "172.16.1.251" {
		t.Fatalf("after reload: %+v", ls)
	}
}
