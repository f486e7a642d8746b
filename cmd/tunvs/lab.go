package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/health"
	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/sched"
)

const labHelp = `Usage:
  tunvs lab [-s SCHED] [-r N] [-n REQUESTS]    the lab in one process, no privileges
  tunvs lab --netns [flags]                    the lab on network namespaces
  tunvs lab exec HOST [-- CMD ARGS...]         run a command (default: a shell) in a host
  tunvs lab walk [--auto]                      the packet walk on the running lab
  tunvs lab capture HOST DEV                   print the packets on a device of a host
  tunvs lab down                               remove the namespace lab (also after a crash)

tunvs lab --netns builds the classic LVS-NAT lab out of network namespaces
in a user namespace of its own (no root, no setuid helper): client
10.0.0.10, a router (10.0.0.200, nftables DNAT of port 80 to the VIP), the
lab segment (a bridge in host "lan") with the real servers 172.16.1.5,
172.16.1.6, ... and tunvs as the director (DIP 172.16.1.3, VIP
172.16.1.100) on a TAP device attached to that segment (--attach tun: a
TUN device, routed by host lan). It stays in the foreground until
interrupted; with --detach it runs in the background until "tunvs lab down".
Hosts: client, router, director, lan, rs1, rs2, ...

Flags:
`

