package director

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/tun"
)

// A rules file's --start-daemon lines start the sync daemons; a reload
// stops the one whose line is gone, restarts a changed one, leaves an
// unchanged one running, and a refused file changes nothing.
func TestRulesFileSyncDaemons(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(testRules+s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("--start-daemon master --mcast-interface sync0 --syncid 7\n--start-daemon backup --mcast-interface sync0 --syncid 7\n")
	data, _ := os.ReadFile(path)
	var checks health.Parser
	cmds, lines, err := admin.ReadRulesFile(string(data), &checks)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := tun.NewPair(tun.KindTUN, 1500)
	d, err := New(Config{Links: []Link{{Name: "sync0", Dev: a, Addrs: []netip.Prefix{netip.MustParsePrefix("10.2.0.1/24")}}}, Rules: cmds, RuleLines: lines, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	running := func() (m, b string) {
		if c, ok := d.Sync.Running(ipvssync.Master); ok {
			m = c.Interface + "/" + string(rune('0'+c.SyncID))
		}
		if c, ok := d.Sync.Running(ipvssync.Backup); ok {
			b = c.Interface + "/" + string(rune('0'+c.SyncID))
		}
		return m, b
	}
	if m, b := running(); m != "sync0/7" || b != "sync0/7" {
		t.Fatalf("at start: master %q, backup %q", m, b)
	}
	master := d.Sync.Master()

	write("--start-daemon master --mcast-interface sync0 --syncid 7\n")
	if _, err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if m, b := running(); m != "sync0/7" || b != "" || d.Sync.Master() != master {
		t.Fatalf("backup line removed: master %q (same daemon: %v), backup %q", m, d.Sync.Master() == master, b)
	}

	write("--start-daemon master --mcast-interface sync0 --syncid 8\n")
	if _, err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if m, _ := running(); m != "sync0/8" {
		t.Fatalf("syncid changed: master %q", m)
	}

	for _, bad := range []string{
		"--start-daemon master --mcast-interface sync0\n--start-daemon master --mcast-interface sync0\n",
		"--stop-daemon master\n",
		"--start-daemon master --mcast-interface sync0 --mcast-group 10.0.0.1\n",
	} {
		write(bad)
		if _, err := d.Reload(path); err == nil {
			t.Fatalf("%q accepted", bad)
		}
		if m, _ := running(); m != "sync0/8" {
			t.Fatalf("refused file %q changed the master: %q", bad, m)
		}
	}

	write("")
	if _, err := d.Reload(path); err != nil {
		t.Fatal(err)
	}
	if m, b := running(); m != "" || b != "" {
		t.Fatalf("lines removed: master %q, backup %q", m, b)
	}
}
