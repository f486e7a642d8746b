//go:build linux

package netns

import (
	"bytes"
	"context"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// RunInSandbox runs the calling test (or subtest) inside a sandbox and
// reports whether the caller is that inner run:
//
//	if !netns.RunInSandbox(t, netns.SandboxOptions{Unprivileged: true}) {
//		return
//	}
//	// from here on: inside a fresh user+network+mount+PID namespace
//
// Outside, it re-executes the test binary with -test.run anchored to exactly
// this test's name, waits, and turns the inner result into the outer one:
// an inner failure fails the test with the inner output, an inner skip
// skips it, a pass passes it (the inner output is logged). If the sandbox
// cannot be created the test is skipped with Probe's explanation, or fails
// if EnvRequire is "1". It then returns false.
//
// Inside, it checks CheckFresh (a failure is fatal) and returns true.
//
// Code of parent tests before the t.Run that reaches the caller also runs in
// the inner process, so keep it free of side effects. opts.Path and the
// output writers are ignored; opts.Args are appended to the test flags.
// Coverage and profiling flags are not passed on.
func RunInSandbox(t testing.TB, opts SandboxOptions) bool {
	t.Helper()
	if Inside() {
		if err := CheckFresh(); err != nil {
			t.Fatalf("netns: in a sandbox, but: %v", err)
		}
		return true
	}

	ctx := context.Background()
	pattern := runPattern(t.Name())
	if f := flag.Lookup("test.run"); f != nil {
		// Subtests the caller's -run names below this one (go test
		// -run 'TestSYNFlood/uid65534/max') select inside too.
		if deeper := subLevels(f.Value.String(), strings.Count(t.Name(), "/")+1); len(deeper) > 0 {
			pattern += "/" + strings.Join(deeper, "/")
		}
	}
	args := []string{"-test.run=" + pattern, "-test.v=true"}
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			// Let the inner binary time out (and print its goroutines)
			// before the outer one does.
			left := time.Until(deadline)
			inner := left - left/10
			args = append(args, "-test.timeout="+inner.String())
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, deadline.Add(-left/20))
			defer cancel()
		}
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}

	if err := Probe(ctx, opts); err != nil {
		Unavailable(t, "%v", err)
	}

	var out bytes.Buffer // one writer for both, so one copying goroutine
	opts.Path = ""
	opts.Args = append(args, opts.Args...)
	opts.Stdout, opts.Stderr = &out, &out
	sb, err := Sandbox(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	runErr := sb.Run()
	verdict := innerVerdict(out.String(), t.Name())
	switch {
	case runErr != nil:
		t.Fatalf("netns: the sandboxed run of %s failed: %v\n%s", t.Name(), runErr, out.String())
	case verdict == "SKIP":
		t.Skipf("netns: skipped inside the sandbox:\n%s", out.String())
	case verdict == "PASS":
		t.Logf("sandboxed run (%s):\n%s", strings.Join(sb.Cmd.Args, " "), out.String())
	default:
		// Exit status 0 without a verdict: -test.run matched nothing.
		t.Fatalf("netns: the sandboxed run did not report on %s (pattern %q):\n%s", t.Name(), runPattern(t.Name()), out.String())
	}
	return false
}

// Unavailable skips t because something it needs (a sandbox, a tool, a TUN
// device it may open) is missing, or fails it if EnvRequire is "1": on a
// machine that must run the namespace tests, a missing part is a failure,
// not a green skip.
// InSandboxes runs fn in a fresh sandbox twice, as subtests: one created
// by root ("root") and one by uid 65534 ("uid65534", the unprivileged
// case tunvs is made for). Code of the caller before it also runs in both
// inner processes (see RunInSandbox).
func InSandboxes(t *testing.T, fn func(t *testing.T)) {
	for _, mode := range []struct {
		name  string
		unpri bool
	}{{"root", false}, {"uid65534", true}} {
		t.Run(mode.name, func(t *testing.T) {
			if !RunInSandbox(t, SandboxOptions{Unprivileged: mode.unpri}) {
				return
			}
			fn(t)
		})
	}
}

func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf(format+" (%s=1: failing instead of skipping)", append(args, EnvRequire)...)
	}
	t.Skipf(format, args...)
}

// runPattern turns a test name like "TestX/sub_name#01" into the -test.run
// pattern that matches it and nothing else: each level anchored and quoted.
// go test splits patterns and names at unescaped slashes, level by level.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// subLevels is what -run pattern selects below its first depth levels,
// split at slashes as go test splits it (testing's splitRegexp: not
// inside brackets or parentheses, nor escaped). A pattern with an
// alternation outside them ("A|B/c") gives none: its levels do not
// line up with one test's.
func subLevels(pattern string, depth int) []string {
	var levels []string
	brackets, parens, start := 0, 0, 0
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case '[':
			brackets++
		case ']':
			brackets = max(brackets-1, 0)
		case '(':
			if brackets == 0 {
				parens++
			}
		case ')':
			if brackets == 0 {
				parens--
			}
		case '\\':
			i++
		case '|':
			if brackets == 0 && parens == 0 {
				return nil
			}
		case '/':
			if brackets == 0 && parens == 0 {
				levels = append(levels, pattern[start:i])
				start = i + 1
			}
		}
	}
	levels = append(levels, pattern[start:])
	if len(levels) <= depth {
		return nil
	}
	return levels[depth:]
}

// innerVerdict finds "--- PASS: name (" and friends in -test.v output.
func innerVerdict(out, name string) string {
	re := regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): ` + regexp.QuoteMeta(name) + ` \(`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// NewTopology starts a Topology for test t, closed when t ends. With tun
// set it first checks that the hosts can open TUN devices (CheckTUN); a
// failure of either step is fatal, since a test that reached here was
// meant to run.
func NewTopology(t testing.TB, tun bool) *Topology {
	t.Helper()
	if tun {
		if err := CheckTUN(); err != nil {
			t.Fatalf("netns: the test needs TUN devices: %v", err)
		}
	}
	topo, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	return topo
}
