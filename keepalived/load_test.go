package keepalived

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/admin"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// render is what a configuration gives: tunvsadm -S -n of a table made
// from it, each check, and the warnings.
func render(t *testing.T, c Config) string {
	t.Helper()
	tb := nat.New(nat.Config{})
	if err := tb.Apply(rules.Rules{}.Diff(c.Rules)); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	admin.List(&b, tb, admin.FmtRule|admin.FmtNumeric)
	for _, s := range c.Rules.Checks.Services {
		fmt.Fprintf(&b, "check %d %v on-fail=%v sorry=%v quorum=%d hysteresis=%d\n", s.Proto, s.VIP, s.OnFail, s.Sorry, s.Quorum, s.Hysteresis)
		for _, d := range s.Servers {
			c := d.Check
			fmt.Fprintf(&b, "  %v %s port=%d interval=%v timeout=%v fall=%d rise=%d start-down=%v", d.Addr, c.Kind, c.Port, c.Interval, c.Timeout, c.Fall, c.Rise, c.StartDown)
			if c.Path != "" || c.Digest != nil || c.Status != nil || c.VHost != "" {
				fmt.Fprintf(&b, " path=%s digest=%s:%x status=%v vhost=%s", c.Path, c.DigestAlg, c.Digest, c.Status, c.VHost)
			}
			if c.Command != "" {
				fmt.Fprintf(&b, " cmd=%q dynamic=%v", c.Command, c.Dynamic)
			}
			if c.Payload != nil || c.Expect != nil {
				fmt.Fprintf(&b, " payload=%x expect=%x", c.Payload, c.Expect)
			}
			b.WriteString("\n")
		}
	}
	for _, v := range c.VRRP {
		r := v.Router
		fmt.Fprintf(&b, "vrrp %s link=%s vrid=%d priority=%d interval=%v preempt=%v delay=%v start-master=%v vips=%v", r.Name, r.Link, r.VRID, r.Priority, r.Interval, r.Preempt, r.PreemptDelay, r.StartMaster, r.VIPs)
		if v.Sync != nil {
			fmt.Fprintf(&b, " sync=%+v", *v.Sync)
		}
		b.WriteString("\n")
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	return b.String()
}

// keepalived's own samples (doc/samples of github.com/acassen/keepalived,
// commit 9cbce3e2117f), loaded; what each gives is in its .golden file,
// checked by hand once (go test -update rewrites them).
func TestSamples(t *testing.T) {
	files, _ := filepath.Glob("testdata/keepalived.conf.*")
	for _, f := range files {
		if strings.HasSuffix(f, ".golden") {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f, Options{ConfigID: "high"})
			got := ""
			if err != nil {
				got = "error: " + err.Error() + "\n"
			} else {
				got = render(t, c)
			}
			golden := f + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// tunvs's own file: include, conditional lines with two config ids,
// parameters, groups with ranges, and the keywords the samples lack.
func TestOwnConfig(t *testing.T) {
	for _, id := range []string{"lb1", "lb2"} {
		t.Run(id, func(t *testing.T) {
			c, err := Load("testdata/own/main.conf", Options{ConfigID: id})
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, c)
			golden := "testdata/own/main.conf." + id + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// What tunvs cannot do safely is refused, naming the file and line (an
// included file's own), and nothing is loaded.
func TestRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	vs := "virtual_server 10.0.0.1 80 {\n"
	for _, c := range []struct{ text, want string }{
		{vs + "real_server 10.0.0.300 80 {\n}\n}\n", "main.conf:2: keepalived.conf: real_server: bad address"},
		{vs + "real_server fd00::2 80 {\n}\n}\n", "main.conf:2: keepalived.conf: real_server [fd00::2]:80: invalid argument: real server fd00::2 is not of the service's address family"},
		{vs + "lb_algo nosuch\n}\n", "main.conf:2: keepalived.conf: lb_algo nosuch: unknown scheduler"},
		{vs + "protocol SCTP\n}\n", "main.conf:2: keepalived.conf: protocol SCTP"},
		{vs + "real_server 10.0.0.2 80 {\nweight 70000\n}\n}\n", "main.conf:3: keepalived.conf: weight: \"70000\" is not a number from 0 to 65535"},
		{vs + "real_server 10.0.0.2 80 {\nHTTP_GET {\nurl {\ndigest xyz\n}\n}\n}\n}\n", "main.conf:5: keepalived.conf: digest \"xyz\""},
		{vs + "real_server 10.0.0.2 80 {\nMISC_CHECK {\n}\n}\n}\n", "main.conf:3: keepalived.conf: MISC_CHECK without misc_path"},
		{vs + "delay_loop soon\n}\n", "main.conf:2: keepalived.conf: delay_loop: \"soon\" is not a number of seconds"},
		{vs + "real_server 10.0.0.2 80 {\n}\nreal_server 10.0.0.2 80 {\n}\n}\n", "main.conf:4: keepalived.conf: real_server 10.0.0.2:80 configured twice"},
		{vs + "}\n" + vs + "}\n", "main.conf:3: keepalived.conf: virtual_server 10.0.0.1 80 configured twice (first at "},
		{"virtual_server group NOPE {\n}\n", "main.conf:1: keepalived.conf: virtual_server group NOPE: no such virtual_server_group"},
		{vs, "main.conf:1: keepalived.conf: '{' is never closed"},
		{"}\n", "main.conf:1: keepalived.conf: '}' without '{'"},
		{"include inc.conf\n", "inc.conf:2: keepalived.conf: virtual_server: bad address \"10.0.0\""},
		{"include main.conf\n", "include nested more than 16 deep"},
	} {
		write("inc.conf", "# included\nvirtual_server 10.0.0 80 {\n}\n")
		p := write("main.conf", c.text)
		_, err := Load(p, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrConfig) {
			t.Errorf("%q: got %v, want %q", c.text, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "none.conf"), Options{}); err == nil || !errors.Is(err, ErrConfig) {
		t.Errorf("missing file: %v", err)
	}
}

// The file's text is taken as keepalived takes it: '#' and '!' start a
// comment outside quotes, a quoted word keeps its spaces, a brace alone on
// the next line opens the block, undefined parameters stay as they are.
func TestReading(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.conf")
	os.WriteFile(p, []byte(`$PORT=80
virtual_server 10.0.0.1 $PORT
{
	protocol TCP
	lb_kind NAT
	real_server 10.0.0.2 ${PORT} { ! comment
		MISC_CHECK {
			misc_path "/bin/echo a#b !c $UNDEF"   # comment
		}
	}
}
`), 0o644)
	c, err := Load(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Rules.Services) != 1 || c.Rules.Services[0].Port != 80 || len(c.Rules.Services[0].Servers) != 1 {
		t.Fatalf("%+v", c.Rules.Services)
	}
	if cmd := c.Rules.Checks.Services[0].Servers[0].Check.Command; cmd != "/bin/echo a#b !c $UNDEF" {
		t.Errorf("misc_path %q", cmd)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %v", c.Warnings)
	}
}

// A MISC_CHECK whose script cannot be found or run is disabled with a
// warning, the server left in the pool, as keepalived disables it when it
// reads the file; a script found through PATH is kept.
func TestMiscScriptMissing(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.conf")
	os.WriteFile(p, []byte(`virtual_server 10.0.0.1 80 {
	protocol TCP
	lvs_method NAT
	real_server 10.0.0.2 80 {
		MISC_CHECK {
			misc_path "`+filepath.Join(dir, "missing.sh")+` arg"
		}
	}
	real_server 10.0.0.3 80 {
		MISC_CHECK {
			misc_path "sh -c true"
		}
	}
}
`), 0o644)
	c, err := Load(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := c.Rules.Checks.Services[0].Servers
	if len(srv) != 1 || srv[0].Check.Command != "sh -c true" {
		t.Errorf("checks %+v, want the one of 10.0.0.3", srv)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].String(), "k.conf:5: MISC_CHECK disabled") || !strings.Contains(c.Warnings[0].String(), "missing.sh") {
		t.Errorf("warnings %v", c.Warnings)
	}
}
