package director

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/keepalived"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// The checks never run in these tests (an hour's warmup): only the
// manager's life is looked at, not its probes.
const checkLine = "--check -t 10.0.0.100:80 tcp warmup=3600 interval=3600\n"

func withChecks(t *testing.T) (*Director, string) {
	t.Helper()
	var p health.Parser
	if err := p.Line(checkLine); err != nil {
		t.Fatal(err)
	}
	d, _, _ := newDirector(t, testRules, Config{Health: p.Config()})
	if d.Health == nil {
		t.Fatal("no health checks")
	}
	return d, filepath.Join(t.TempDir(), "rules")
}

// counters is every counter a refused reload must leave alone.
func counters(d *Director) string {
	var b strings.Builder
	for _, s := range d.NAT.Services() {
		fmt.Fprintf(&b, "%v %+v\n", s.AddrPort(), s.Stats.Snapshot())
		for _, ds := range s.Dests() {
			fmt.Fprintf(&b, "  %v %+v w%d\n", ds.AddrPort(), ds.Stats.Snapshot(), ds.Weight())
		}
	}
	return b.String()
}

// A reload refused after the old checks were stopped (issue 14: "if that
// fails, health stays off and the log says nothing changed") starts the
// old checks again, says nothing changed, and changes nothing.
func TestReloadFailureKeepsHealth(t *testing.T) {
	d, path := withChecks(t)
	os.WriteFile(path, []byte(testRules+"-a -t 10.0.0.100:80 -r 10.0.0.7 -m\n"+checkLine), 0o644)
	testHookReload = func(diff rules.Diff) rules.Diff {
		// What the table then refuses: the service vanished under the
		// diff (it cannot, with the writer lock held; the hook makes it).
		return append(diff, rules.Change{Kind: rules.DelServer,
			Service: rules.Service{ServiceKey: nat.ServiceKey{Proto: nat.ProtoTCP, Addr: netipAddr("10.0.0.9"), Port: 80}}})
	}
	t.Cleanup(func() { testHookReload = nil })
	before, beforeCounters := save(d), counters(d)
	cmds, err := d.Reload(path)
	if err == nil || !strings.Contains(err.Error(), "rules unchanged") {
		t.Fatalf("reload: %v %v", cmds, err)
	}
	if save(d) != before || counters(d) != beforeCounters {
		t.Errorf("a refused reload changed the table:\n%s", save(d))
	}
	d.mu.Lock()
	h := d.Health
	d.mu.Unlock()
	if h == nil || len(h.Snapshot()) != 1 {
		t.Fatal("health checking is off after a refused reload")
	}
}

