package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
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
