package admin

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/sched"
)

func TestParseForms(t *testing.T) {
	for _, tc := range []struct {
		args string
		want func(c Command) bool
	}{
		{"-A -t 10.0.0.1:80 -s rr -p 600 -M 255.255.0.0", func(c Command) bool {
			return c.Op == OpAddService && c.Persistent && c.PersistTimeout == 600 && c.PersistMaskBits == 16 && c.Scheduler == "rr"
		}},
		{"-A -t 10.0.0.1:0 -p", func(c Command) bool { return c.Persistent && c.PersistTimeout == 360 && c.Port == 0 }},
		{"-A -p -t 10.0.0.1:80", func(c Command) bool { return c.Persistent && c.PersistTimeout == 360 && c.HasService }},
		{"-A -t 10.0.0.1:80 -p=5", func(c Command) bool { return c.Persistent && c.PersistTimeout == 5 }},
		{"-A -t 010.1:+80", func(c Command) bool { return c.Addr == netip.MustParseAddr("8.0.0.1") && c.Port == 80 }},
		{"-A -t 2001:db8::5 -p", func(c Command) bool { return c.Addr == netip.MustParseAddr("2001:db8::5") && c.Port == 0 }},
		{"--add-service --tcp-service=10.0.0.1:80 --scheduler=wrr --persistent=30 --netmask 255.255.255.0", func(c Command) bool {
			return c.Op == OpAddService && c.Scheduler == "wrr" && c.PersistTimeout == 30 && c.PersistMaskBits == 24
		}},
		{"-At10.0.0.1:80", func(c Command) bool { return c.Op == OpAddService && c.HasService && c.Port == 80 }},
		{"-A -u 10.0.0.1:53 -o", func(c Command) bool { return c.OnePacket && c.Proto == nat.ProtoUDP }},
		{"-A -t [fd00::1]:80 -p -M 64", func(c Command) bool { return c.PersistMaskBits == 64 && c.Addr.Is6() }},
		{"-A -t 10.0.0.1:80 -s rr -b flag-1,flag-2", func(c Command) bool { return c.SchedFlags == sched.FlagSched1|sched.FlagSched2 }},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3 -x 100 -y 10", func(c Command) bool {
			return c.Op == OpAddDest && c.Weight == 3 && c.UThreshold == 100 && c.LThreshold == 10 && c.DestPort == 80
		}},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2:8080 --masquerading --weight=0 --u-threshold 5 --l-threshold=1", func(c Command) bool {
			return c.Weight == 0 && c.HasWeight && c.UThreshold == 5 && c.LThreshold == 1 && c.DestPort == 8080
		}},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -mw3", func(c Command) bool { return c.Weight == 3 }},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2", func(c Command) bool { return c.Weight == 1 }},
		{"-Ln", func(c Command) bool { return c.Op == OpList && c.Format == FmtNumeric }},
		{"-lnc", func(c Command) bool { return c.Op == OpList && c.Format == FmtNumeric|FmtConn }},
		{"-L --stats --rate --thresholds --persistent-conn --exact --sort -n", func(c Command) bool {
			return c.Format == FmtStats|FmtRate|FmtThresholds|FmtPersistentConn|FmtExact|FmtNumeric
		}},
		{"-L --timeout", func(c Command) bool { return c.Format == FmtTimeout }},
		{"-L --daemon", func(c Command) bool { return c.Format == FmtDaemon }},
		{"--list --numeric --nosort -t 10.0.0.1:80", func(c Command) bool { return c.HasService && c.Format == FmtNumeric|FmtNoSort }},
		{"-Z -t 10.0.0.1:80", func(c Command) bool { return c.Op == OpZero && c.HasService }},
		{"--zero", func(c Command) bool { return c.Op == OpZero }},
		{"-S -n", func(c Command) bool { return c.Op == OpSave }},
		{"--save", func(c Command) bool { return c.Op == OpSave }},
		{"-R", func(c Command) bool { return c.Op == OpRestore }},
		{"-C", func(c Command) bool { return c.Op == OpClear }},
		{"--set 10 20 30", func(c Command) bool { return c.Op == OpSetTimeout && c.Timeouts == [3]int{10, 20, 30} }},
		{"-h", func(c Command) bool { return c.Op == OpHelp }},
		{"-E -t 10.0.0.1:80 -s wlc", func(c Command) bool { return c.Op == OpEditService }},
		{"-D -t 10.0.0.1:80", func(c Command) bool { return c.Op == OpDelService }},
		{"-e -t 10.0.0.1:80 -r 10.0.0.2 -w 0", func(c Command) bool { return c.Op == OpEditDest && c.HasWeight && c.Weight == 0 }},
		{"-d -u [fd00::1]:53 -r fd00::2", func(c Command) bool { return c.Op == OpDelDest && c.DestPort == 53 }},
		{"-v", func(c Command) bool { return c.Op == OpVersion }},
		// -g: the real server's port is the service's (ipvsadm's
		// "if (ce.dest.conn_flags != IP_VS_CONN_F_MASQ) ce.dest.port =
		// ce.svc.port").
		{"-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g -w 2", func(c Command) bool {
			return c.Op == OpAddDest && c.Method == rules.Route && c.DestPort == 80 && c.Change().Server.Method == rules.Route
		}},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -m", func(c Command) bool { return c.Method == rules.Masquerade }},
		// ipvsadm's DEF_MCAST_IFN when --mcast-interface is not given.
		{"--start-daemon master", func(c Command) bool {
			return c.Op == OpStartDaemon && c.Daemon.Role == ipvssync.Master && c.Daemon.Config.Interface == "eth0"
		}},
		{"--start-daemon=backup --mcast-interface tv0 --syncid 7 --sync-maxlen 1000 --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 2", func(c Command) bool {
			d := c.Daemon
			return c.Op == OpStartDaemon && d.Role == ipvssync.Backup && d.Config.Interface == "tv0" && d.Config.SyncID == 7 &&
				d.Config.MaxLen == 1000 && d.Config.Group == netip.MustParseAddr("239.1.2.3") && d.Config.Port == 9000 && d.Config.TTL == 2
		}},
		{"--stop-daemon master --syncid 3", func(c Command) bool { return c.Op == OpStopDaemon && c.Daemon.Config.SyncID == 3 }},
		{"-L --syncid 3", func(c Command) bool { return c.Op == OpList }},
	} {
		c, err := Parse(strings.Fields(tc.args))
		if err != nil {
			t.Errorf("%s: %v", tc.args, err)
			continue
		}
		if !tc.want(c) {
			t.Errorf("%s: parsed %+v", tc.args, c)
		}
	}
}

