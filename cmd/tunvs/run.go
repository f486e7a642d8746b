package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/bgp"
	"github.com/tunvs/tunvs/director"
	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/internal/gcpace"
	"github.com/tunvs/tunvs/keepalived"
	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
	"github.com/tunvs/tunvs/tun"
)

const runHelp = `Usage: tunvs run [flags]

Runs the director on TUN or TAP devices until SIGINT or SIGTERM.

  --link name=tunvs0[,kind=tun|tap][,mtu=1500][,addr=PREFIX]...
        a device and the director's addresses on it (the DIP, VIPs as /32
        or /128 aliases); repeat for more devices. The device is created
        if it does not exist and brought up; routes on the kernel side of
        it are yours to add.
  --route PREFIX|default[,via=GATEWAY][,dev=NAME]
        a static route in the director; repeatable.
  --rules FILE     ipvsadm-save rules (the output of ipvsadm -S); SIGHUP
                   rereads it and applies only the difference (services and
                   servers added, removed, edited); a bad file is refused
                   with its line and reason and nothing changes
  --keepalived-conf FILE
                   keepalived's configuration: its virtual_server(_group)s,
                   real_servers and checkers (TCP_CHECK, HTTP_GET, SSL_GET,
                   MISC_CHECK, UDP_CHECK, PING_CHECK) become the rules and
                   checks; include, comments, @ID conditional lines and
                   $PARAMETERs as keepalived reads them. vrrp_instances
                   run VRRP version 3 on their TAP --link, moving the
                   virtual addresses (and, with lvs_sync_daemon, driving
                   the sync daemons) between directors. What tunvs does not
                   do (scripts, vrrp_sync_group, unknown keywords) is a
                   warning naming the file and line; DR/TUN, fwmark
                   services and bad values are refused. SIGHUP rereads it
                   (not its vrrp_instances). Not with --rules
  --keepalived-id ID
                   keepalived's -i (config id) for @ID lines (default: the
                   host name up to its first dot)
  --rule 'LINE'    one ipvsadm command, e.g. '-A -t 10.0.0.1:80 -s rr'; repeatable
  --sysctl NAME=VALUE
        an IPVS sysctl (/proc/sys/net/ipv4/vs: expire_nodest_conn,
        expire_quiescent_template, conn_reuse_mode, sloppy_tcp,
        amemthresh, drop_entry, secure_tcp, sync_*; tunvsadm
        --sysctl lists them); repeatable, and allowed in the rules file
        as lines '--sysctl NAME=VALUE'
  --check 'LINE'   a health check of real servers; repeatable, and allowed in
        the rules file as lines starting with --check:
          -t|-u VIP:PORT [-r RIP[:PORT]] [tcp|http|https|udp|ping|misc|none] [KEY=VALUE]...
        e.g. '-t 172.16.1.100:80 http path=/ status=200-299 interval=2s fall=3 rise=2 on-fail=inhibit'.
        Network checks leave from the director's own stack (its DIP and
        routes); misc cmd= runs on this machine.
  --metrics[=ADDR] serve Prometheus metrics on http://ADDR/metrics
                   (default 127.0.0.1:9177)
  --pcap FILE      capture what crosses every device, both directions, in
                   one pcapng file: an interface per link with its name
                   (TUN: raw IP, TAP: Ethernet), each packet marked
                   inbound or outbound; Wireshark and tshark read it
                   (tcpdump reads a one-link or all-TAP capture)
  --bgp as=ASN,peer=ADDR,peer-as=ASN[,next-hop=ADDR][,next-hop6=ADDR][,router-id=ADDR][,hold=9s][,port=179]
        announce every VIP that has a real server taking connections
        (weight above 0) to the router(s) peer= as a /32 or /128 with the
        director as next hop (default: its address on the peer's subnet),
        over BGP from the director's own stack (GoBGP, run as the process
        tunvs-bgp, found next to tunvs or on PATH, restarted if it dies);
        a VIP is withdrawn when health checks leave it no real server, and
        all are on shutdown. For ECMP over several directors: README, "When
        one director is not enough"
  --trace          print each packet's walk through the director to stderr
                   (rate-limited by --trace-rate packets a second)

Example (LVS-NAT director, VIP 172.16.1.100, two real servers):
  tunvs run --link name=tunvs0,addr=172.16.1.3/24,addr=172.16.1.100/32 \
    --rule '-A -t 172.16.1.100:80 -s rr' \
    --rule '-a -t 172.16.1.100:80 -r 172.16.1.5 -m' \
    --rule '-a -t 172.16.1.100:80 -r 172.16.1.6 -m'

Flags:
`

