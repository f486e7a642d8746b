//go:build linux

package main

// -profile DIR: tunvs runs with --pprof in its namespace, and during each
// workload the harness takes the director's CPU profile and the block,
// mutex and allocation profiles' growth over most of the workload, then a
// second of its execution trace (go tool trace: goroutine wakeups, the
// scheduler's latency, system calls). The files are
// DIR/<topology>-<director>-<workload>.{cpu,block,mutex,allocs}.pprof and
// .trace.
//
//	go tool pprof -top DIR/tun-tunvs-offload-http_close.cpu.pprof
//	go tool trace DIR/tun-tunvs-offload-http_close.trace
//
// Profiling changes what it measures (the block profile alone costs
// something on every channel operation): take the figures of a run
// without -profile.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// pprofAddr is tunvs's --pprof listener with -profile, on the director's
// own loopback.
const pprofAddr = "127.0.0.1:9178"

// profiler takes the profiles of one workload; its zero value (no
// -profile, or a director that is not tunvs) does nothing.
type profiler struct {
	wg   sync.WaitGroup
	errs []string
	mu   sync.Mutex
}

// profileDuring starts taking the director's profiles for a workload of
// length d named key; wait for them with (*profiler).wait.
func (b *bed) profileDuring(c config, r *result, key string, d time.Duration) *profiler {
	p := &profiler{}
	if c.profile == "" || !b.pprof {
		return p
	}
	cl := nsHTTPClient(b.dir, 4)
	cl.Timeout = d + 10*time.Second
	base := filepath.Join(c.profile, fmt.Sprintf("%s-%s-%s", b.kind, r.Director, key))
	// Leave the workload a moment to start, and the trace a second at
	// the end.
	secs := max(1, int((d-1500*time.Millisecond)/time.Second))
	fetch := func(path, file string) {
		if err := fetchTo(cl, "http://"+pprofAddr+path, file); err != nil {
			p.mu.Lock()
			p.errs = append(p.errs, fmt.Sprintf("%s: %v", filepath.Base(file), err))
			p.mu.Unlock()
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		time.Sleep(300 * time.Millisecond)
		var wg sync.WaitGroup
		for _, k := range []struct{ path, ext string }{
			{fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), ".cpu.pprof"},
			{fmt.Sprintf("/debug/pprof/block?seconds=%d", secs), ".block.pprof"},
			{fmt.Sprintf("/debug/pprof/mutex?seconds=%d", secs), ".mutex.pprof"},
			{fmt.Sprintf("/debug/pprof/allocs?seconds=%d", secs), ".allocs.pprof"},
		} {
			wg.Add(1)
			go func() { defer wg.Done(); fetch(k.path, base+k.ext) }()
		}
		wg.Wait()
		fetch("/debug/pprof/trace?seconds=1", base+".trace")
	}()
	return p
}

// wait waits for the profiles and says which could not be taken.
func (p *profiler) wait() {
	p.wg.Wait()
	if len(p.errs) > 0 {
		fmt.Fprintf(os.Stderr, "   profile: %s\n", strings.Join(p.errs, "; "))
	}
}

func fetchTo(cl *http.Client, url, file string) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