// A file refused by validation (a check naming a server the file does not
// have) leaves the table byte-identical, its counters too, and the
// running checks as they were.
func TestReloadRefusedByteIdentical(t *testing.T) {
	d, path := withChecks(t)
	h := d.Health
	before, beforeCounters := save(d), counters(d)
	os.WriteFile(path, []byte("-A -t 10.0.0.100:80 -s wlc\n-a -t 10.0.0.100:80 -r 10.0.0.8 -m\n"+
		"--check -t 10.0.0.100:80 -r 10.0.0.5:80 tcp\n"), 0o644)
	// The check's line is named, as a bad ipvsadm line's is.
	if _, err := d.Reload(path); err == nil || !strings.Contains(err.Error(), "not a real server") ||
		!strings.HasPrefix(err.Error(), "line 3: ") {
		t.Fatalf("reload: %v", err)
	}
	if save(d) != before || counters(d) != beforeCounters {
		t.Errorf("a refused reload changed the table:\n%s", save(d))
	}
	if d.Health != h {
		t.Error("a refused reload replaced the checks")
	}
	// And a good one replaces them.
	os.WriteFile(path, []byte(testRules+checkLine), 0o644)
	if _, err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if d.Health == nil || d.Health == h {
		t.Error("checks not restarted")
	}
}

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// SIGHUP's reload carries the rules file's --sysctl lines; a refused
// value names its line and changes nothing; a knob the file no longer
// names keeps its value (as a file without --set keeps the timeouts).
func TestReloadSysctls(t *testing.T) {
	d, _, _ := newDirector(t, testRules+"--sysctl conn_reuse_mode=0\n", Config{})
	if d.NAT.ConnReuseMode() != 0 {
		t.Fatalf("conn_reuse_mode at start: %d", d.NAT.ConnReuseMode())
	}
	path := filepath.Join(t.TempDir(), "rules")
	os.WriteFile(path, []byte(testRules+"--sysctl expire_nodest_conn=1\n"), 0o644)
	if _, err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if !d.NAT.ExpireNodestConn() || d.NAT.ConnReuseMode() != 0 {
		t.Fatalf("after reload: expire_nodest_conn %v conn_reuse_mode %d", d.NAT.ExpireNodestConn(), d.NAT.ConnReuseMode())
	}
	before, beforeCounters := save(d), counters(d)
	os.WriteFile(path, []byte(testRules+"--sysctl expire_nodest_conn=0\n--sysctl sync_ports=6\n"), 0o644)
	if _, err := d.Reload(path); err == nil || !strings.HasPrefix(err.Error(), "line 5: ") || !strings.Contains(err.Error(), "power of 2") {
		t.Fatalf("reload: %v", err)
	}
	if save(d) != before || counters(d) != beforeCounters || !d.NAT.ExpireNodestConn() {
		t.Errorf("a refused reload changed the table:\n%s", save(d))
	}
}

// SIGHUP with --keepalived-conf: the file reread, the difference applied
// (a real server added, a weight changed), the checks restarted; a file
// refused changes nothing.
func TestReloadKeepalived(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keepalived.conf")
	conf := func(w2 int, extra string) string {
		return fmt.Sprintf(`virtual_server 10.0.0.100 80 {
	lb_algo rr
	protocol TCP
	real_server 10.0.0.5 80 {
		TCP_CHECK {
			warmup 3600
		}
	}
	real_server 10.0.0.6 80 {
		weight %d
	}
%s}
`, w2, extra)
	}
	os.WriteFile(path, []byte(conf(2, "")), 0o644)
	kc, err := keepalived.Load(path, keepalived.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := newDirector(t, testRules, Config{})
	if save(d) != "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.5:80 -m -w 1\n-a -t 10.0.0.100:80 -r 10.0.0.6:80 -m -w 2\n" {
		t.Fatalf("start:\n%s", save(d))
	}
	if _, err := d.ReloadRules(kc.Rules); err != nil || d.Health == nil {
		t.Fatalf("same file: %v, health %v", err, d.Health)
	}
	os.WriteFile(path, []byte(conf(5, "\treal_server 10.0.0.7 80 {\n\t}\n")), 0o644)
	if kc, err = keepalived.Load(path, keepalived.Options{}); err != nil {
		t.Fatal(err)
	}
	cmds, err := d.ReloadRules(kc.Rules)
	if err != nil || len(cmds) != 2 {
		t.Fatalf("reload: %v %v", cmds, err)
	}
	want := "-A -t 10.0.0.100:80 -s rr\n-a -t 10.0.0.100:80 -r 10.0.0.5:80 -m -w 1\n-a -t 10.0.0.100:80 -r 10.0.0.6:80 -m -w 5\n-a -t 10.0.0.100:80 -r 10.0.0.7:80 -m -w 1\n"
	if save(d) != want {
		t.Fatalf("after reload:\n%s", save(d))
	}
	// Full NAT has no name in keepalived.conf: keepalived refuses it.
	os.WriteFile(path, []byte(conf(5, "\tlb_kind FNAT\n")), 0o644)
	if _, err := keepalived.Load(path, keepalived.Options{}); err == nil || !strings.Contains(err.Error(), path+":12: ") {
		t.Fatalf("FNAT: %v", err)
	}
	if save(d) != want {
		t.Errorf("a refused file changed the table:\n%s", save(d))
	}
}
