//go:build linux

// Command compare runs the same workloads through every director it can
// find on this machine, on two namespace topologies (-topology), in one
// run: the kernel's own IPVS (when /proc/net/ip_vs exists), the kernel's
// nftables NAT (numgen round robin), tunvs with offloads (tunvs-offload,
// its defaults) and without (tunvs-plain: one packet per system call, as
// the portable water device does), and HAProxy in TCP mode (when
// installed). The topologies:
//
//   - tun: the client and each real server on a point-to-point link to the
//     director, which routes between them (tunvs: one TUN device per
//     host, plus the variant tunvs-split of that device);
//     tunvs-fullnat is tunvs-offload with its real servers --fullnat
//     (issue 15), on both topologies;
//   - article: the classic LVS-NAT article's (LAB.md): client -> router ->
//     the director one-armed on the real servers' bridge, the VIP an alias
//     beside the DIP, the real servers' gateway the VIP (tunvs: one TAP
//     device on the bridge; the kernel's directors: one veth).
//
// On both, tunvs-mq is tunvs-offload with two queues per device
// (--tun-queues 2).
//
// It prints a table per topology with each figure as a ratio to the
// kernel's director on the same topology in the same run, and writes the
// raw numbers as JSON and a chart as SVG.
//
// The workloads are iperf3 (TCP), wrk (HTTP), an in-process client at a
// fixed rate (latency), and a UDP small-packet flood with its own batched
// sender and receivers (udpflood.go): iperf3's single-threaded UDP sender
// would be the limit, not the director.
//
// Then, for tunvs-offload on each topology, the flows workload (flows.go)
// fills a fresh director's table with -flows concurrent UDP flows (default
// 1M, one datagram each) and records its RSS there, once as it comes and
// once with GOGC=-flows-gogc; -flows 0 skips it. The kernel's directors
// are not measured for it (their conntrack limit is shared with the host).
//
//	go run ./bench/compare -out bench/results   # or: make compare
//	go run ./bench/compare -topology article -only nft,tunvs-offload -flows 0   # a quick look
//
// It re-executes itself inside a fresh user and network namespace (see
// internal/netns) and touches nothing outside it. Traffic goes only between the
// namespaces it builds.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// result is one director's figures; a missing figure is NaN in the table
// and absent in the JSON.
type result struct {
	Director string `json:"director"`
	// Topology is topoTUN or topoArticle (empty in results from before
	// there were two: topoTUN).
	Topology string             `json:"topology,omitempty"`
	Skipped  string             `json:"skipped,omitempty"`
	Figures  map[string]float64 `json:"figures"`
	Notes    []string           `json:"notes,omitempty"`
	// Rounds holds each round's own figures when there were several
	// (-rounds); Figures is then their median.
	Rounds []map[string]float64 `json:"rounds,omitempty"`
}

// The workloads, in table order, with their units. Bigger is better except
// where lowerBetter says so.
var workloads = []struct{ key, label, unit string }{
	{"tcp1", "TCP 1 stream", "Gbit/s"},
	{"tcp4", "TCP 4 streams", "Gbit/s"},
	{"udp_pps", "UDP 64 B datagrams received", "kpps"},
	{"udp_sent", "UDP 64 B datagrams sent", "kpps"},
	{"udp_loss", "UDP loss", "%"},
	{"http_close", "HTTP new conns", "req/s"},
	{"http_keepalive", "HTTP keep-alive", "req/s"},
	{"lat_p50", "latency p50 @ fixed rate", "µs"},
	{"lat_p90", "latency p90 @ fixed rate", "µs"},
	{"lat_p99", "latency p99 @ fixed rate", "µs"},
	{"lat_missed", "latency: requests missed (failed or not sent)", "%"},
	{"rss_mb", "director peak RSS", "MB"},
	{"rss_anon_mb", "of it anonymous (heap, stacks, runtime)", "MB"},
	{"rss_file_mb", "of it file pages (binary, libraries)", "MB"},
	{"cpu_s", "director CPU", "s"},
	{"flows_held", "flows held (of -flows, fresh director)", "k"},
	{"flows_rss_mb", "director RSS at the flows held", "MB"},
	{"flows_hwm_mb", "director peak RSS at the flows held", "MB"},
	{"flows_gogc_held", "flows held, GOGC=?", "k"},
	{"flows_gogc_rss_mb", "director RSS at the flows held, GOGC=?", "MB"},
	{"flows_gogc_hwm_mb", "director peak RSS at the flows held, GOGC=?", "MB"},
}