func TestParseRefusals(t *testing.T) {
	for _, tc := range []struct{ args, msg string }{
		{"-A -f 1 -s rr", "not supported"},
		{"-A -u 10.0.0.1:53 --pe sip", "not supported"},
		{"-A -t 10.0.0.1:80 -o", "One-Packet Scheduling is only for UDP virtual services"},
		{"-A -t 10.0.0.1:0", "Zero port specified for non-persistent service"},
		{"-A -t 10.0.0.1:80 -w 3", "Illegal 'weight' option with the 'add-service' command"},
		{"-A -s rr", "You need to supply the 'service-address' option for the 'add-service' command"},
		{"-a -t 10.0.0.1:80", "You need to supply the 'real-server' option for the 'add-server' command"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -s rr", "Illegal 'scheduler' option with the 'add-server' command"},
		{"-L -c --timeout", "The option 'timeout' conflicts with the 'connection' option in the 'list' command"},
		{"-C -n", "Illegal 'numeric' option with the 'flush' command"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -w 65536", "illegal weight specified"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -x -1", "illegal u_threshold specified"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -w 3x", "illegal weight specified"},
		{"-A -t 10.0.0.1:80 -s rr -b flag-10", "invalid scheduler flag `flag-10'"},
		{"-A -t 10.0.0.1:80 -p 0", "invalid timeout value `0' specified"},
		{"-A -t 10.0.0.1:80 -6", "-6 used before -f\n"},
		{"-a -t 10.0.0.1:80 -r [fd00::3]:80 -m", "Different address family is allowed only for tunneling servers"},
		{"-L -c --stats", "options conflicts in the list command"},
		{"--set 1 2", "--set option requires 3 timeout values"},
		{"--set 1 2 3 4", "unexpected argument 4"},
		{"-L -A", "invalid option `-A'"},
		{"-A -t 10.0.0.1:80 -p -M 255.0.255.0", "illegal virtual server persistent mask specified"},
		{"-A -t [fd00::1]:80 -p -M 129", "illegal ipv6 netmask specified"},
		{"-A -t 10.0.0.1:80 -s rr -b sh-port", "incompatible scheduler flag `sh-port'"},
		{"-A -t 10.0.0.1:80 -b nosuch", "invalid scheduler flag `nosuch'"},
		{"-A -t 10.0.0.1:99999", "illegal virtual server address[:port] specified"},
		{"-a -t 10.0.0.1:80 -r nosuch.invalid", "illegal real server address[:port] specified"},
		{"-A -t 10.0.0.1:80 -t 10.0.0.1:81", "multiple 'service-address' options specified"},
		{"--start-daemon primary --mcast-interface eth0", "illegal start-daemon parameter specified"},
		{"--stop-daemon primary", "illegal start_daemon specified"},
		{"--start-daemon master --mcast-interface eth0 -n", "Illegal 'numeric' option with the 'start-daemon' command"},
		{"--stop-daemon master --mcast-interface eth0", "Illegal 'mcast-interface' option with the 'stop-daemon' command"},
		{"-L --mcast-interface eth0", "Illegal 'mcast-interface' option with the 'list' command"},
		{"--start-daemon master --mcast-interface eth0 --syncid 256", "illegal syncid specified"},
		{"--start-daemon master --mcast-interface eth0 --mcast-ttl 0", "illegal mcast-ttl specified"},
		{"--start-daemon master --mcast-interface eth0 --mcast-port 65536", "illegal mcast-port specified"},
		{"--start-daemon master --mcast-interface eth0 --sync-maxlen 65508", "illegal sync-maxlen specified"},
		{"--start-daemon master --mcast-interface eth0 --mcast-group 10.0.0.1", "invalid IPv4 mcast-group `10.0.0.1'"},
		{"--start-daemon master --mcast-interface eth0 --mcast-group fd00::1", "invalid IPv6 mcast-group `fd00::1'"},
		{"--start-daemon master --mcast-interface a --mcast-interface b", "multiple 'mcast-interface' options specified"},
	} {
		_, err := Parse(strings.Fields(tc.args))
		if err == nil || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %q", tc.args, err, tc.msg)
		}
		if ExitCode(err) != 2 {
			t.Errorf("%s: exit %d, want 2", tc.args, ExitCode(err))
		}
	}
	// popt's own refusals end with 255; a line whose first option is not
	// a command only gets ipvsadm's "Try ..." line.
	for _, tc := range []struct{ args, msg string }{
		{"-L --nosuch", "--nosuch: unknown option"},
		{"-Lq", "-Lq: unknown option"},
		{"-A -t", "-t: missing argument"},
		{"-L --nosort=1", "--nosort=1: option does not take an argument"},
		{"-A -t 10.0.0.1:80 -p -1", "-1: unknown option"},
		{"-n", ""},
		{"--stop-daemon", ""},
		{"-s rr -t 10.0.0.1:80 -A", ""},
	} {
		_, err := Parse(strings.Fields(tc.args))
		var u *usageError
		if !errors.As(err, &u) || u.msg != tc.msg || u.tryHelp != (tc.msg == "") || ExitCode(err) != 255 {
			t.Errorf("%s: got %#v (exit %d), want %q, 255", tc.args, err, ExitCode(err), tc.msg)
		}
	}
}

// The table's refusals carry ipvsadm's messages (libipvs ipvs_strerror)
// and exit status 255 (ipvsadm returns -1); a listing of an unknown
// service exits 1.
func TestIpvsadmErrors(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.0.0.2 -m")
	for _, tc := range []struct {
		args string
		msg  string
		exit int
	}{
		{"-A -t 10.0.0.1:80", "Service already exists", 255},
		{"-A -t 10.0.0.9:80 -s nosuch", "Scheduler or persistence engine not found", 255},
		{"-E -t 10.0.0.9:80", "No such service", 255},
		{"-D -t 10.0.0.9:80", "No such service", 255},
		{"-a -t 10.0.0.9:80 -r 10.0.0.2", "Service not defined", 255},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2", "Destination already exists", 255},
		{"-e -t 10.0.0.1:80 -r 10.0.0.3", "No such destination", 255},
		{"-d -t 10.0.0.1:80 -r 10.0.0.3", "No such destination", 255},
		{"-a -t 10.0.0.1:80 -r 10.0.0.3 -x 5 -y 6", "Numerical result out of range", 255},
		{"-Z -t 10.0.0.9:80", "No such service", 255},
		{"-L -t 10.0.0.9:80", "No such service", 1},
	} {
		_, err := Execute(tb, strings.Fields(tc.args), "")
		if err == nil || err.Error() != tc.msg && !strings.HasPrefix(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %q", tc.args, err, tc.msg)
		}
		if ExitCode(err) != tc.exit {
			t.Errorf("%s: exit %d, want %d", tc.args, ExitCode(err), tc.exit)
		}
	}
}

// SIGHUP's diff: only what differs changes; objects kept are the same.
func TestReloadDiff(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb,
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 1",
		"-a -t 10.0.0.1:80 -r 10.0.0.3 -m -w 1",
		"-A -t 10.0.0.5:80 -s rr",
		"-a -t 10.0.0.5:80 -r 10.0.0.6 -m")
	keep := tb.Service(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80})
	keepDest := keep.Dests()[1] // 10.0.0.2
	file := strings.Join([]string{
		"# the new table",
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 1",
		"-a -t 10.0.0.1:80 -r 10.0.0.4 -m -w 2",
		"-A -u 10.0.0.1:53 -s wlc -p 30 -o",
		"-a -u 10.0.0.1:53 -r 10.0.0.7 -m",
		"-a -u 10.0.0.1:53 -r 10.0.0.8 -m -w 0",
	}, "\n")
	cmds, err := Reload(tb, strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cmds {
		got = append(got, c.String())
	}
	want := []string{
		"-D -t 10.0.0.5:80",
		"-d -t 10.0.0.1:80 -r 10.0.0.3:80",
		"-a -t 10.0.0.1:80 -r 10.0.0.4:80 -m -w 2",
		"-A -u 10.0.0.1:53 -s wlc -p 30",
		"-a -u 10.0.0.1:53 -r 10.0.0.7:53 -m -w 1",
		"-a -u 10.0.0.1:53 -r 10.0.0.8:53 -m -w 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := Apply(tb, cmds, nil, nil); err != nil {
		t.Fatal(err)
	}
	if tb.Service(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: mustAddr("10.0.0.1"), Port: 80}) != keep {
		t.Error("an unchanged service was replaced")
	}
	found := false
	for _, d := range keep.Dests() {
		found = found || d == keepDest
	}
	if !found {
		t.Error("an unchanged server was replaced")
	}
	// The same file again: nothing to do.
	if cmds, err := Reload(tb, strings.NewReader(file)); err != nil || len(cmds) != 0 {
		t.Errorf("second reload: %v %v", cmds, err)
	}
	// A bad file: its line and reason, nothing computed.
	_, err = Reload(tb, strings.NewReader("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 70000\n"))
	var le *LineError
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), "illegal weight") {
		t.Errorf("bad file: %v", err)
	}
	_, err = Reload(tb, strings.NewReader("-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n"))
	if !errors.As(err, &le) || le.Line != 2 || !strings.Contains(err.Error(), "Service already exists") {
		t.Errorf("bad file: %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// IPv4-mapped IPv6 addresses are refused with a message that says what to
// write instead, for services and real servers alike; non-unicast real
// servers are refused as ip_vs_new_dest refuses them.
func TestMappedAndNonUnicastRefused(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 1.2.3.4:80 -s rr", "-A -t [fd00::1]:80 -s rr")
	for _, c := range []struct{ args, want string }{
		{"-A -t [::ffff:1.2.3.4]:80 -s rr", "IPv4-mapped: write it as 1.2.3.4"},
		{"-A -t [::ffff:9.9.9.9]:80 -s rr", "IPv4-mapped: write it as 9.9.9.9"},
		{"-a -t [fd00::1]:80 -r [::ffff:10.0.0.5]:80 -m", "IPv4-mapped"},
		// ipvsadm's message for the kernel's EINVAL.
		{"-a -t 1.2.3.4:80 -r 0.0.0.0:80 -m", msgInvalid},
		{"-a -t 1.2.3.4:80 -r 255.255.255.255:80 -m", msgInvalid},
		{"-a -t 1.2.3.4:80 -r 224.0.0.1:80 -m", msgInvalid},
		{"-a -t [fd00::1]:80 -r [ff02::1]:80 -m", msgInvalid},
	} {
		_, err := Execute(tb, strings.Fields(c.args), "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.args, err, c.want)
		}
	}
	if out := save(tb); strings.Contains(out, "ffff") || strings.Count(out, "-a") != 0 {
		t.Errorf("table changed:\n%s", out)
	}
}