// maxBusyPoll bounds --busy-poll: longer than this a reader would spin
// through whole idle periods instead of a wakeup's worth of time.
const maxBusyPoll = 10 * time.Millisecond

func cmdRun(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs run", pflag.ContinueOnError)
	links := fs.StringArray("link", nil, "device spec (see above)")
	routes := fs.StringArray("route", nil, "route spec (see above)")
	rulesFile := fs.String("rules", "", "ipvsadm-save rules file")
	kaFile := fs.String("keepalived-conf", "", "keepalived.conf to read the services, real servers and checks from (see above)")
	kaID := fs.String("keepalived-id", "", "keepalived's config id for @ID lines (default: the host name)")
	ruleLines := fs.StringArray("rule", nil, "one ipvsadm command")
	checkLines := fs.StringArray("check", nil, "one health check rule (see above)")
	sysctlFlags := fs.StringArray("sysctl", nil, "NAME=VALUE, an IPVS sysctl (see above); repeatable")
	socket := fs.String("socket", admin.DefaultSocket(), "control socket for tunvsadm (empty: none)")
	maxConns := fs.Int("max-conns", nat.DefaultMaxConns, "connection table bound")
	timeouts := fs.String("timeouts", "", "tcp,tcpfin,udp timeouts in seconds, as ipvsadm --set (default 900,120,300)")
	stateTimeouts := fs.StringArray("state-timeout", nil, "STATE=DURATION, e.g. TIME_WAIT=2s, for any IPVS state or UDP; repeatable")
	bypass := fs.Bool("bypass", true, "let established flows skip the stack (TUN and TAP devices; on a TAP once the next hop's MAC is known)")
	offload := fs.Bool("tun-offload", true, "open TUN and TAP devices with the virtio-net header and TSO/USO offloads (Linux): the kernel's 64 KiB super-packets are NATed whole, writes coalesce TCP runs; =false for one packet per system call")
	gso := fs.Bool("tun-gso", true, "with --tun-offload: NAT super-packets whole, in place; =false cuts them into MTU-sized packets on read (for comparison)")
	gogc := fs.Int("gogc", 50, "the garbage collector's GOGC: 50 holds 1M connections in about 10% less memory than Go's 100, at little cost since the packet path allocates nothing. Unless given here or as GOGC in the environment (which apply as they are), it is lowered once the live heap passes 32 MB, so that the heap holds at most 16 MB beyond it (about 12 at a million connections)")
	busyPoll := fs.Duration("busy-poll", 0, "with --tun-offload: a device reader that finds nothing keeps trying for up to this long (e.g. 50us) before it sleeps, as the kernel's SO_BUSY_POLL does: a packet arriving meanwhile costs no wakeup, at the price of a CPU kept busy; 0 (default): sleep at once. See docs/perf.md for what it did on two cores")
	tunRead := fs.String("tun-read", "ring", "with --tun-offload, how a device reader reads and waits for packets (Linux): ring (default), a round of reads and the writes the last batch left in one io_uring_enter, the reader parked in Go's network poller once a round finds the device empty (where io_uring cannot be set up, as poller); poller, one read(2) or write(2) a packet, parked in Go's poller; poll, asleep in ppoll(2), a blocking system call, on its current thread, which the kernel wakes directly; thread, the same on an OS thread of its own (a thread per queue); armed, parked in Go's poller on an epoll instance of the device's own, armed only while the reader waits, so that packets arriving while it is busy wake no thread. See docs/perf.md for what each measured")
	queues := fs.Int("tun-queues", 1, "with --tun-offload: queues per TUN or TAP device (IFF_MULTI_QUEUE), each with its own reader and writer; the kernel spreads flows over them (more small-packet throughput, worse tail latency on two cores: see docs/perf.md)")
	standbyQ := fs.Bool("tun-standby", true, "with --tun-offload and one queue: open a TAP device with a second queue on standby, detached (it costs nothing) until the traffic read passes --tun-standby-rate with at least two bulk flows, then attached, with a reader per direction of the one-armed director's connections; detached again after a second under 40% of that rate (Linux; see docs/perf.md)")
	standbyRate := fs.String("tun-standby-rate", "2G", "with --tun-standby: the rate read, in bits a second (k, M, G), above which the queue on standby is attached")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on ADDR (bare --metrics: "+metrics.DefaultAddr+")")
	fs.Lookup("metrics").NoOptDefVal = metrics.DefaultAddr
	pcap := fs.String("pcap", "", "write a packet capture of every device to FILE")
	pprofAddr := fs.String("pprof", "", "serve the Go runtime's profiles (CPU, heap, block, mutex, execution trace) on http://ADDR/debug/pprof/; turns block and mutex profiling on, which costs a little on every lock")
	bgpSpec := fs.String("bgp", "", "announce the VIPs over BGP (see above)")
	trace := fs.Bool("trace", false, "print each packet's walk through the director to stderr")
	traceRate := fs.Int("trace-rate", 50, "packets traced per second at most (then a summary line)")
	var lf logFlags
	lf.register(fs, "info")
	docDefault(fs, "socket", admin.DefaultSocketDoc)
	completeWith(fs, "rules", "files")
	completeWith(fs, "pcap", "files")
	completeWith(fs, "tun-read", "ring", "poller", "poll", "thread", "armed")
	setUsage(fs, runHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	if len(*links) == 0 {
		return usageError{fmt.Errorf("no --link given")}
	}
	if *maxConns < 1 {
		return usageError{fmt.Errorf("--max-conns %d: want at least 1", *maxConns)}
	}
	if *queues < 1 || *queues > 64 {
		return usageError{fmt.Errorf("--tun-queues %d: want 1 to 64", *queues)}
	}
	if *gogc < 1 {
		return usageError{fmt.Errorf("--gogc %d: want at least 1", *gogc)}
	}
	sbRate, err := parseBitRate(*standbyRate)
	if err != nil {
		return usageError{fmt.Errorf("--tun-standby-rate %q: %w", *standbyRate, err)}
	}
	readWait, ok := map[string]tun.ReadWait{"poller": tun.WaitPoller, "poll": tun.WaitPoll, "thread": tun.WaitThread, "armed": tun.WaitArmed, "ring": tun.WaitRing}[*tunRead]
	if !ok {
		return usageError{fmt.Errorf("--tun-read %q: want poller, poll, thread, armed or ring", *tunRead)}
	}
	if *busyPoll < 0 || *busyPoll > maxBusyPoll {
		return usageError{fmt.Errorf("--busy-poll %v: want 0 to %v", *busyPoll, maxBusyPoll)}
	}
	if *pprofAddr != "" {
		a, err := servePprof(*pprofAddr)
		if err != nil {
			return err
		}
		log.Info().Stringer("addr", a).Msg("serving profiles on /debug/pprof/")
	} else {
		noHeapProfile()
	}
	if fs.Changed("gogc") || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gogc)
	}
	if !fs.Changed("gogc") && os.Getenv("GOGC") == "" {
		go gcpace.Run(ctx, *gogc, gcHeadroom)
	}

	// Everything is parsed and checked before any device is opened.
	var bgpCfg *bgp.Config
	if *bgpSpec != "" {
		c, err := bgp.ParseSpec(*bgpSpec)
		if err != nil {
			return usageError{fmt.Errorf("--bgp %q: %w", *bgpSpec, err)}
		}
		bgpCfg = &c
	}
	var cmds []admin.Command
	var lines []int
	var checks health.Parser
	if *kaFile != "" && *rulesFile != "" {
		return usageError{fmt.Errorf("--rules and --keepalived-conf: give one (SIGHUP rereads it)")}
	}
	var kaChecks []rules.CheckService
	var kaVRRP []keepalived.VRRPInstance
	if *kaFile != "" {
		kc, err := loadKeepalived(*kaFile, *kaID, log)
		if err != nil {
			return err
		}
		cmds = admin.Commands(rules.Rules{}.Diff(kc.Rules))
		kaChecks = kc.Rules.Checks.Services
		kaVRRP = kc.VRRP
	}
	c, ln, err := ruleCommands(*rulesFile, *ruleLines, &checks)
	if err != nil {
		return err
	}
	cmds = append(cmds, c...)
	lines = append(lines, ln...)
	if len(*ruleLines) > 0 {
		lines = nil // mixed sources: errors name the command's index
	}
	// After the file's commands, so that lines still index them; a
	// value refused is refused here, before anything runs.
	for _, kv := range *sysctlFlags {
		c, err := admin.Parse([]string{"--sysctl=" + kv})
		if err != nil {
			return usageError{err}
		}
		cmds = append(cmds, c)
	}
	for i, l := range *checkLines {
		if err := checks.Line(l); err != nil {
			return usageError{fmt.Errorf("--check #%d %q: %w", i+1, l, err)}
		}
	}
	// The rules and checks together, validated as one configuration.
	hc := checks.Config()
	hc.Services = append(hc.Services, kaChecks...)
	want, err := admin.RulesOf(cmds, lines)
	if err == nil {
		want.Checks = hc
		err = want.Validate()
	}
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	to, err := parseTimeouts(*timeouts, *stateTimeouts)
	if err != nil {
		return usageError{err}
	}
	specs := make([]linkSpec, 0, len(*links))
	for _, s := range *links {
		ls, err := parseLink(s)
		if err != nil {
			return usageError{fmt.Errorf("--link %q: %w", s, err)}
		}
		specs = append(specs, ls)
	}
	vrrps, err := vrrpOn(kaVRRP, specs)
	if err != nil {
		return err
	}
	var rts []director.Route
	for _, s := range *routes {
		r, err := parseRoute(s)
		if err != nil {
			return usageError{fmt.Errorf("--route %q: %w", s, err)}
		}
		rts = append(rts, r)
	}
	var dl []director.Link
	for _, ls := range specs {
		cfg := tun.Config{Name: ls.name, Kind: ls.kind, MTU: ls.mtu, Up: true, Offload: *offload, Queues: *queues, BusyPoll: *busyPoll, ReadWait: readWait}
		if *standbyQ && *offload && *queues == 1 && ls.kind == tun.KindTAP && runtime.GOOS == "linux" {
			cfg.Queues, cfg.Standby = 2, true
		}
		dev, err := tun.OpenLink(cfg, func(err error) {
			log.Warn().Err(err).Str("link", ls.name).Msg("device offloads refused; using the plain device")
		})
		if err != nil {
			for _, l := range dl {
				l.Dev.Close()
			}
			return deviceHint(err)
		}
		if rf, ok := dev.(interface{ RingFallback() error }); ok && rf.RingFallback() != nil {
			// Said louder when asked for than when it is only the
			// default: a container's seccomp profile refuses io_uring.
			ev := log.Info()
			if fs.Changed("tun-read") {
				ev = log.Warn()
			}
			ev.Err(rf.RingFallback()).Str("link", ls.name).Msg("io_uring unavailable: the device's readers read(2) and write(2) a packet at a time (--tun-read=poller)")
		}
		dl = append(dl, director.Link{Name: ls.name, Dev: dev, Addrs: ls.addrs})
	}
	dcfg := director.Config{
		Links: dl, Routes: rts, Rules: cmds, RuleLines: lines,
		NAT:    nat.Config{MaxConns: *maxConns, Timeouts: to},
		Bypass: *bypass, NoGSO: !*gso, StandbyRate: sbRate, Socket: *socket, Log: log,
		Pcap: *pcap, Metrics: *metricsAddr, TraceRate: *traceRate,
		Health: hc, VRRP: vrrps, BGP: bgpCfg,
	}
	if *trace {
		dcfg.Trace = os.Stderr
	}
	d, err := director.New(dcfg)
	if err != nil {
		if *rulesFile != "" && len(*ruleLines) == 0 {
			return fmt.Errorf("%s: %w", *rulesFile, err)
		}
		return err
	}
	log.Info().Int("services", len(d.NAT.Services())).Msg("director running")
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var lost error
	for loop := true; loop; {
		select {
		case <-ctx.Done():
			loop = false
		case <-d.AllLinksLost():
			lost = errors.New("every link's device is gone")
			loop = false
		case <-hup:
			if *kaFile != "" {
				reloadKeepalived(d, *kaFile, *kaID, kaVRRP, log)
			} else {
				reload(d, *rulesFile, log)
			}
		}
	}
	log.Info().Int("conns", d.NAT.Len()).Msg("shutting down")
	return errors.Join(lost, d.Close())
}