var lowerBetter = map[string]bool{"lat_p50": true, "lat_p90": true, "lat_p99": true, "lat_missed": true, "udp_loss": true, "rss_mb": true, "cpu_s": true,
	"rss_anon_mb": true, "rss_file_mb": true,
	"flows_rss_mb": true, "flows_hwm_mb": true, "flows_gogc_rss_mb": true, "flows_gogc_hwm_mb": true}

// notCharted are the table's rows that explain another row rather than
// compare the directors: the chart leaves them out.
// The flows rows have no kernel figure to be a ratio to either.
var notCharted = map[string]bool{"udp_sent": true, "udp_loss": true, "lat_missed": true,
	"rss_anon_mb": true, "rss_file_mb": true,
	"flows_held": true, "flows_rss_mb": true, "flows_hwm_mb": true,
	"flows_gogc_held": true, "flows_gogc_rss_mb": true, "flows_gogc_hwm_mb": true}

// rssMeta says what the RSS rows are (meta "rss", printed under the table).
var rssMeta = fmt.Sprintf("peak RSS is the director's VmHWM at the end of its workloads; its anonymous and file rows are RssAnon and RssFile (/proc/PID/status) at the highest VmRSS of samples taken every %v while they ran (results.json also has the highest of each: rss_anon_max_mb, rss_file_max_mb). File pages are the binary's and shared libraries' pages in the page cache the process has mapped; anonymous ones are its own (heap, stacks, runtime metadata)", memSampleEvery)

// optionalRow are rows that results from older runs lack: the table
// leaves them out when no director has them.
var optionalRow = map[string]bool{"rss_anon_mb": true, "rss_file_mb": true}

type config struct {
	out      string
	duration time.Duration
	only     string
	tunvsBin string
	// udpSenders is the number of sending threads of the UDP workload
	// (its flows stay udpFlows whatever it is).
	udpSenders int
	// flows is the flows workload's target (0: skip it, flows.go);
	// flowsGOGC the GOGC of its second measurement (0: no second one).
	flows, flowsGOGC, flowsRate int
	flowsBudget                 time.Duration
	// rounds is how many times every director runs the workloads, in
	// turn (nft, tunvs, ..., nft, tunvs, ...): figures are medians.
	rounds int
	// topologies are the test beds every director is measured on, in
	// order (-topology).
	topologies []string
	// tunvsFlags are added to every tunvs director's command line
	// (-tunvs-flags), to measure an option of tunvs against its defaults.
	tunvsFlags []string
	// profile is where -profile puts the director's profiles ("": none;
	// profile.go).
	profile string
	// workloads are the workloads to run (-workloads; nil: all of them).
	workloads []string
}

// workloadNames are what -workloads takes, in the order they run.
var workloadNames = []string{"tcp1", "tcp4", "udp", "http_close", "http_keepalive", "latency"}

// runs says whether workload w (one of workloadNames) is to run.
func (c config) runs(w string) bool { return c.workloads == nil || slices.Contains(c.workloads, w) }

