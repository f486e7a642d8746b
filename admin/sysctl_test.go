package admin

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// tunvsadm --sysctl NAME=VALUE sets a knob through the table's Apply;
// --sysctl and -L --sysctl list every knob as sysctl(8) prints them.
func TestSysctlSetAndList(t *testing.T) {
	tb := nat.New(nat.Config{})
	for _, args := range [][]string{
		{"--sysctl", "expire_nodest_conn=1"},
		{"--sysctl=net.ipv4.vs.conn_reuse_mode=0"},
		{"--sysctl", "sync_ports=4"},
	} {
		if out, err := Execute(tb, args, ""); err != nil || out != "" {
			t.Fatalf("%q: %q %v", args, out, err)
		}
	}
	if v, _ := tb.Sysctl("expire_nodest_conn"); v != 1 || !tb.ExpireNodestConn() {
		t.Errorf("expire_nodest_conn = %d (%v)", v, tb.ExpireNodestConn())
	}
	if tb.ConnReuseMode() != 0 {
		t.Errorf("conn_reuse_mode = %d", tb.ConnReuseMode())
	}
	// Every knob, by name; those not set at their default.
	set := map[string]int{"conn_reuse_mode": 0, "expire_nodest_conn": 1, "sync_ports": 4}
	var names []string
	for _, s := range rules.SysctlTable {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	want := ""
	for _, n := range names {
		s, _ := rules.LookupSysctl(n)
		v, ok := set[n]
		if !ok {
			v = s.Default
		}
		want += fmt.Sprintf("net.ipv4.vs.%s = %d\n", n, v)
	}
	if !strings.Contains(want, "net.ipv4.vs.conn_reuse_mode = 0\n") || !strings.Contains(want, "net.ipv4.vs.expire_nodest_conn = 1\n") {
		t.Fatalf("want:\n%s", want)
	}
	for _, args := range [][]string{{"--sysctl"}, {"-L", "--sysctl"}, {"-L", "-n", "--sysctl"}} {
		out, err := Execute(tb, args, "")
		if err != nil || out != want {
			t.Errorf("%q: %v\n%s\nwant\n%s", args, err, out, want)
		}
	}
}

// A refused value, name or form changes nothing, with a message that says
// why; on the command line and in a rules file (with its line).
func TestSysctlRefused(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr", "--sysctl expire_quiescent_template=1")
	before := save(tb)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--sysctl", "conn_reuse_mode=4"}, "out of range 0..3"},
		{[]string{"--sysctl", "expire_nodest_conn=-1"}, "out of range 0..1"},
		{[]string{"--sysctl", "sync_ports=3"}, "power of 2"},
		{[]string{"--sysctl", "nope=1"}, "no such sysctl"},
		{[]string{"--sysctl", "expire_nodest_conn"}, "want NAME=VALUE"},
		{[]string{"--sysctl", "expire_nodest_conn=yes"}, "not a number"},
		{[]string{"--sysctl", "expire_nodest_conn=1", "-n"}, "invalid option"},
		{[]string{"--sysctl", "expire_nodest_conn=1", "x"}, "unexpected argument x"},
		{[]string{"-L", "--sysctl", "x=1"}, "set one with --sysctl"},
		{[]string{"-L", "--sysctl", "--stats"}, "options conflicts"},
		{[]string{"-A", "-t", "10.0.0.2:80", "--sysctl"}, "invalid option"},
	} {
		_, err := Execute(tb, c.args, "")
		if err == nil || !strings.Contains(err.Error(), c.msg) || ExitCode(err) != 2 {
			t.Errorf("%q: %v (exit %d), want %q", c.args, err, ExitCode(err), c.msg)
		}
	}
	_, err := Execute(tb, []string{"-R"}, "-A -t 10.0.0.9:80\n--sysctl expire_nodest_conn=1\n--sysctl conn_reuse_mode=7\n")
	var le *LineError
	if !errors.As(err, &le) || le.Line != 3 || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("want line 3 out of range, got %v", err)
	}
	if after := save(tb); after != before {
		t.Errorf("a refused sysctl changed the table:\n%s\nwas:\n%s", after, before)
	}
	if v, _ := tb.Sysctl("expire_nodest_conn"); v != 0 {
		t.Errorf("expire_nodest_conn = %d after a refused batch", v)
	}
	// A change that reaches the table out of range (not through Parse)
	// is refused there, with the knob's words.
	err = Apply(tb, []Command{{Op: OpSetSysctl, Sysctl: "conn_reuse_mode", SysctlValue: 9}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "--sysctl: ") || tb.ConnReuseMode() != 1 {
		t.Errorf("Apply out of range: %v, conn_reuse_mode %d", err, tb.ConnReuseMode())
	}
}

// -S saves the knobs not at their default as --sysctl lines (and nothing
// more when all are at default, as ipvsadm -S); -R gives them back.
func TestSysctlSaveRestore(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr")
	if s := save(tb); strings.Contains(s, "sysctl") {
		t.Fatalf("defaults saved:\n%s", s)
	}
	mustApply(t, tb, "--sysctl expire_nodest_conn=1", "--sysctl sync_threshold=7")
	saved := save(tb)
	if !strings.HasSuffix(saved, "--sysctl expire_nodest_conn=1\n--sysctl sync_threshold=7\n") {
		t.Fatalf("-S:\n%s", saved)
	}
	fresh := nat.New(nat.Config{})
	if _, err := Execute(fresh, []string{"-R"}, saved); err != nil {
		t.Fatal(err)
	}
	if again := save(fresh); again != saved {
		t.Errorf("restored:\n%s\nsaved:\n%s", again, saved)
	}
	r, err := ReadRules(saved)
	if err != nil || r.Sysctls["sync_threshold"] != 7 {
		t.Errorf("ReadRules: %v %v", r.Sysctls, err)
	}
}
