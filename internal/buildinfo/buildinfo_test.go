package buildinfo

import (
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
	if got, want := format("tunvs", bi), "tunvs v0.3.0 (commit 96314de01234, 2026-12-06T21:50:00Z, modified) go1.26.8 darwin/arm64"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	bi.Settings, bi.Main.Version = nil, ""
	if got := format("tunvsadm", bi); !strings.HasPrefix(got, "tunvsadm (devel) go1.26.8 ") {
		t.Errorf("no VCS information: %q", got)
	}
}
