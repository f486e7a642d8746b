package buildinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/tunvs/tunvs", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "GOOS", Value: "darwin"}, {Key: "GOARCH", Value: "arm64"},
			{Key: "vcs.revision", Value: "96314de0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-12-06T21:50:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	if got, want := format("tunvs", bi, "ignored"), "tunvs v0.3.0 (commit 96314de01234, 2026-12-06T21:50:00Z, modified) go1.26.8 darwin/arm64"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	bi.Settings, bi.Main.Version = nil, "(devel)"
	if got, want := format("tunvsadm", bi, ""), "tunvsadm (devel) (no VCS information: build with make build, or go build -buildvcs=true in a git checkout) go1.26.8 "; !strings.HasPrefix(got, want) {
		t.Errorf("no VCS information: %q, want prefix %q", got, want)
	}
	// What the Makefile stamps stands in for "(devel)", and only for it.
	if got, want := format("tunvsadm", bi, "96314de01234-dirty"), "tunvsadm 96314de01234-dirty go1.26.8 "; !strings.HasPrefix(got, want) {
		t.Errorf("stamped: %q, want prefix %q", got, want)
	}
}

// TestStampedBinary builds tunvsadm as the Makefile does, without VCS
// information (-buildvcs=false, as GOFLAGS sets here and a tarball build
// has), and runs --version: the stamp must reach the output through the
// linker's -X, which silently does nothing when the variable's path is
// wrong.
func TestStampedBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "tunvsadm")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(goBin, "build", "-buildvcs=false", "-o", bin,
		"-ldflags", "-X github.com/tunvs/tunvs/internal/buildinfo.Stamp=v9.9.9-stamp", "../../cmd/tunvsadm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "tunvsadm v9.9.9-stamp "+runtime.Version()) {
		t.Errorf("--version = %q", out)
	}
	// make build stamps the same variable.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "-X github.com/tunvs/tunvs/internal/buildinfo.Stamp=") {
		t.Error("the Makefile does not stamp buildinfo.Stamp")
	}
}
