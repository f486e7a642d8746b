package admin

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// DPVS's -j/--synproxy enable|disable: set by -A, changed by -E (which,
// as for -p and -o, sets what it is given), listed as DPVS lists it and
// saved by -S; refused for UDP and for anything but enable or disable.
func TestSynProxyOption(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.1.1.1:80 -s rr -j enable", "-A -t 10.1.1.2:80 --synproxy=enable")
	var out bytes.Buffer
	List(&out, tb, FmtNumeric)
	if !strings.Contains(out.String(), "TCP  10.1.1.1:80 rr synproxy\n") || !strings.Contains(out.String(), "TCP  10.1.1.2:80 wlc synproxy\n") {
		t.Fatalf("listing:\n%s", out.String())
	}
	out.Reset()
	List(&out, tb, FmtNumeric|FmtRule)
	if !strings.Contains(out.String(), "-A -t 10.1.1.1:80 -s rr -j enable\n") {
		t.Fatalf("-S:\n%s", out.String())
	}
	mustApply(t, tb, "-E -t 10.1.1.1:80 -s rr -j disable", "-E -t 10.1.1.2:80 -s wlc")
	out.Reset()
	List(&out, tb, FmtNumeric)
	if strings.Contains(out.String(), "synproxy") {
		t.Fatalf("after -E:\n%s", out.String())
	}
	for _, bad := range []string{"-A -u 10.1.1.3:53 -j enable", "-A -t 10.1.1.4:80 -j on", "-a -t 10.1.1.1:80 -r 10.2.2.2 -j enable"} {
		cmds, err := ParseRules(strings.NewReader(bad))
		if err == nil {
			err = Apply(tb, cmds, nil, nil)
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// tunvsadm -A -u ... -j enable names the reason (the SYN proxy is TCP's)
// and is a command-line refusal (exit 2), not the table's "Invalid
// operation" with status 255.
func TestSynProxyUDPRefusal(t *testing.T) {
	_, err := Parse(strings.Fields("-A -u 10.1.1.3:53 -j enable"))
	if err == nil || !strings.Contains(err.Error(), "the SYN proxy (-j) is for TCP services") || ExitCode(err) != 2 {
		t.Fatalf("-A -u -j enable: %v (exit %d)", err, ExitCode(err))
	}
}