func cmdLab(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "exec":
			return cmdLabExec(args[1:])
		case "down":
			return cmdLabDown(args[1:])
		case "walk":
			return cmdLabWalk(ctx, args[1:])
		case "capture":
			return cmdLabCapture(ctx, args[1:])
		case "serve":
			return cmdLabServe(ctx, args[1:])
		case "fetch":
			return cmdLabFetch(ctx, args[1:])
		}
	}
	fs := pflag.NewFlagSet("tunvs lab", pflag.ContinueOnError)
	s := fs.StringP("scheduler", "s", "rr", fmt.Sprintf("scheduler %v", sched.Names()))
	n := fs.IntP("requests", "n", 6, "HTTP requests the client sends (in-process lab)")
	servers := fs.IntP("servers", "r", 2, "number of real servers")
	useNetns := fs.Bool("netns", false, "build the lab on network namespaces")
	attach := fs.String("attach", "tap", "with --netns: how the director joins the lab segment: tap (bridged) or tun (routed)")
	rsCmd := fs.String("rs-cmd", "", "with --netns: command each real server runs (sh -c) instead of the built-in HTTP server; it must listen on port 80")
	detach := fs.Bool("detach", false, "with --netns: start the lab in the background and return")
	checks := fs.StringArray("check", nil, "a health check of the real servers, as tunvs run --check (e.g. '-t 172.16.1.100:80 http path=/ interval=1s on-fail=inhibit'); repeatable")
	trace := fs.Bool("trace", false, "in-process lab: print each packet's walk through the director")
	walk := fs.Bool("walk", false, "with --netns: then walk one connection through the lab, pausing at each step")
	walkAuto := fs.Bool("walk-auto", false, "with --netns: the walk without pauses")
	stateDir := fs.String("state-dir", lab.DefaultStateDir(), "with --netns: the lab's state directory")
	stay := fs.Bool("stay", false, "in-process lab: stay up after the requests, answering tunvsadm on --socket, until Ctrl-C")
	socket := fs.String("socket", admin.DefaultSocket(), "in-process lab: the director's control socket, with --stay")
	rulesFile := fs.String("rules", "", "in-process lab: ipvsadm-save rules instead of the article's (the client still asks http://172.16.1.100/)")
	ruleLines := fs.StringArray("rule", nil, "in-process lab: one ipvsadm command, instead of the article's rules; repeatable")
	fwd := fs.String("fwd", "masq", "forwarding method of the real servers: masq (NAT: their gateway is the director) or fullnat (DPVS's full NAT: they keep their own gateway and see the director's local address "+lab.LocalAddr.String()+")")
	ha := fs.Bool("ha", false, "with --netns: two directors, master and backup, as a keepalived LVS-NAT pair: VRRP moves the VIP and the real servers' gateway "+lab.HAGateway.String()+", the sync daemons the connections (kill the master to watch the failover)")
	directors := fs.Int("directors", 0, fmt.Sprintf("with --netns: the scale-out lab: N (1 to %d) tunvs directors behind a BGP router (BIRD) with ECMP, direct routing to the real servers, scheduler mh unless -s; see README, \"When one director is not enough\"", lab.MaxDirectors))
	bypass := fs.Bool("bypass", true, "let established flows skip the director's stack, as tunvs run does (=false: every packet through gVisor's forwarding, to compare; --trace shows which way each packet went)")
	inner := fs.Bool("inner", false, "")
	fs.MarkHidden("inner")
	var lf logFlags
	lf.register(fs, "warn")
	docDefault(fs, "state-dir", stateDirDoc)
	completeWith(fs, "state-dir", "dirs")
	docDefault(fs, "socket", admin.DefaultSocketDoc)
	completeWith(fs, "rules", "files")
	completeWith(fs, "scheduler", sched.Names()...)
	completeWith(fs, "attach", "tap", "tun")
	completeWith(fs, "fwd", "masq", "fullnat")
	setUsage(fs, labHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	// Health rules are checked here, before anything is built.
	var hp health.Parser
	for i, l := range *checks {
		if err := hp.Line(l); err != nil {
			return usageError{fmt.Errorf("--check #%d %q: %w", i+1, l, err)}
		}
	}
	hc := hp.Config()
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *fwd != "masq" && *fwd != "fullnat" {
		return usageError{fmt.Errorf("--fwd %q: want masq or fullnat", *fwd)}
	}
	fullNAT := *fwd == "fullnat"
	if *n < 0 || *n > 100000 {
		return usageError{fmt.Errorf("--requests %d: want 0 to 100000", *n)}
	}
	if _, err := sched.New(*s); err != nil {
		return usageError{err}
	}
	// Refused here, not defaulted or wrapped: -r 0 used to run 2, and
	// from 96 up the in-process lab gave a real server the VIP.
	maxServers, kind := lab.MaxServers, "the in-process lab numbers them 172.16.1.5 up; .100 is the VIP"
	if *useNetns {
		maxServers, kind = lab.MaxNetnsServers, "one network namespace each"
	}
	if *servers < 1 || *servers > maxServers {
		return usageError{fmt.Errorf("-r %d: want 1 to %d real servers (%s)", *servers, maxServers, kind)}
	}
	if !*useNetns {
		for _, f := range []string{"attach", "rs-cmd", "detach", "walk", "walk-auto", "state-dir", "ha", "directors"} {
			if fs.Changed(f) {
				return usageError{fmt.Errorf("--%s needs --netns", f)}
			}
		}
		log, err := lf.logger()
		if err != nil {
			return err
		}
		lc := lab.Config{Scheduler: *s, Servers: *servers, Health: hc, Log: log, Stay: *stay, FullNAT: fullNAT, NoBypass: !*bypass}
		if *stay {
			lc.Socket = *socket
		}
		if (*rulesFile != "" || len(*ruleLines) > 0) && fullNAT {
			return usageError{fmt.Errorf("--fwd fullnat writes the article's rules with --fullnat; with --rules or --rule, write --fullnat and --add-laddr -z %s yourself", lab.LocalAddr)}
		}
		if *rulesFile != "" || len(*ruleLines) > 0 {
			cmds, _, err := ruleCommands(*rulesFile, *ruleLines, &hp)
			if err != nil {
				return err
			}
			lc.Rules, lc.Health = cmds, hp.Config()
		}
		if *trace {
			lc.Trace = os.Stdout
		}
		return lab.Run(ctx, lc, *n, os.Stdout)
	}
	// The namespace lab's client is a shell away (tunvs lab exec client
	// -- curl ...); its packets are seen with capture and walk.
	for f, instead := range map[string]string{
		"requests": "make requests with `tunvs lab exec client -- curl -s http://10.0.0.200/`",
		"trace":    "see the director's packets with `tunvs lab capture lan tvlab0` or `tunvs lab walk`",
		"stay":     "the lab stays up until Ctrl-C or `tunvs lab down` anyway",
		"socket":   "the director's socket is in the state directory (see the banner)",
		"rules":    "change the director's rules with `tunvs lab exec director -- tunvsadm ...`",
		"rule":     "change the director's rules with `tunvs lab exec director -- tunvsadm ...`",
	} {
		if fs.Changed(f) {
			name := "--" + f
			if sh := fs.Lookup(f).Shorthand; sh != "" {
				name = "-" + sh + "/" + name
			}
			return usageError{fmt.Errorf("%s is for the in-process lab; with --netns, %s", name, instead)}
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	cfg := lab.NetnsConfig{Scheduler: *s, Servers: *servers, Attach: *attach, RSCmd: *rsCmd, Checks: *checks, StateDir: dir, Self: self, FullNAT: fullNAT, HA: *ha,
		Directors: *directors, NoBypass: !*bypass}
	if *ha && (*attach != "tap" || fullNAT) {
		return usageError{fmt.Errorf("--ha needs --attach tap and --fwd masq (the virtual addresses move by ARP on the lab segment)")}
	}
	if fs.Changed("directors") {
		if *ha {
			return usageError{fmt.Errorf("--ha and --directors: give one (an HA pair, or N directors behind a BGP router)")}
		}
		if err := clusterFlags(fs, &cfg); err != nil {
			return err
		}
	}
	if *attach != "tap" && *attach != "tun" {
		return usageError{fmt.Errorf("--attach %q: want tap or tun", *attach)}
	}
	if *inner {
		return labInner(ctx, cfg, *detach)
	}
	return labNetns(ctx, cfg, *detach, *walk || *walkAuto, *walkAuto, lf)
}

// stateDirDoc describes lab.DefaultStateDir's choice.
const stateDirDoc = "$TUNVS_LAB_DIR, else $XDG_RUNTIME_DIR/tunvs-lab if writable, else $TMPDIR/tunvs-lab-UID"

func stateFlag(fs *pflag.FlagSet) *string {
	s := fs.String("state-dir", lab.DefaultStateDir(), "the lab's state directory")
	docDefault(fs, "state-dir", stateDirDoc)
	completeWith(fs, "state-dir", "dirs")
	return s
}

const (
	labExecHelp = `Usage: tunvs lab exec HOST [-- CMD ARGS...]

Runs CMD (default: $SHELL) in HOST of the running namespace lab: its
network namespace, in the lab's user, mount and PID namespaces (so ps and
kill see the lab's processes). TUNVS_SOCKET is set, so tunvsadm talks to
the lab's director; in the director, ipvsadm is tunvsadm.

Flags:
`
	labDownHelp = `Usage: tunvs lab down

Stops the namespace lab and removes its state (also after a crash).

Flags:
`
	labWalkHelp = `Usage: tunvs lab walk [--auto]

Follows one connection through the running namespace lab, step by step,
with the packets captured at every host on its way.

Flags:
`
	labCaptureHelp = `Usage: tunvs lab capture HOST DEV

Prints IPv4 packets on device DEV of HOST, as tcpdump -nn would (tcpdump
itself cannot drop privileges inside the lab's user namespace).

Flags:
`
)

func cmdLabExec(args []string) error {
	fs := pflag.NewFlagSet("tunvs lab exec", pflag.ContinueOnError)
	dir := stateFlag(fs)
	fs.SetInterspersed(false)
	setUsage(fs, labExecHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usageError{errors.New("which host? (client, router, director, lan, rs1, ...)")}
	}
	host, cmd := rest[0], rest[1:]
	if len(cmd) > 0 && cmd[0] == "--" {
		cmd = cmd[1:]
	}
	return labExec(*dir, host, cmd)
}

func cmdLabDown(args []string) error {
	fs := pflag.NewFlagSet("tunvs lab down", pflag.ContinueOnError)
	dir := stateFlag(fs)
	setUsage(fs, labDownHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	return labDown(*dir)
}

func cmdLabWalk(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs lab walk", pflag.ContinueOnError)
	dir := stateFlag(fs)
	auto := fs.Bool("auto", false, "no pauses")
	setUsage(fs, labWalkHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	return labWalk(ctx, *dir, *auto)
}

func cmdLabCapture(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs lab capture", pflag.ContinueOnError)
	dir := stateFlag(fs)
	port := fs.Uint16("port", 0, "only TCP/UDP packets from or to this port")
	syn := fs.Bool("syn", false, "only TCP SYN and SYN-ACK")
	count := fs.IntP("count", "c", 0, "stop after this many packets")
	timeout := fs.Duration("timeout", 0, "stop after this long")
	setUsage(fs, labCaptureHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 2 {
		return usageError{errors.New("want HOST DEV, e.g. lan tvlab0")}
	}
	return labCapture(ctx, *dir, fs.Arg(0), fs.Arg(1), *port, *syn, *count, *timeout)
}

func cmdLabServe(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs lab serve", pflag.ContinueOnError)
	name := fs.String("name", "Real Server", "what to answer")
	listen := fs.String("listen", ":80", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	return lab.Serve(ctx, *name, *listen, os.Stdout)
}

func cmdLabFetch(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs lab fetch", pflag.ContinueOnError)
	hold := fs.Duration("hold", 0, "keep the connection open this long after the answer")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("want one URL")}
	}
	return lab.Fetch(ctx, fs.Arg(0), *hold, io.Writer(os.Stdout))
}
