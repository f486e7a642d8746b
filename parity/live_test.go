package parity

import (
	"fmt"
	"strings"
)

// diffLive compares a live or settle step's two listings, both taken in
// the VM. Two daemons that both refused the file agree.
func diffLive(k Event) (string, bool) {
	switch w, _, _ := strings.Cut(k.Step, " "); w {
	case StepServer, StepStop, StepStart:
		if k.Outcome != "ok" {
			return fmt.Sprintf("line %d: %s: %s", k.Line, k.Step, k.Outcome), true
		}
		return "", true
	case StepLive, StepSettle:
	default:
		return "", false
	}
	kr, ur := strings.HasPrefix(k.Outcome, "not running: "), strings.HasPrefix(k.Tunvs, "not running: ")
	if (kr && ur) || (!kr && !ur && k.Outcome == k.Tunvs && !strings.HasPrefix(k.Outcome, "error: ")) {
		return "", true
	}
	d := fmt.Sprintf("line %d: %s: the listings differ:\n--- keepalived, ipvsadm -L -n (kernel)\n%s\n+++ tunvs --keepalived-conf, tunvsadm -L -n\n%s", k.Line, k.Step, indent(k.Outcome), indent(k.Tunvs))
	if k.Detail != "" {
		d += "\n(logs:\n" + indent(k.Detail) + ")"
	}
	return d, true
}
