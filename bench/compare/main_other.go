//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The comparison builds its topology out of Linux network namespaces and
// measures the Linux kernel's own NAT beside tunvs.
func main() {
	fmt.Fprintln(os.Stderr, "bench/compare: network namespaces need Linux; it measures tunvs against the Linux kernel's NAT")
	os.Exit(2)
}
