//go:build !linux

// Command cluster measures the scale-out lab's throughput; the lab needs
// Linux network namespaces.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "cluster: the scale-out lab needs Linux (network namespaces, TUN/TAP, BIRD)")
	os.Exit(1)
}
