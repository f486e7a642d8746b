// Package buildinfo is what `tunvs --version` and `tunvsadm --version`
// print: the module version, VCS revision and Go toolchain the binary was
// built with, read from the build information the Go linker embeds
// (runtime/debug.ReadBuildInfo). `go install module@version` and a build
// in a git checkout fill it in by themselves; a build without VCS
// information (-buildvcs=false, a source tarball) has only "(devel)", so
// the Makefile stamps `git describe` into Stamp with -ldflags -X.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Stamp is the version the build stamped in, if any: the Makefile sets it
// to `git describe --tags --always --dirty` with
// -ldflags "-X github.com/tunvs/tunvs/internal/buildinfo.Stamp=...".
var Stamp string

// devel is the module version the go command records for a main module
// built from a directory without VCS information.
const devel = "(devel)"

// String is "PROG VERSION (details) GO OS/ARCH" for the running binary.
func String(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{GoVersion: runtime.Version()}
	}
	return format(prog, bi, Stamp)
}

func format(prog string, bi *debug.BuildInfo, stamp string) string {
	version := bi.Main.Version
	if version == "" || version == devel {
		version = devel
		if stamp != "" {
			version = stamp
		}
	}
	var details []string
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	if rev := set["vcs.revision"]; rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		details = append(details, "commit "+rev)
	}
	if t := set["vcs.time"]; t != "" {
		details = append(details, t)
	}
	if set["vcs.modified"] == "true" {
		details = append(details, "modified")
	}
	if version == devel && set["vcs.revision"] == "" {
		// Nothing tells which source this is: say how to get a binary
		// that knows, rather than print a bare "(devel)".
		details = append(details, "no VCS information: build with make build, or go build -buildvcs=true in a git checkout")
	}
	s := prog + " " + version
	if len(details) > 0 {
		s += " (" + strings.Join(details, ", ") + ")"
	}
	goos, goarch := set["GOOS"], set["GOARCH"]
	if goos == "" {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}
	return fmt.Sprintf("%s %s %s/%s", s, bi.GoVersion, goos, goarch)
}
