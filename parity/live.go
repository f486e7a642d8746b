package parity

// Live checker steps: keepalived's checkers against tunvs's on the same
// real servers. Unlike every other step, both sides run in the VM: Debian's
// keepalived 2.2.7 drives the kernel's IPVS from the director's namespace,
// and `tunvs run --keepalived-conf` runs on a TAP device on the same bridge
// as the real servers, its checkers leaving from its own stack. A real
// server is stopped or started, both react on their own timers, and once
// both listings have settled they are compared to each other.
//
//	server ADDR:PORT    an HTTP real server in its own namespace (answers
//	                    every request 200 with its ADDR:PORT); it listens
//	                    from the start
//	stdin ...           the keepalived.conf
//	live SECONDS        start keepalived and tunvs on it; after SECONDS,
//	                    and once neither -L -n changed for 3 s, compare
//	stop ADDR:PORT      close the server's listener (connections refused)
//	start ADDR:PORT     listen again
//	settle SECONDS      as live's wait, then compare again
//
// SECONDS must outlast the slowest checker's verdict (delay_loop, retries,
// delay_before_retry, connect_timeout): the settling only guards against
// reading in the middle of a change, it cannot know a change is due.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Live step kinds.
const (
	StepServer = "server"
	StepLive   = "live"
	StepStop   = "stop"
	StepStart  = "start"
	StepSettle = "settle"
)

// LiveSettleSeconds is how long both listings must stay unchanged before a live
// or settle step takes them.
const LiveSettleSeconds = 3

// LiveOnHost is a live step's outcome on the host side: there is nothing
// to run there, both listings come from the VM.
const LiveOnHost = "(compared in the VM)"

// parseLive parses the live step kinds; ok is false for any other word.
func parseLive(f []string, stdin *strings.Builder) (st Step, ok bool, err error) {
	switch f[0] {
	case StepServer, StepStop, StepStart:
		if len(f) != 2 {
			return st, true, fmt.Errorf("usage: %s ADDR:PORT", f[0])
		}
		ap, err := netip.ParseAddrPort(f[1])
		if err != nil {
			return st, true, err
		}
		return Step{Kind: f[0], Dst: ap}, true, nil
	case StepLive, StepSettle:
		if len(f) != 2 {
			return st, true, fmt.Errorf("usage: %s SECONDS", f[0])
		}
		if n, err := strconv.Atoi(f[1]); err != nil || n < 0 || n > 300 {
			return st, true, fmt.Errorf("%s: %q: want seconds, 0 to 300", f[0], f[1])
		}
		st := Step{Kind: f[0], Args: f[1:]}
		if f[0] == StepLive {
			if stdin.Len() == 0 {
				return st, true, fmt.Errorf("live: its keepalived.conf is the stdin lines before it, and there are none")
			}
			st.Stdin = stdin.String()
			stdin.Reset()
		}
		return st, true, nil
	}
	return st, false, nil
}

func liveString(s Step) (string, bool) {
	switch s.Kind {
	case StepServer, StepStop, StepStart:
		return s.Kind + " " + s.Dst.String(), true
	case StepLive, StepSettle:
		return s.Kind + " " + strings.Join(s.Args, " "), true
	}
	return "", false
}

// Wait is a live or settle step's least wait.
func (s Step) Wait() int {
	n, _ := strconv.Atoi(strings.Join(s.Args, ""))
	return n
}

// Live tells whether the scenario runs keepalived and tunvs side by side.
func (sc *Scenario) Live() bool {
	for _, st := range sc.Steps {
		if st.Kind == StepLive {
			return true
		}
	}
	return false
}

// IsServer tells whether ap is a server step's HTTP real server.
func (sc *Scenario) IsServer(ap netip.AddrPort) bool {
	for _, st := range sc.Steps {
		if st.Kind == StepServer && st.Dst == ap {
			return true
		}
	}
	return false
}

// LiveOutcome is the outcome of a live or settle step on one side: its
// listing, or why there is none (the daemon refused the file and exited).
func LiveOutcome(list string, err error) string {
	if err != nil {
		return "not running: " + err.Error()
	}
	return TrimListing(list)
}

// runLiveHost is the host side of a live step: it loads the configuration
// as tunvs run would, so that TestScenariosTunvs catches a scenario tunvs
// cannot read; whether it loads is compared in the VM.
func runLiveHost(st Step) (string, string) {
	if st.Kind != StepLive {
		return LiveOnHost, ""
	}
	kc, err := loadKeepalived(st.Stdin)
	if err != nil {
		return LiveOnHost, "tunvs refuses it: " + err.Error()
	}
	return LiveOnHost, fmt.Sprint(kc.Warnings)
}
