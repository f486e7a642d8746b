//go:build linux

package main

import (
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
	for _, w := range []struct {
		key     string
		streams string
	}{{"tcp1", "1"}, {"tcp4", "4"}} {
		v, err := profiled(b, c, r, w.key, func() (float64, error) { return iperfTCP(b.client, secs, w.streams) })
		if err != nil {
			note(w.key, err)
		} else {
			set(w.key, v/1e9)
		}
	}
	if r.Director == "haproxy" {
		r.Notes = append(r.Notes, "udp_pps: HAProxy's TCP mode carries no UDP")
	} else if u, err := profiled(b, c, r, "udp_pps", func() (udpFigures, error) { return udpFlood(b, self, c.duration, c.udpSenders) }); err != nil {
		note("udp_pps", err)
	} else {
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
	if v, err := profiled(b, c, r, "http_close", func() (float64, error) { return wrk(b.client, secs, true) }); err != nil {
		note("http_close", err)
	} else {
		set("http_close", v)
	}
	if v, err := profiled(b, c, r, "http_keepalive", func() (float64, error) { return wrk(b.client, secs, false) }); err != nil {
		note("http_keepalive", err)
	} else {
		set("http_keepalive", v)
	}
	if l, err := profiled(b, c, r, "latency", func() (latFigures, error) { return latency(b.client, c.duration) }); err != nil {
		note("latency", err)
	} else {
		set("lat_p50", l.p50)
		set("lat_p99", l.p99)
		set("lat_missed", 100*float64(l.missed)/float64(l.total))
		if l.missed*100 > l.total {
			r.Notes = append(r.Notes, fmt.Sprintf("latency: %d of %d requests could not be sent or failed at %d/s in a round (all %d connections busy): p50 and p99 are of the others, and flatter",
				l.missed, l.total, latRate, latConns))
		}
	}
	if b.dirProc != nil {
		if rss, cpu, err := procUsage(b.dirProc.Process.Pid); err != nil {
			note("usage", err)
		} else {
			set("rss_mb", rss)
			set("cpu_s", cpu)
		}
	}
}

// profiled runs workload key with the director's profiles taken
// meanwhile (-profile) and, for tunvs, the share of the packets that
// took the bypass rather than the stack.
func profiled[T any](b *bed, c config, r *result, key string, fn func() (T, error)) (T, error) {
	defer b.bypassShare(r, key)()
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
// fixed rate is made of.
func (b *bed) bypassShare(r *result, key string) func() {
	if !b.tunvs {
		return func() {}
	}
	m0, err := scrapeMetrics(b)
	if err != nil {
		return func() {}
	}
	_, cpu0, cpuErr := procUsage(b.dirProc.Process.Pid)
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
// was still busy).
type latFigures struct {
	p50, p99      float64
	missed, total int
}

// latency sends requests at a fixed moderate rate (latRate a second over
// latConns keep-alive connections) for d. A tick that finds every
// connection busy is counted as missed rather than queued (no
// coordinated omission): a slow director, or a loaded machine, shows as
// missed requests, which the caller reports beside the percentiles.
func latency(h *netns.Host, d time.Duration) (latFigures, error) {
	cl := nsHTTPClient(h, latConns)
	defer cl.CloseIdleConnections()
	var mu sync.Mutex
	var lat []float64
	var failed int
	tick := time.NewTicker(time.Second / latRate)
	defer tick.Stop()
	sem := make(chan struct{}, latConns)
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
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
				lat = append(lat, float64(el.Microseconds()))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(lat) == 0 {
		return latFigures{}, fmt.Errorf("no request succeeded (%d failed)", failed)
	}
	sort.Float64s(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return latFigures{p50: q(0.50), p99: q(0.99), missed: failed, total: failed + len(lat)}, nil
}
