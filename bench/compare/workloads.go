//go:build linux

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
)

// inside runs every director of every topology in turn, each on a fresh
// bed, c.rounds times over (directors interleaved), and gives each
// figure's median.
func inside(c config) ([]result, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var out []*result
	byName := map[string]*result{}
	for round := 0; round < c.rounds; round++ {
		for _, topo := range c.topologies {
			for _, d := range directors {
				if c.only != "" && !strings.Contains(","+c.only+",", ","+d.name+",") || d.topo != "" && topo != d.topo {
					continue
				}
				if c.rounds > 1 {
					fmt.Fprintf(os.Stderr, "== %s on %s (round %d of %d)\n", d.name, topo, round+1, c.rounds)
				} else {
					fmt.Fprintf(os.Stderr, "== %s on %s\n", d.name, topo)
				}
				r := result{Director: d.name, Topology: topo, Figures: map[string]float64{}}
				if err := runOnce(d, topo, c, self, &r, round == 0); err != nil {
					return nil, err
				}
				if r.Skipped != "" {
					fmt.Fprintf(os.Stderr, "   skipped: %s\n", r.Skipped)
				}
				key := topo + "/" + d.name
				agg := byName[key]
				if agg == nil {
					agg = &result{Director: d.name, Topology: topo, Figures: map[string]float64{}, Skipped: r.Skipped}
					byName[key] = agg
					out = append(out, agg)
				}
				if r.Skipped == "" {
					agg.Skipped = ""
					agg.Rounds = append(agg.Rounds, r.Figures)
				}
				for _, n := range r.Notes {
					if !slices.Contains(agg.Notes, n) {
						agg.Notes = append(agg.Notes, n)
					}
				}
			}
		}
	}
	res := make([]result, 0, len(out))
	for _, r := range out {
		r.Figures = medians(r.Rounds)
		if len(r.Rounds) < 2 {
			r.Rounds = nil
		}
		res = append(res, *r)
	}
	return res, nil
}

// runOnce sets a fresh bed of topology topo up for d, runs the workloads
// through it and, if flows, the flows workload on beds of its own.
func runOnce(d director, topo string, c config, self string, r *result, flows bool) error {
	b, err := newBed(topo)
	if err != nil {
		return err
	}
	b.pprof = c.profile != ""
	b.dirExtra = c.tunvsFlags
	skip, err := d.setup(b, c)
	switch {
	case err != nil:
		r.Skipped = "setup failed: " + err.Error()
	case skip != "":
		r.Skipped = skip
	default:
		if err := b.servers(self); err != nil {
			r.Skipped = "servers: " + err.Error()
		} else {
			run(b, c, self, r)
		}
	}
	b.close()
	if r.Skipped == "" && flows && c.flows > 0 {
		runFlows(d, topo, c, self, r)
	}
	return nil
}

// medians is, for every figure of any round, the median of the rounds
// that have it (the mean of the middle two for an even count).
func medians(rounds []map[string]float64) map[string]float64 {
	vals := map[string][]float64{}
	for _, f := range rounds {
		for k, v := range f {
			vals[k] = append(vals[k], v)
		}
	}
	out := make(map[string]float64, len(vals))
	for k, v := range vals {
		slices.Sort(v)
		n := len(v)
		if n%2 == 1 {
			out[k] = v[n/2]
		} else {
			out[k] = (v[n/2-1] + v[n/2]) / 2
		}
	}
	return out
}