// reload is SIGHUP: the rules file again, only the difference applied.
func reload(d *director.Director, path string, log zerolog.Logger) {
	if path == "" {
		log.Warn().Msg("SIGHUP: no --rules file to reload")
		return
	}
	changes, err := d.Reload(path)
	if err != nil {
		e := log.Error().Str(admin.FieldFile, path).Err(err)
		var le *admin.LineError
		if errors.As(err, &le) {
			e = e.Int(admin.FieldLine, le.Line)
		}
		e.Msg("SIGHUP: rules file refused, nothing changed")
		return
	}
	log.Info().Str(admin.FieldFile, path).Int(admin.FieldChanges, len(changes)).Msg("SIGHUP: rules reloaded")
}

// loadKeepalived reads a keepalived.conf, its warnings logged.
func loadKeepalived(path, id string, log zerolog.Logger) (keepalived.Config, error) {
	kc, err := keepalived.Load(path, keepalived.Options{ConfigID: id})
	if err != nil {
		return keepalived.Config{}, err
	}
	for _, w := range kc.Warnings {
		log.Warn().Str(admin.FieldFile, w.File).Int(admin.FieldLine, w.Line).Msg(w.Msg)
	}
	return kc, nil
}

// vrrpOn checks that each vrrp_instance runs on a TAP --link (VRRP
// needs Ethernet: a virtual MAC, ARP) and makes the director's routers.
func vrrpOn(insts []keepalived.VRRPInstance, links []linkSpec) ([]director.VRRP, error) {
	var out []director.VRRP
	for _, v := range insts {
		ok := false
		for _, l := range links {
			if l.name == v.Router.Link {
				if l.kind != tun.KindTAP {
					return nil, fmt.Errorf("vrrp_instance %s: interface %s is a TUN link; VRRP needs a TAP (kind=tap)", v.Router.Name, l.name)
				}
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("vrrp_instance %s: interface %s is not one of the --link devices", v.Router.Name, v.Router.Link)
		}
		if v.Sync != nil && !slices.ContainsFunc(links, func(l linkSpec) bool { return l.name == v.Sync.Interface }) {
			return nil, fmt.Errorf("vrrp_instance %s: sync daemon interface %s is not one of the --link devices", v.Router.Name, v.Sync.Interface)
		}
		out = append(out, director.VRRP(v))
	}
	return out, nil
}

// reloadKeepalived is SIGHUP with --keepalived-conf: the file again, only
// the difference applied; a refused file changes nothing. The virtual
// routers are not reloaded: a change to them is a warning.
func reloadKeepalived(d *director.Director, path, id string, running []keepalived.VRRPInstance, log zerolog.Logger) {
	kc, err := loadKeepalived(path, id, log)
	want := kc.Rules
	if err == nil {
		if !reflect.DeepEqual(kc.VRRP, running) {
			log.Warn().Str(admin.FieldFile, path).Msg("SIGHUP: vrrp_instance changes are not reloaded (restart tunvs to apply them)")
		}
		var changes []admin.Command
		if changes, err = d.ReloadRules(want); err == nil {
			log.Info().Str(admin.FieldFile, path).Int(admin.FieldChanges, len(changes)).Msg("SIGHUP: keepalived.conf reloaded")
			return
		}
	}
	log.Error().Str(admin.FieldFile, path).Err(err).Msg("SIGHUP: keepalived.conf refused, nothing changed")
}

type linkSpec struct {
	name  string
	kind  tun.Kind
	mtu   int
	addrs []netip.Prefix
}

func parseLink(s string) (linkSpec, error) {
	ls := linkSpec{kind: tun.KindTUN}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return ls, fmt.Errorf("%q is not key=value", kv)
		}
		switch k {
		case "name":
			ls.name = v
		case "kind":
			switch v {
			case "tun":
				ls.kind = tun.KindTUN
			case "tap":
				ls.kind = tun.KindTAP
			default:
				return ls, fmt.Errorf("kind %q: want tun or tap", v)
			}
		case "mtu":
			n, err := strconv.Atoi(v)
			if err != nil || n < 68 || n > 65535 {
				return ls, fmt.Errorf("mtu %q: want 68 to 65535", v)
			}
			ls.mtu = n
		case "addr":
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return ls, fmt.Errorf("addr: %w", err)
			}
			ls.addrs = append(ls.addrs, p)
		default:
			return ls, fmt.Errorf("unknown key %q (name, kind, mtu, addr)", k)
		}
	}
	if ls.name == "" {
		return ls, fmt.Errorf("name= is missing")
	}
	return ls, nil
}

