// Command tunvs-bgp is the BGP speaker of `tunvs run --bgp`: GoBGP in a
// process of its own, so that tunvs does not link it (issue 11: GoBGP's
// package initialisation cost every director 7.8 MB of RSS). The director
// starts it, writes its configuration and commands on its stdin and
// reads its reports on its stdout (package bgp, bgp/speaker); it is not
// meant to be run by hand.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tunvs/tunvs/bgp/speaker"
)

func main() {
	// Stdout carries the reports: nothing else may write there.
	out := os.Stdout
	os.Stdout = os.Stderr
	// ^C at a terminal and systemd's stop signal the director's whole
	// process group; the director withdraws the VIPs through this
	// process and then closes it, so it must outlive the signal. It ends
	// anyway when its stdin does (the director died).
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	if err := speaker.Run(os.Stdin, out); err != nil {
		fmt.Fprintln(os.Stderr, "tunvs-bgp:", err)
		os.Exit(1)
	}
}