func main() {
	var c config
	flag.StringVar(&c.out, "out", "bench/results", "directory for results.json and chart.svg")
	flag.DurationVar(&c.duration, "t", 5*time.Second, "duration of each workload")
	flag.StringVar(&c.only, "only", "", "comma-separated directors to run (ipvs,nft,tunvs-offload,tunvs-mq,tunvs-split,tunvs-plain,tunvs-fullnat,haproxy; tunvs-split on the TUN topology only)")
	flag.StringVar(&c.tunvsBin, "tunvs", "", "tunvs binary (default: build it)")
	flag.IntVar(&c.rounds, "rounds", 1, "run every director's workloads this many times, directors interleaved, and report the medians (the machine's drift and noise hit every director alike); the flows workload runs once")
	flag.IntVar(&c.udpSenders, "udp-senders", 2, fmt.Sprintf("sending threads of the UDP workload, 1 to %d (the flows stay %d)", udpFlows, udpFlows))
	flag.IntVar(&c.flows, "flows", 1000000, "concurrent UDP flows the flows workload puts in each tunvs director's table (0: skip it)")
	flag.IntVar(&c.flowsGOGC, "flows-gogc", 100, "GOGC of the flows workload's second measurement, set in tunvs's environment (tunvs runs with 50 unless told; 100 is Go's default; 0: no second measurement)")
	flag.IntVar(&c.flowsRate, "flows-rate", 30000, "new flows a second the flows workload starts at (then it follows what the director takes in)")
	flag.DurationVar(&c.flowsBudget, "flows-time", 30*time.Second, "time the flows workload has to fill the table, per measurement (what it reached then is reported)")
	tunvsFlags := flag.String("tunvs-flags", "", "extra flags for every tunvs director, space-separated (e.g. '--gogc=100'), to measure an option against the defaults of an earlier run")
	topos := flag.String("topology", strings.Join(topologyNames, ","), "comma-separated topologies to measure every director on: tun (one TUN device per host, the director the router between them), article (LAB.md: a router in front, the director one-armed on the real servers' bridge, tunvs on a TAP device)")
	flag.StringVar(&c.profile, "profile", "", "directory for the tunvs directors' CPU, block and mutex profiles and execution traces, taken during each workload (tunvs runs with --pprof; profiling costs time: take figures from a run without it)")
	from := flag.String("from", "", "redraw the table and chart from a results.json instead of running")
	wls := flag.String("workloads", "", "comma-separated workloads to run ("+strings.Join(workloadNames, ",")+"; default all), e.g. latency alone to look at the tail")
	flag.Parse()
	c.tunvsFlags = strings.Fields(*tunvsFlags)
	if *wls != "" {
		for _, w := range strings.Split(*wls, ",") {
			if !slices.Contains(workloadNames, w) {
				fmt.Fprintf(os.Stderr, "compare: -workloads %q: want a comma-separated list of %s\n", *wls, strings.Join(workloadNames, ", "))
				os.Exit(2)
			}
			c.workloads = append(c.workloads, w)
		}
	}
	for _, t := range strings.Split(*topos, ",") {
		if !slices.Contains(topologyNames, t) {
			fmt.Fprintf(os.Stderr, "compare: -topology %q: want a comma-separated list of %s\n", *topos, strings.Join(topologyNames, ", "))
			os.Exit(2)
		}
		if !slices.Contains(c.topologies, t) {
			c.topologies = append(c.topologies, t)
		}
	}
	if c.rounds < 1 || c.rounds > 15 {
		fmt.Fprintln(os.Stderr, "compare: -rounds must be 1 to 15")
		os.Exit(2)
	}
	if c.udpSenders < 1 || c.udpSenders > udpFlows {
		fmt.Fprintf(os.Stderr, "compare: -udp-senders must be 1 to %d\n", udpFlows)
		os.Exit(2)
	}
	if c.flows < 0 || c.flows > maxFlows || c.flowsGOGC < 0 || c.flowsRate < 1 || c.flowsBudget <= 0 {
		fmt.Fprintf(os.Stderr, "compare: -flows must be 0 to %d, -flows-gogc at least 0, -flows-rate and -flows-time positive\n", maxFlows)
		os.Exit(2)
	}
	if *from != "" {
		os.Exit(redraw(c, *from))
	}
	if role := os.Getenv(envRole); role != "" {
		os.Exit(serveRole(role, flag.Args()))
	}
	if !netns.Inside() {
		os.Exit(outside(c))
	}
	if err := netns.CheckFresh(); err != nil {
		fmt.Fprintln(os.Stderr, "compare: refusing to run:", err)
		os.Exit(1)
	}
	res, err := inside(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	// The outer half reads the results from this line.
	fmt.Printf("RESULTS %s\n", b)
}

// outside builds tunvs if needed, re-executes this program in a sandbox and
// reports what came back.
func outside(c config) int {
	missing := []string{}
	for _, tool := range []string{"iperf3", "wrk", "nft", "haproxy", "ipvsadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		fmt.Printf("not installed (the directors or workloads that need them are skipped; apt-get install %s):\n  %s\n",
			strings.Join(missing, " "), strings.Join(missing, ", "))
	}
	if c.tunvsBin == "" {
		dir, err := os.MkdirTemp("", "tunvs-compare-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		c.tunvsBin = filepath.Join(dir, "tunvs")
		// Built as make build builds it: static (see Makefile).
		build := exec.Command("go", "build", "-o", c.tunvsBin, "./cmd/tunvs")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/tunvs: %v\n%s", err, out)
			return 1
		}
	}
	args := []string{"-t", c.duration.String(), "-rounds", strconv.Itoa(c.rounds), "-only", c.only, "-topology", strings.Join(c.topologies, ","), "-tunvs", c.tunvsBin, "-out", c.out, "-udp-senders", strconv.Itoa(c.udpSenders),
		"-flows", strconv.Itoa(c.flows), "-flows-gogc", strconv.Itoa(c.flowsGOGC),
		"-flows-rate", strconv.Itoa(c.flowsRate), "-flows-time", c.flowsBudget.String()}
	if len(c.tunvsFlags) > 0 {
		args = append(args, "-tunvs-flags", strings.Join(c.tunvsFlags, " "))
	}
	if c.workloads != nil {
		args = append(args, "-workloads", strings.Join(c.workloads, ","))
	}
	if c.profile != "" {
		abs, err := filepath.Abs(c.profile)
		if err == nil {
			err = os.MkdirAll(abs, 0o777)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare: -profile:", err)
			return 1
		}
		// The sandbox's root is an ordinary user outside: let it write.
		os.Chmod(abs, 0o777)
		args = append(args, "-profile", abs)
	}
	var stdout strings.Builder
	sb, err := netns.Sandbox(context.Background(), netns.SandboxOptions{
		Unprivileged: os.Geteuid() != 0,
		Args:         args,
		Stdout:       &stdout,
		Stderr:       os.Stderr,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: sandbox:", err)
		return 1
	}
	if err := sb.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "compare: sandboxed run failed: %v\n%s", err, stdout.String())
		return 1
	}
	var res []result
	for _, l := range strings.Split(stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(l, "RESULTS "); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				fmt.Fprintln(os.Stderr, "compare: bad results:", err)
				return 1
			}
		} else if l != "" {
			fmt.Println(l)
		}
	}
	if res == nil {
		fmt.Fprintln(os.Stderr, "compare: no results")
		return 1
	}
	return report(c, res)
}