func parseRoute(s string) (director.Route, error) {
	var r director.Route
	parts := strings.Split(s, ",")
	dst := parts[0]
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return r, fmt.Errorf("%q is not key=value", kv)
		}
		switch k {
		case "via":
			a, err := netip.ParseAddr(v)
			if err != nil {
				return r, fmt.Errorf("via: %w", err)
			}
			r.Via = a
		case "dev":
			r.Dev = v
		default:
			return r, fmt.Errorf("unknown key %q (via, dev)", k)
		}
	}
	if dst == "default" {
		dst = "0.0.0.0/0"
		if r.Via.Is6() {
			dst = "::/0"
		}
	}
	p, err := netip.ParsePrefix(dst)
	if err != nil {
		return r, err
	}
	r.Dst = p
	if !r.Via.IsValid() && r.Dev == "" {
		return r, fmt.Errorf("needs via= or dev=")
	}
	return r, nil
}

var stateByName = func() map[string]nat.State {
	m := map[string]nat.State{}
	for s := nat.StateNone; s <= nat.StateUDP; s++ {
		m[s.String()] = s
	}
	return m
}()

func parseTimeouts(set string, states []string) (nat.Timeouts, error) {
	var to nat.Timeouts
	if set != "" {
		f := strings.Split(set, ",")
		if len(f) != 3 {
			return to, fmt.Errorf("--timeouts %q: want tcp,tcpfin,udp", set)
		}
		idx := []nat.State{nat.StateEstablished, nat.StateFinWait, nat.StateUDP}
		for i, v := range f {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return to, fmt.Errorf("--timeouts %q: %q is not a number of seconds", set, v)
			}
			to[idx[i]] = time.Duration(n) * time.Second
		}
	}
	for _, st := range states {
		k, v, ok := strings.Cut(st, "=")
		s, known := stateByName[strings.ToUpper(k)]
		if !ok || !known {
			return to, fmt.Errorf("--state-timeout %q: want STATE=DURATION with a state of %v", st, nat.StateNames())
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return to, fmt.Errorf("--state-timeout %q: bad duration", st)
		}
		to[s] = d
	}
	return to, nil
}

