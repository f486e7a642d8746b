//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// envRole makes the program a server inside a host instead.
const envRole = "TUNVS_COMPARE_ROLE"

// serveRole runs one of the programs the harness starts in its hosts: the
// real servers' HTTP server, or the UDP workload's sender and receiver
// (udpflood.go), or the flows workload's sender (flows.go).
func serveRole(role string, args []string) int {
	switch role {
	case "http":
		return serveHTTP()
	case "udp-send":
		return serveUDPSend(args)
	case "udp-recv":
		return serveUDPRecv(args)
	case "udp-flows":
		return serveUDPFlows(args)
	}
	fmt.Fprintf(os.Stderr, "compare: unknown role %q\n", role)
	return 2
}

// serveHTTP is the real servers' HTTP server (a small fixed page, like the
// lab's).
func serveHTTP() int {
	body := os.Getenv("TUNVS_COMPARE_NAME") + " Real Server\n"
	srv := &http.Server{
		Addr:              ":80",
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "compare: http:", err)
		return 1
	}
	return 0
}
