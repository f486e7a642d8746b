package admin

import (
	"io"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// Any rules text: parsing never panics, and whatever parses is applied as
// a whole or refused as a whole, never half.
func FuzzRules(f *testing.F) {
	for _, s := range []string{
		"-A -t 172.16.1.100:80 -s rr\n-a -t 172.16.1.100:80 -r 172.16.1.5 -m -w 1\n",
		"-A -u [fd00::1]:53 -s mh -b mh-port,mh-fallback -p 60 -M 64\n-a -u [fd00::1]:53 -r [fd00::5]:5353 -m -x 10 -y 5\n",
		"-A -t 10.0.0.1:0 -p\n-E -t 10.0.0.1:0 -s sh -o\n-D -t 10.0.0.1:0\n",
		"--set 1 2 3\n-C\n-Z\n# comment\n\n",
		"-Ln --stats --exact\n",
		"-a -t 1.2.3.4:80 -r 5.6.7.8 -w 99999\n",
		"-A -t 172.16.1.100:80 -s rr\n-a -t 172.16.1.100:80 -r 172.16.1.5 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n-a -t 172.16.1.100:80 -r 172.16.1.6 -i --tun-type gre\n-e -t 172.16.1.100:80 -r 172.16.1.6 -i -w 2 --tun-type ipip\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		tb := nat.New(nat.Config{MaxConns: 16})
		if _, err := Execute(tb, []string{"-A", "-t", "10.0.0.1:80", "-s", "rr"}, ""); err != nil {
			t.Fatal(err)
		}
		// The rules and every counter: a refused batch leaves both.
		state := func() string {
			var b strings.Builder
			List(&b, tb, FmtNumeric|FmtStats|FmtExact)
			return save(tb) + b.String()
		}
		before := state()
		cmds, lines, err := ParseRulesLines(strings.NewReader(text))
		if err != nil {
			return
		}
		if err := Apply(tb, cmds, lines, io.Discard); err != nil {
			if after := state(); after != before {
				t.Fatalf("a refused batch changed the table:\n%s\nwas:\n%s", after, before)
			}
		}
		// Whatever the state, every listing renders.
		for _, f := range []Format{FmtNumeric, FmtNumeric | FmtStats, FmtNumeric | FmtRule, FmtNumeric | FmtThresholds, FmtNumeric | FmtPersistentConn} {
			List(io.Discard, tb, f)
		}
		// And a single command line never panics either.
		Execute(tb, strings.Fields(text), text)
	})
}
