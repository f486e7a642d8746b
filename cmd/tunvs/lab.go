package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/lab"
	"github.com/tunvs/tunvs/sched"
)

func cmdLab(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("tunvs lab", pflag.ContinueOnError)
	s := fs.StringP("scheduler", "s", "rr", fmt.Sprintf("scheduler %v", sched.Names()))
	n := fs.IntP("requests", "n", 6, "HTTP requests the client sends")
	servers := fs.IntP("servers", "r", 2, "number of real servers")
	var lf logFlags
	lf.register(fs, "warn")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: tunvs lab [flags]\n\nThe LVS-NAT lab in one process: client, director and real servers as\nuserspace hosts on in-memory links. No privileges needed.\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *n < 0 || *n > 100000 {
		return usageError{fmt.Errorf("--requests %d: want 0 to 100000", *n)}
	}
	if _, err := sched.New(*s); err != nil {
		return usageError{err}
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	return lab.Run(ctx, lab.Config{Scheduler: *s, Servers: *servers, Log: log}, *n, os.Stdout)
}
