package health

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// List prints a Snapshot for people, as `tunvsadm -L --health` could:
//
//	Prot LocalAddress:Port       OnFail  Quorum    State
//	  -> RemoteAddress:Port      Check   State  CfgWt   Run   Checks  Fails  Downs  Since  Last error
//	TCP  172.16.1.100:80         inhibit 1/2       up
//	  -> 172.16.1.5:80           http    DOWN   1       0R    120     7      1      12s    http status 500
//
// CfgWt is the weight the server has, or gets back on recovery; Run is the
// failures in a row of a server that is up (F) or the successes in a row
// of one that is down (R).
func List(w io.Writer, snap []ServiceStatus, now time.Time) {
	fmt.Fprintf(w, "Prot LocalAddress:Port       OnFail  Quorum    State\n")
	fmt.Fprintf(w, "  -> RemoteAddress:Port      Check   State  CfgWt   Run   Checks  Fails  Downs  Since  Last error\n")
	for _, s := range snap {
		proto, addr, _ := strings.Cut(s.Service, " ")
		state := "up"
		if !s.QuorumUp {
			state = "DOWN (below quorum)"
		}
		if s.SorryActive {
			state += ", sorry server in"
		}
		fmt.Fprintf(w, "%-4s %-22s  %-7s %-9s %s\n", proto, addr, s.OnFail, fmt.Sprintf("%d/%d", s.LiveWeight, s.Quorum), state)
		for _, r := range s.Servers {
			st, run := "up", fmt.Sprintf("%dF", r.FailRun)
			if !r.Up {
				st, run = "DOWN", fmt.Sprintf("%dR", r.OKRun)
			}
			since := "-"
			if !r.LastChange.IsZero() {
				since = now.Sub(r.LastChange).Round(time.Second).String()
			}
			fmt.Fprintf(w, "  -> %-22s  %-7s %-6s %-7d %-5s %-7d %-6d %-6d %-6s %s\n",
				r.Server, r.Check, st, r.Weight, run, r.Checks, r.Failures, r.Downs, since, r.LastError)
		}
	}
}
