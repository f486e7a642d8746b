package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/lab"
)

// clusterFlags checks what --directors can be combined with, and makes mh
// the scheduler unless -s says otherwise: the directors must agree on a
// flow's real server without talking to each other.
func clusterFlags(fs *pflag.FlagSet, cfg *lab.NetnsConfig) error {
	if cfg.Directors < 1 || cfg.Directors > lab.MaxDirectors {
		return usageError{fmt.Errorf("--directors %d: want 1 to %d", cfg.Directors, lab.MaxDirectors)}
	}
	if cfg.Attach != "tap" || cfg.FullNAT {
		return usageError{fmt.Errorf("--attach tun and --fwd fullnat are not for --directors: the scale-out lab's directors are on TAP devices with direct routing")}
	}
	for _, f := range []string{"walk", "walk-auto"} {
		if fs.Changed(f) {
			return usageError{fmt.Errorf("--%s is not for --directors (the walk follows the one-director lab)", f)}
		}
	}
	if !fs.Changed("scheduler") {
		cfg.Scheduler = "mh"
	}
	return nil
}
