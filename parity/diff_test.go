package parity

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestDiff: the comparison itself finds what it must (a harness that
// cannot fail proves nothing).
func TestDiff(t *testing.T) {
	k := Result{Events: []Event{
		{Line: 1, Step: "ipvsadm -A -t 10.0.0.100:80", Outcome: "ok"},
		{Line: 2, Step: "tcp 10.2.0.1:1 10.0.0.100:80 hold", Outcome: "10.1.0.1:80"},
		{Line: 3, Step: "tcp 10.2.0.1:2 10.0.0.100:80 hold", Outcome: Refused},
		{Line: 4, Step: "list", Outcome: "a  \nb 1\n\n"},
	}}
	same := Result{Events: append([]Event(nil), k.Events...)}
	same.Events[3].Outcome = "a\nb 1"
	if d := Diff(k, same); len(d) != 0 {
		t.Errorf("trailing blanks count as a difference: %v", d)
	}
	u := Result{Events: append([]Event(nil), k.Events...)}
	u.Events[1].Outcome = "10.1.0.2:80"
	u.Events[2].Outcome = Timeout
	u.Events[3].Outcome = "a\nb 2"
	d := Diff(k, u)
	if len(d) != 3 || !strings.Contains(d[0], "kernel 10.1.0.1:80, tunvs 10.1.0.2:80") ||
		!strings.Contains(d[1], "kernel refused, tunvs timeout") || !strings.Contains(d[2], "list differs") {
		t.Errorf("Diff = %q", d)
	}
	if d := Diff(k, Result{Events: k.Events[:2]}); len(d) != 1 {
		t.Errorf("a missing event: %q", d)
	}
}

func TestParse(t *testing.T) {
	sc, err := Parse("x", strings.NewReader(`
# comment
ipvsadm -A -t 10.0.0.100:80 -s rr   # trailing comment
ipvsadm -a -t 10.0.0.100:80 -r 10.1.0.1:80 -m
tcp 10.2.0.1:100-102 10.0.0.100:80 close
tcp 10.2.0.2:100 10.0.0.100:80
close 10.2.0.2:100
udp 10.2.0.3:5 10.0.0.100:80
list
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sc.Steps {
		got = append(got, s.String())
	}
	want := []string{
		"ipvsadm -A -t 10.0.0.100:80 -s rr",
		"ipvsadm -a -t 10.0.0.100:80 -r 10.1.0.1:80 -m",
		"tcp 10.2.0.1:100 10.0.0.100:80 close",
		"tcp 10.2.0.1:101 10.0.0.100:80 close",
		"tcp 10.2.0.1:102 10.0.0.100:80 close",
		"tcp 10.2.0.2:100 10.0.0.100:80 hold",
		"close 10.2.0.2:100",
		"udp 10.2.0.3:5 10.0.0.100:80",
		"list",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s", strings.Join(got, "\n"))
	}
	rs, vips := sc.RealServers()
	if len(rs) != 1 || len(vips) != 1 || len(sc.Clients()) != 3 {
		t.Errorf("rs %v vips %v clients %v", rs, vips, sc.Clients())
	}
	for _, bad := range []string{"tcp 10.2.0.1:1", "udp 10.2.0.1:1 10.0.0.1:80 close", "tcp 10.2.0.1:5-4 10.0.0.1:80", "frob"} {
		if _, err := Parse("x", strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

var update = flag.Bool("update", false, "rewrite generated scenarios")

// TestCLIListCurrent: scenarios/cli_list.txt is what ListCases generates.
func TestCLIListCurrent(t *testing.T) {
	checkGenerated(t, "scenarios/cli_list.txt", ListCases(), "TestCLIListCurrent")
}

// checkGenerated fails unless the file at path holds want; with -update it
// writes want there first.
func checkGenerated(t *testing.T, path, want, test string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is stale: go test ./parity -run %s -update", path, test)
	}
}

// The keepalived scenarios' tunvs side loads their configuration without
// error (the kernel's side needs the VM: make ipvs-parity); 10.1.0.2's
// port is the service's in both (NAT's own, DR's reset to it).
func TestKeepalivedStepTunvs(t *testing.T) {
	for _, f := range []string{"keepalived_lvs.txt", "keepalived_lvs_methods.txt"} {
		sc, err := ParseFile("scenarios/" + f)
		if err != nil {
			t.Fatal(err)
		}
		r := RunTunvs(sc)
		if len(r.Events) == 0 || strings.HasPrefix(r.Events[0].Outcome, "error") || !strings.Contains(r.Events[0].Outcome, "10.1.0.2:80") {
			t.Fatalf("%s: %+v", f, r.Events)
		}
		for _, ev := range r.Events {
			t.Logf("%s: %s\nwarnings: %s", f, ev.Outcome, ev.Detail)
		}
	}
}