func run(b *bed, c config, self string, r *result) {
	secs := strconv.Itoa(int(math.Max(1, c.duration.Seconds())))
	note := func(w string, err error) {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %v", w, err))
		fmt.Fprintf(os.Stderr, "   %s: %v\n", w, err)
	}
	set := func(k string, v float64) {
		r.Figures[k] = v
		fmt.Fprintf(os.Stderr, "   %-15s %.2f\n", k, v)
	}
	var mem *memSampler
	if b.dirProc != nil {
		mem = sampleMem(b.dirProc.Process.Pid)
	}
	for _, w := range []struct {
		key     string
		streams string
	}{{"tcp1", "1"}, {"tcp4", "4"}} {
		if !c.runs(w.key) {
			continue
		}
		v, err := profiled(b, c, r, w.key, func() (float64, error) { return iperfTCP(b.client, secs, w.streams) })
		if err != nil {
			note(w.key, err)
		} else {
			set(w.key, v/1e9)
		}
	}
	switch {
	case !c.runs("udp"):
	case r.Director == "haproxy":
		r.Notes = append(r.Notes, "udp_pps: HAProxy's TCP mode carries no UDP")
	default:
		udpWorkload(b, c, self, r, note, set)
	}
	for _, w := range []struct {
		key   string
		close bool
	}{{"http_close", true}, {"http_keepalive", false}} {
		if !c.runs(w.key) {
			continue
		}
		if v, err := profiled(b, c, r, w.key, func() (float64, error) { return wrk(b.client, secs, w.close) }); err != nil {
			note(w.key, err)
		} else {
			set(w.key, v)
		}
	}
	if c.runs("latency") {
		latencyWorkload(b, c, r, note, set)
	}
	if b.dirProc != nil {
		if rss, cpu, err := procUsage(b.dirProc.Process.Pid); err != nil {
			note("usage", err)
		} else {
			set("rss_mb", rss)
			set("cpu_s", cpu)
		}
		memFigures(b.dirProc.Process.Pid, mem, r, note, set)
	}
}

// memFigures records what the director's resident memory was made of at
// its highest sample: anonymous and file pages (table and JSON), and for
// the JSON the highest of each whenever it was.
func memFigures(pid int, mem *memSampler, r *result, note func(string, error), set func(string, float64)) {
	peak, maxAnon, maxFile, n, err := mem.finish(pid)
	if err != nil {
		note("rss_anon_mb", err)
		return
	}
	set("rss_anon_mb", peak.anon)
	set("rss_file_mb", peak.file)
	r.Figures["rss_sampled_mb"] = peak.rss
	r.Figures["rss_anon_max_mb"] = maxAnon
	r.Figures["rss_file_max_mb"] = maxFile
	fmt.Fprintf(os.Stderr, "   rss: highest of %d samples VmRSS %.2f MB = RssAnon %.2f + RssFile %.2f + RssShmem %.2f; highest RssAnon %.2f, RssFile %.2f\n",
		n, peak.rss, peak.anon, peak.file, peak.shmem, maxAnon, maxFile)
}

// udpWorkload runs the UDP flood and records its figures.
func udpWorkload(b *bed, c config, self string, r *result, note func(string, error), set func(string, float64)) {
	u, err := profiled(b, c, r, "udp_pps", func() (udpFigures, error) { return udpFlood(b, self, c.duration, c.udpSenders) })
	if err != nil {
		note("udp_pps", err)
		return
	}
	set("udp_pps", u.recv/1e3)
	set("udp_sent", u.sent/1e3)
	set("udp_loss", max(0, 100*(1-u.recv/u.sent)))
	// For the JSON only: where the loss was.
	r.Figures["udp_arrived"] = u.arrived / 1e3
	r.Figures["udp_rcvbuf_drops"] = u.rcvbufDrops / 1e3
	r.Figures["udp_senders"] = float64(u.senders)
	per := make([]string, len(u.perServer))
	for i, v := range u.perServer {
		per[i] = fmt.Sprintf("rs%d %.1f", i+1, v/1e3)
	}
	fmt.Fprintf(os.Stderr, "   udp: %d sender threads, %d flows, %.2fs window: sent %.1f kpps, read %.1f kpps (%s), arrived at the servers' sockets %.1f kpps, dropped there %.1f kpps, send errors %.0f/s\n",
		u.senders, udpFlows, u.windowSecond, u.sent/1e3, u.recv/1e3, strings.Join(per, ", "), u.arrived/1e3, u.rcvbufDrops/1e3, u.sendErrs)
}