// redraw rewrites the table and chart of an earlier run, with its date,
// machine and commit.
func redraw(c config, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var saved struct {
		Meta    map[string]any `json:"meta"`
		Results []result       `json:"results"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", path, err)
		return 1
	}
	return write(c, saved.Results, saved.Meta)
}

func report(c config, res []result) int {
	rev, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	meta := map[string]any{
		"date":        time.Now().UTC().Format("2006-01-02 15:04 MST"),
		"commit":      strings.TrimSpace(string(rev)),
		"machine":     fmt.Sprintf("%s/%s, %d CPUs, %s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), syscallCost()),
		"go":          runtime.Version(),
		"seconds":     c.duration.Seconds(),
		"rounds":      c.rounds,
		"topologies":  c.topologies,
		"tunvs_flags": strings.Join(c.tunvsFlags, " "),
		"rss":         rssMeta,
		"udp":         fmt.Sprintf("%d flows of %d-byte datagrams from %d sender threads, sendmmsg/recvmmsg in batches of %d", udpFlows, udpPayload, c.udpSenders, udpBatch),
	}
	if c.flows > 0 {
		meta["flows"] = fmt.Sprintf("%d UDP flows, one %d-byte datagram each, from %d client addresses, into a fresh %s (--max-conns %d) per measurement and topology; held is tunvs_connections once it stops growing, RSS and peak RSS are VmRSS and VmHWM then", c.flows, flowPayload, flowAddrs(c.flows), flowsDirector, max(c.flows+c.flows/2, 1<<20))
		meta["flows_gogc"] = c.flowsGOGC
	}
	return write(c, res, meta)
}

func write(c config, res []result, meta map[string]any) int {
	table := renderTable(res, meta)
	fmt.Print(table)
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.MarshalIndent(map[string]any{"meta": meta, "results": res}, "", "  ")
	if err := errors.Join(
		os.WriteFile(filepath.Join(c.out, "results.json"), b, 0o644),
		os.WriteFile(filepath.Join(c.out, "table.md"), []byte(table), 0o644),
		os.WriteFile(filepath.Join(c.out, "chart.svg"), []byte(renderSVG(res)), 0o644),
	); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("\nwrote %s/{results.json,table.md,chart.svg}\n", c.out)
	return 0
}

// syscallCost says what a null system call costs on this machine (the
// median of five rounds of getppid) and how the kernel isolates itself
// from user space (vulnerabilities/meltdown). tunvs crosses into the
// kernel at least twice a packet and the kernel's NAT not at all, so
// its ratios move with this from one machine to another: 0.94-1.07 µs
// on a PVM guest with PTI and no PCID halved them against an Intel guest
// (docs/perf.md, "A machine whose system calls cost a microsecond").
func syscallCost() string {
	const n = 200_000
	var rounds [5]time.Duration
	for i := range rounds {
		t := time.Now()
		for range n {
			syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		rounds[i] = time.Since(t) / n
	}
	slices.Sort(rounds[:])
	isolation := "meltdown: unknown"
	if b, err := os.ReadFile("/sys/devices/system/cpu/vulnerabilities/meltdown"); err == nil {
		isolation = "meltdown: " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("a null system call %d ns (%s)", rounds[len(rounds)/2].Nanoseconds(), isolation)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
