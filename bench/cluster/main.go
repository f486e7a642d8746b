//go:build linux

// Command cluster measures the scale-out lab's aggregate throughput with
// 1, 2, 3... directors behind the BGP router's ECMP (tunvs lab --netns
// --directors N), with each director's CPU.
//
// Each round builds the lab (lab.BuildCluster: BIRD, N tunvs directors
// with mh, sloppy_tcp and direct routing), opens -flows TCP connections
// from the client to the VIP and uploads on all of them for -seconds: with
// direct routing only the client's half of a connection crosses a
// director, so uploads are what loads the directors (a download would
// send them only ACKs). The real servers count what they receive. The
// figures are the real servers' aggregate goodput and each director's
// CPU time (Cluster.DirectorCPU: utime+stime) over the measurement, as a
// share of one core.
//
// Everything (client, router, directors, real servers, the load
// generator and sink in this process) shares the machine's cores: a
// director's throughput is bounded by the CPU the others leave it, so
// scaling shows only while the directors, not the machine, are the
// limit. Run it with
//
//	go run ./bench/cluster [-directors 1,2,3] [-flows 24] [-seconds 10]
//
// as root or as an ordinary user (it enters a user and network namespace
// sandbox of its own).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunvs/tunvs/internal/netns"
	"github.com/tunvs/tunvs/lab"
)

const port = 8080

func main() {
	dirs := flag.String("directors", "1,2,3", "director counts to measure, in order")
	flows := flag.Int("flows", 24, "TCP connections uploading at once")
	seconds := flag.Int("seconds", 10, "length of each measurement")
	servers := flag.Int("servers", 3, "real servers")
	self := flag.String("tunvs", "", "the tunvs executable (default: built from ./cmd/tunvs)")
	flag.Parse()
	var ns []int
	for _, s := range strings.Split(*dirs, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > lab.MaxDirectors {
			fatal(fmt.Errorf("-directors %q: want counts from 1 to %d", *dirs, lab.MaxDirectors))
		}
		ns = append(ns, n)
	}
	if !netns.Inside() {
		if err := outer(*self); err != nil {
			fatal(err)
		}
		return
	}
	fmt.Printf("%-9s %6s %12s   %s\n", "directors", "flows", "Mbit/s", "CPU per director (% of one core)")
	for _, n := range ns {
		r, err := round(n, *flows, *servers, time.Duration(*seconds)*time.Second, os.Getenv("TUNVS_BIN"))
		if err != nil {
			fatal(fmt.Errorf("%d directors: %w", n, err))
		}
		var cpu []string
		for _, c := range r.cpu {
			cpu = append(cpu, fmt.Sprintf("%.0f", c))
		}
		fmt.Printf("%-9d %6d %12.0f   %s\n", n, *flows, r.mbps, strings.Join(cpu, " "))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "cluster:", err)
	os.Exit(1)
}

// outer builds tunvs (unless given) and runs this program again in a
// sandbox.
func outer(self string) error {
	if self == "" {
		dir, err := os.MkdirTemp("", "tunvs-cluster-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755)
		self = filepath.Join(dir, "tunvs")
		// tunvs-bgp beside it: the directors' --bgp starts it.
		for _, c := range []string{"tunvs", "tunvs-bgp"} {
			if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c).CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/%s: %v\n%s", c, err, out)
			}
		}
	}
	self, err := filepath.Abs(self)
	if err != nil {
		return err
	}
	if err := netns.Probe(context.Background(), netns.SandboxOptions{}); err != nil {
		return err
	}
	sb, err := netns.Sandbox(context.Background(), netns.SandboxOptions{
		Args: os.Args[1:], Env: []string{"TUNVS_BIN=" + self},
		Stdout: os.Stdout, Stderr: os.Stderr,
	})
	if err != nil {
		return err
	}
	return sb.Run()
}

type result struct {
	mbps float64
	cpu  []float64
}

// round builds the lab with n directors, uploads for d and tears it down.
func round(n, flows, servers int, d time.Duration, self string) (res result, err error) {
	if self == "" {
		return res, errors.New("TUNVS_BIN is not set")
	}
	topo, err := netns.New()
	if err != nil {
		return res, err
	}
	defer topo.Close()
	dir, err := os.MkdirTemp("", "tunvs-cluster-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := lab.BuildCluster(ctx, topo, lab.ClusterConfig{Directors: n, Servers: servers, Port: port, NoServers: true,
		StateDir: dir, Self: self})
	if err != nil {
		return res, err
	}
	defer c.Close()
	var received atomic.Int64
	for _, rs := range c.RSs {
		var ln net.Listener
		if err := rs.Do(func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			return res, err
		}
		defer ln.Close()
		go sink(ln, &received)
	}
	conns := make([]net.Conn, flows)
	if err := c.Client.Do(func() error {
		for i := range conns {
			var err error
			conns[i], err = net.DialTimeout("tcp", netip.AddrPortFrom(lab.ClusterVIP, port).String(), 10*time.Second)
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return res, err
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	buf := make([]byte, 128<<10)
	for _, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cn.Close()
			for !stop.Load() {
				cn.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := cn.Write(buf); err != nil && !isTimeout(err) {
					return
				}
			}
		}()
	}
	// A second of warm-up (slow start, ARP, the directors' first entries).
	time.Sleep(time.Second)
	cpu0 := make([]float64, n)
	for i := range n {
		cpu0[i] = c.DirectorCPU(i).Seconds()
	}
	b0, t0 := received.Load(), time.Now()
	time.Sleep(d)
	b1, el := received.Load(), time.Since(t0)
	for i := range n {
		res.cpu = append(res.cpu, (c.DirectorCPU(i).Seconds()-cpu0[i])/el.Seconds()*100)
	}
	stop.Store(true)
	wg.Wait()
	res.mbps = float64(b1-b0) * 8 / el.Seconds() / 1e6
	return res, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// sink reads and counts everything its connections bring.
func sink(ln net.Listener, n *atomic.Int64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 256<<10)
			for {
				k, err := c.Read(buf)
				n.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
}
