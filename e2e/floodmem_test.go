//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunvs/tunvs/internal/procfs"
)

// daemonMem is the director's memory at one point of a test: its RSS
// split into anonymous pages (heap, stacks, the runtime's metadata) and
// file pages (the binary's, which grow as code runs for the first time),
// from /proc/PID/status, and from its metrics the Go heap in use, what
// the runtime holds from the OS, its goroutines and GC cycles. RSS alone
// does not say which of them a flood left behind.
type daemonMem struct {
	rssKB, anonKB, fileKB             int
	heapInuse, sys, goroutines, gcRun uint64
}

// memOf reads the memory of the env's daemon, pid: its status first (one
// read, so that its RSS and the parts are of one moment), then its
// metrics (serving a scrape takes memory of its own).
func (e *env) memOf(t *testing.T, pid int) daemonMem {
	t.Helper()
	st, _ := procfs.StatusKB(pid) // nil if unread: every field -1
	m := daemonMem{rssKB: kbOf(st, "VmRSS"), anonKB: kbOf(st, "RssAnon"), fileKB: kbOf(st, "RssFile")}
	scrape := e.metrics()
	m.heapInuse = metric(t, scrape, "go_memstats_heap_inuse_bytes")
	m.sys = metric(t, scrape, "go_memstats_sys_bytes")
	m.goroutines = metric(t, scrape, "go_goroutines")
	m.gcRun = metric(t, scrape, "go_gc_cycles_total")
	return m
}

func (m daemonMem) String() string {
	return fmt.Sprintf("anon_kb=%d file_kb=%d heap_inuse_kb=%d go_sys_kb=%d goroutines=%d gc_cycles=%d",
		m.anonKB, m.fileKB, m.heapInuse>>10, m.sys>>10, m.goroutines, m.gcRun)
}

// statusKB is a kB line of /proc/PID/status (field "VmRSS", ...), -1 if
// absent.
func statusKB(pid int, field string) int {
	st, _ := procfs.StatusKB(pid)
	return kbOf(st, field)
}

// kbOf is field of a status procfs.StatusKB read, -1 if absent.
func kbOf(st map[string]int64, field string) int {
	if n, ok := st[field]; ok {
		return int(n)
	}
	return -1
}

// warmFor is how long the flood test's warm reference runs the
// legitimate traffic: as long as the flood, which makes the director's
// first GC cycles at the rate two clients make connections here.
const warmFor = 10 * time.Second

// warmReference is the flood test's second baseline, beside the one the
// flood's director gives before the flood (a director that has served
// one request and never collected). A director of its own, started as
// the flood's is (o), serves the flood's legitimate traffic alone (new
// connections two at a time and a keep-alive connection, for warmFor),
// then waits as the flood's does after it (the table drained, then a
// memory check) and its RSS and memory are read. A director's first
// collections leave memory it keeps for good whatever its traffic (the
// runtime's span sets, GC bitmaps, code run once), which the first
// baseline's difference includes; the flood's director's RSS after the
// drain, against this one, is what the flood itself left. It runs before
// the flood's director starts, in a subtest whose cleanup removes it, so
// the flood's figures are taken as they were without it.
func warmReference(t *testing.T, o opts) (rssKB int) {
	t.Helper()
	t.Run("warm_reference", func(t *testing.T) {
		e := setup(t, o)
		pid := e.daemon.Process.Pid
		dial := e.httpClient().Transport.(*http.Transport).DialContext
		ctx, cancel := context.WithTimeout(context.Background(), warmFor)
		defer cancel()
		var wg sync.WaitGroup
		k := newKeepAlive(t, dial, "http://172.16.1.100/")
		k.run(ctx, &wg)
		var ok, fail atomic.Int64
		nc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
		for range 2 {
			until(ctx, &wg, 0, &ok, &fail, func() bool { return fetched(nc, "http://172.16.1.100/") })
		}
		wg.Wait()
		k.c.CloseIdleConnections()
		if ok.Load() == 0 {
			t.Fatalf("no new connection of %d succeeded", fail.Load())
		}
		_, drained := e.drainForMemory()
		mem := e.memOf(t, pid)
		rssKB = mem.rssKB
		t.Logf("FIGURES warm reference: %d new connections (%d failed) and %d keep-alive requests in %v, drained in %v: rss_kb=%d %v",
			ok.Load(), fail.Load(), k.ok.Load(), warmFor, drained, rssKB, mem)
	})
	return rssKB
}

// drainForMemory waits until the director's table holds at most 20
// entries (2 minutes at most), then for its memory check, which runs
// every 5 s, to have run. It returns the table's size then and how long
// the drain took.
func (e *env) drainForMemory() (after int, drained time.Duration) {
	start := time.Now()
	after = e.conns()
	for after > 20 && time.Since(start) < 2*time.Minute {
		time.Sleep(time.Second)
		after = e.conns()
	}
	drained = time.Since(start).Round(time.Second)
	time.Sleep(6 * time.Second) // the director's memory check runs every 5 s
	return after, drained
}

// pctOver is how much larger a is than b, in percent of b.
func pctOver(a, b int) float64 { return 100 * float64(a-b) / float64(max(b, 1)) }