// deviceHint adds what to do to a device error an ordinary user gets:
// creating a TUN/TAP device needs CAP_NET_ADMIN (tun_set_iff,
// drivers/net/tun.c), which a user has in a user namespace of their own.
func deviceHint(err error) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	if runtime.GOOS == "linux" {
		return fmt.Errorf("%w\n(creating a TUN/TAP device needs CAP_NET_ADMIN: run as root, or as an ordinary user inside\n `unshare --user --map-root-user --net`, as the README shows)", err)
	}
	return fmt.Errorf("%w\n(opening a TUN/TAP device needs administrator rights on %s)", err, runtime.GOOS)
}

// ruleCommands reads the rules of --rules FILE (its --check lines into
// checks) and --rule LINEs, in that order, for tunvs run and tunvs lab.
// lines are the file's line numbers of its commands.
func ruleCommands(file string, ruleLines []string, checks *health.Parser) (cmds []admin.Command, lines []int, err error) {
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, err
		}
		c, ln, err := admin.ReadRulesFile(string(data), checks)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, err)
		}
		cmds, lines = c, ln
	}
	for i, l := range ruleLines {
		c, err := admin.Parse(strings.Fields(l))
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--rule #%d %q: %w", i+1, l, err)}
		}
		cmds = append(cmds, c)
	}
	return cmds, lines, nil
}

// gcHeadroom is the most the heap may hold beyond what is live, once the
// live heap is large, when GOGC is tunvs's own (see gcpace): 16 MB, an
// eighth of a million connections' table.
const gcHeadroom = 16 << 20

// parseBitRate parses a rate in bits a second, with an optional k, M or G
// (powers of 1000), into bytes a second.
func parseBitRate(s string) (int, error) {
	mul := 1.0
	switch {
	case strings.HasSuffix(s, "k"):
		mul, s = 1e3, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mul, s = 1e6, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mul, s = 1e9, strings.TrimSuffix(s, "G")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*mul/8 > 1<<40 {
		return 0, fmt.Errorf("want a positive number of bits a second, with k, M or G")
	}
	return max(int(v*mul/8), 1), nil
}
