// Command tunvs is the userspace IPVS-NAT director: `tunvs run` serves on a
// TUN or TAP device, `tunvs lab` runs the classic LVS-NAT lab in-process
// with no privileges.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/tunvs/tunvs/internal/buildinfo"
)

const usage = `tunvs: a userspace IPVS-style NAT director

Usage:
  tunvs lab [flags]     the LVS-NAT lab in one process, no privileges needed
  tunvs run [flags]     the director on TUN/TAP devices
  tunvs help            this text
  tunvs --version       the version, commit and Go toolchain it was built from

Run "tunvs lab -h" or "tunvs run -h" for the flags.
`

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "lab":
		err = cmdLab(ctx, args[1:])
	case "run":
		err = cmdRun(ctx, args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	case "--version", "version":
		fmt.Println(buildinfo.String("tunvs"))
		return 0
	case "gen-docs":
		err = cmdGenDocs(ctx, args[1:])
	default:
		fmt.Fprintf(os.Stderr, "tunvs: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "tunvs %s: %v\n", args[0], err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks a bad command line (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// logFlags are the logging flags every command has.
type logFlags struct {
	level string
	json  bool
}

func (l *logFlags) register(fs *pflag.FlagSet, def string) {
	fs.StringVar(&l.level, "log-level", def, "log level: debug, info, warn, error, disabled")
	fs.BoolVar(&l.json, "log-json", false, "log JSON lines instead of human-readable text")
}

func (l *logFlags) logger() (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(l.level)
	if err != nil {
		return zerolog.Nop(), usageError{fmt.Errorf("--log-level: %w", err)}
	}
	// Milliseconds in the timestamp field itself: zerolog's default
	// (RFC 3339 in seconds) left the console's ".000" always zero.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
	var log zerolog.Logger
	if l.json {
		log = zerolog.New(os.Stderr)
	} else {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000", NoColor: !isTerminal(os.Stderr)})
	}
	return log.Level(lvl).With().Timestamp().Logger(), nil
}

// isTerminal reports whether f is a character device (a terminal): colour
// codes are for people, not for log files and pipes.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