// latencyWorkload runs the latency workload and records its figures:
// for the table the median, p90 (steadier than p99 where a few stalls of
// the machine make the tail), p99 and share missed; for the JSON and the
// log, the rest of the distribution and the rate actually sent.
func latencyWorkload(b *bed, c config, r *result, note func(string, error), set func(string, float64)) {
	l, err := profiled(b, c, r, "latency", func() (latFigures, error) { return latency(b.client, c.duration) })
	if err != nil {
		note("latency", err)
		return
	}
	set("lat_p50", l.p50)
	set("lat_p90", l.p90)
	set("lat_p99", l.p99)
	set("lat_missed", 100*float64(l.missed)/float64(l.total))
	r.Figures["lat_p999"] = l.p999
	r.Figures["lat_max"] = l.max
	r.Figures["lat_rate"] = l.rate
	fmt.Fprintf(os.Stderr, "   latency: %d requests at %.0f/s (of %d/s asked); µs p99.9 %.0f, max %.0f; %s\n",
		l.total, l.rate, latRate, l.p999, l.max, l.hist)
	if len(l.slow) > 0 {
		fmt.Fprintf(os.Stderr, "   latency: slower than %v, by when they were sent (s): %s\n", latSlow, l.slow)
	}
	if l.missed*100 > l.total {
		r.Notes = append(r.Notes, fmt.Sprintf("latency: %d of %d requests could not be sent or failed at %d/s in a round (all %d connections busy): p50 and p99 are of the others, and flatter",
			l.missed, l.total, latRate, latConns))
	}
}

// profiled runs workload key with the director's profiles taken
// meanwhile (-profile), the machine's idle CPU time and, for tunvs, the
// share of the packets that took the bypass rather than the stack.
func profiled[T any](b *bed, c config, r *result, key string, fn func() (T, error)) (T, error) {
	defer b.bypassShare(r, key)()
	defer idleDuring(r, key)()
	defer b.lossDuring(r, key)()
	prof := b.profileDuring(c, r, key, c.duration)
	defer prof.wait()
	return fn()
}

