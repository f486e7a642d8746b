package admin

import (
	"strings"
	"testing"
)

// TestUsageNamesEveryOption: tunvsadm -h names every option the parser
// takes, by its long or its short form (the commands by their letters, as
// in ipvsadm's usage lines), and says nothing stale of what tunvs has (the
// help once said the sync daemon was not supported after it was built).
func TestUsageNamesEveryOption(t *testing.T) {
	help := Usage + ClientUsage
	for _, o := range poptTable {
		if o.long == "ipv6" || o.long == "sctp-service" {
			// Refused: -6 is for fwmark services, which tunvs lacks, as
			// it lacks SCTP ("Not supported" names them in words, so
			// that completion does not offer them).
			continue
		}
		if !strings.Contains(help, "--"+o.long) && (o.short == 0 || !strings.Contains(help, "-"+string(o.short)) && !strings.Contains(help, "|"+string(o.short)+" ")) {
			t.Errorf("tunvsadm -h does not mention --%s", o.long)
		}
	}
	for _, stale := range []string{"no sync daemon", "the sync daemon."} {
		if strings.Contains(help, stale) {
			t.Errorf("tunvsadm -h says %q", stale)
		}
	}
}
