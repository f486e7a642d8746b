package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strings"
	"time"
)

// The sampling of --pprof's block and mutex profiles: every blocking
// event of 10 µs or more is recorded (shorter ones in proportion), and one
// mutex contention event in 10. Both cost time on every channel operation
// and lock, which is why they are on only with --pprof.
const (
	pprofBlockRate     = 10_000 // ns
	pprofMutexFraction = 10
)

// noHeapProfile turns off the heap profile that the Go runtime keeps by
// default, when nothing can read it (no --pprof): the runtime then no
// longer walks the stack of one allocation in every 512 KiB, nor keeps a
// record per allocation site in a hash table of 1.4 MB whose pages it
// touches one by one (issue 11: the director's RSS). GODEBUG's
// memprofilerate, when given, still decides.
func noHeapProfile() {
	if !strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		runtime.MemProfileRate = 0
	}
}

// servePprof serves the Go runtime's profiles (net/http/pprof: CPU, heap,
// block, mutex, goroutines, the execution trace) on addr, for looking at
// the director while it works; it turns the block and mutex profiles on.
// The listener lives as long as the process.
func servePprof(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	runtime.SetBlockProfileRate(pprofBlockRate)
	runtime.SetMutexProfileFraction(pprofMutexFraction)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return ln.Addr(), nil
}