// bypassShare reads tunvs's packet counters now and returns what reads
// them again and records, for the JSON, key_bypass_pct: of the packets
// tunvs forwarded meanwhile, the percentage that went past the stack
// (tunvs_host_fast_path_total) rather than through it
// (tunvs_host_delivered_total, which also counts ARP and the packets to
// the director itself). It shows where gVisor still is on a workload's
// path. It also records key_cpu_us_pkt, the director's CPU time (its
// own and the kernel's work in its system calls, the receiving hosts'
// TCP included) per packet over the workload: unlike the throughput, it
// moves less with what else the machine runs, so options can be
// compared on a busy one. At a low packet rate (the latency workload)
// the director's background work (expiry, rate estimator, metrics
// scrapes, and with -profile the profiling) is a large part of it. And
// key_waits_pkt: how many times a device reader slept and was woken
// (tunvs_host_read_waits_total) per packet, the wakeups the tail at a
// fixed rate is made of. And key_reads_pkt and key_writes_pkt, the
// director's read and write system calls per packet (/proc/PID/io):
// below 1 where reads or writes carry super-packets or coalesced runs,
// the scrapes of its metrics (a handful) included; a director on
// io_uring makes its reads and writes in io_uring_enter calls, which
// /proc/PID/io does not count: key_enters_pkt counts those. And key_gc, the GC
// cycles the director ran meanwhile. And key_runq_us_pkt, the time the
// director's threads spent runnable but waiting for a CPU per packet
// (beside key_cpu_us_pkt, the time they ran), key_preempt_pkt, the times
// they were preempted per packet: with key_idle_pct (idleDuring) they
// tell a director that waits for its packets from one that waits for a
// CPU.
func (b *bed) bypassShare(r *result, key string) func() {
	if !b.tunvs {
		return func() {}
	}
	m0, err := scrapeMetrics(b)
	if err != nil {
		return func() {}
	}
	_, cpu0, cpuErr := procUsage(b.dirProc.Process.Pid)
	rd0, wr0, ioErr := procSyscalls(b.dirProc.Process.Pid)
	rq0, pre0, rqErr := procRunDelay(b.dirProc.Process.Pid)
	return func() {
		m, err := scrapeMetrics(b)
		if err != nil {
			return
		}
		fast := m["tunvs_host_fast_path_total"] - m0["tunvs_host_fast_path_total"]
		slow := m["tunvs_host_delivered_total"] - m0["tunvs_host_delivered_total"]
		if fast+slow > 0 {
			r.Figures[key+"_bypass_pct"] = 100 * fast / (fast + slow)
			fmt.Fprintf(os.Stderr, "   %-15s %.0f of %.0f packets past the stack (%.1f%%)\n", key+" bypass", fast, fast+slow, 100*fast/(fast+slow))
			if gc, ok := m["go_gc_cycles_total"]; ok {
				// GC cycles of the director during the workload:
				// a pause is one of the tail's suspects.
				r.Figures[key+"_gc"] = gc - m0["go_gc_cycles_total"]
				fmt.Fprintf(os.Stderr, "   %-15s %.0f GC cycles\n", key+" gc", r.Figures[key+"_gc"])
			}
			if e, ok := m["tunvs_host_ring_enters_total"]; ok {
				// A round of io_uring (--tun-read=ring): its reads
				// and writes are in no read or write count below.
				r.Figures[key+"_enters_pkt"] = (e - m0["tunvs_host_ring_enters_total"]) / (fast + slow)
				fmt.Fprintf(os.Stderr, "   %-15s %.3f io_uring_enter calls per packet\n", key+" enters", r.Figures[key+"_enters_pkt"])
			}
			if a, ok := m["tunvs_host_queue_attaches_total"]; ok {
				// The TAP's queue on standby (--tun-standby).
				r.Figures[key+"_attaches"] = a - m0["tunvs_host_queue_attaches_total"]
				r.Figures[key+"_detaches"] = m["tunvs_host_queue_detaches_total"] - m0["tunvs_host_queue_detaches_total"]
				fmt.Fprintf(os.Stderr, "   %-15s queue on standby attached %.0f times, detached %.0f\n", key+" standby", r.Figures[key+"_attaches"], r.Figures[key+"_detaches"])
			}
			if w, ok := m["tunvs_host_read_waits_total"]; ok {
				// How many packets a reader's wakeup carries.
				r.Figures[key+"_waits_pkt"] = (w - m0["tunvs_host_read_waits_total"]) / (fast + slow)
				fmt.Fprintf(os.Stderr, "   %-15s %.3f reader wakeups per packet\n", key+" waits", r.Figures[key+"_waits_pkt"])
			}
			if _, cpu, err := procUsage(b.dirProc.Process.Pid); err == nil && cpuErr == nil {
				us := 1e6 * (cpu - cpu0) / (fast + slow)
				r.Figures[key+"_cpu_us_pkt"] = us
				fmt.Fprintf(os.Stderr, "   %-15s %.2f µs of director CPU per packet\n", key+" cpu", us)
			}
			if rd, wr, err := procSyscalls(b.dirProc.Process.Pid); err == nil && ioErr == nil {
				r.Figures[key+"_reads_pkt"] = (rd - rd0) / (fast + slow)
				r.Figures[key+"_writes_pkt"] = (wr - wr0) / (fast + slow)
				fmt.Fprintf(os.Stderr, "   %-15s %.3f read and %.3f write system calls per packet\n", key+" syscalls", r.Figures[key+"_reads_pkt"], r.Figures[key+"_writes_pkt"])
			}
			if rq, pre, err := procRunDelay(b.dirProc.Process.Pid); err == nil && rqErr == nil {
				r.Figures[key+"_runq_us_pkt"] = 1e6 * (rq - rq0) / (fast + slow)
				r.Figures[key+"_preempt_pkt"] = (pre - pre0) / (fast + slow)
				fmt.Fprintf(os.Stderr, "   %-15s %.2f µs per packet waiting for a CPU, %.3f preemptions per packet\n", key+" runq", r.Figures[key+"_runq_us_pkt"], r.Figures[key+"_preempt_pkt"])
			}
		}
	}
}

func iperfTCP(h *netns.Host, secs, streams string) (float64, error) {
	out, err := h.Run(context.Background(), "iperf3", "-c", vip, "-p", "5201", "-t", secs, "-P", streams, "-J")
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w", err)
	}
	var j struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		// iperf3 -J reports a failure (no server listening, say)
		// here, and exits with status 0.
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if j.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", j.Error)
	}
	return j.End.SumReceived.BitsPerSecond, nil
}

var reqPerSec = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

func wrk(h *netns.Host, secs string, closeConn bool) (float64, error) {
	args := []string{"wrk", "-t", "2", "-c", "32", "-d", secs + "s"}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	out, err := h.Run(context.Background(), append(args, "http://"+vip+"/")...)
	if err != nil {
		return 0, fmt.Errorf("wrk: %w", err)
	}
	m := reqPerSec.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("wrk: no Requests/sec in %q", out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// nsHTTPClient is an HTTP client whose connections are made in h's
// network namespace, keeping up to conns idle.
func nsHTTPClient(h *netns.Host, conns int) *http.Client {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = h.Do(func() error {
				var dl net.Dialer
				c, err = dl.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// The latency workload's rate and connections.
const latRate, latConns = 2000, 8

// latFigures is what the latency workload measured: percentiles in
// microseconds of the requests that were answered, and how many of the
// total were not (missed: failed, or not sent because every connection
// was still busy); the rate of ticks the sender made (below latRate
// when the harness itself waited for a CPU); a histogram, and when the
// requests slower than latSlow were sent, which tells a few stalls that
// hold up every connection at once from slow requests spread out.
type latFigures struct {
	p50, p90, p99, p999, max float64
	missed, total            int
	rate                     float64
	hist, slow               string
}

// latSlow is what the latency workload's log lists by time sent.
const latSlow = 2 * time.Millisecond

// latBounds are the latency workload's histogram buckets, in µs.
var latBounds = []float64{200, 300, 500, 1000, 2000, 5000, 10000, 50000}

// latency sends requests at a fixed moderate rate (latRate a second over
// latConns keep-alive connections) for d. A tick that finds every
// connection busy is counted as missed rather than queued (no
// coordinated omission): a slow director, or a loaded machine, shows as
// missed requests, which the caller reports beside the percentiles.
func latency(h *netns.Host, d time.Duration) (latFigures, error) {
	cl := nsHTTPClient(h, latConns)
	defer cl.CloseIdleConnections()
	type sample struct{ at, us float64 }
	var mu sync.Mutex
	var lat []sample
	var failed int
	tick := time.NewTicker(time.Second / latRate)
	defer tick.Stop()
	sem := make(chan struct{}, latConns)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	// Each tick sends the requests due since the last: Go's timers
	// fire no more often than once a millisecond in a process with
	// nothing else to do (the netpoller sleeps in epoll_wait, whose
	// timeout is in milliseconds: netpoll in runtime/netpoll_epoll.go),
	// so a ticker alone would send about 1000 a second, not latRate.
	sent := 0
	for now := time.Now(); now.Before(end); now = time.Now() {
		if sent >= int(now.Sub(start).Seconds()*latRate) {
			<-tick.C
			continue
		}
		sent++
		select {
		case sem <- struct{}{}:
		default:
			mu.Lock()
			failed++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			resp, err := cl.Get("http://" + vip + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			el := time.Since(t0)
			mu.Lock()
			if err != nil {
				failed++
			} else {
				lat = append(lat, sample{t0.Sub(start).Seconds(), float64(el.Microseconds())})
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if len(lat) == 0 {
		return latFigures{}, fmt.Errorf("no request succeeded (%d failed)", failed)
	}
	slices.SortFunc(lat, func(a, b sample) int { return cmp.Compare(a.at, b.at) })
	var slow []string
	for _, s := range lat {
		if s.us >= float64(latSlow.Microseconds()) {
			slow = append(slow, fmt.Sprintf("%.3f:%.1fms", s.at, s.us/1e3))
		}
	}
	us := make([]float64, len(lat))
	for i, s := range lat {
		us[i] = s.us
	}
	sort.Float64s(us)
	q := func(p float64) float64 { return us[min(len(us)-1, int(p*float64(len(us))))] }
	var hist []string
	lo := 0
	for _, bound := range append(latBounds, math.Inf(1)) {
		n := sort.SearchFloat64s(us, bound) - lo
		hist = append(hist, fmt.Sprintf("<%g: %d", bound, n))
		lo += n
	}
	total := failed + len(lat)
	return latFigures{
		p50: q(0.50), p90: q(0.90), p99: q(0.99), p999: q(0.999), max: us[len(us)-1],
		missed: failed, total: total, rate: float64(total) / took.Seconds(),
		hist: strings.Join(hist, ", "), slow: strings.Join(slow, " "),
	}, nil
}
