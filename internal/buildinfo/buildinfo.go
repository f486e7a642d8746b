// Package buildinfo is what `tunvs --version` and `tunvsadm --version`
// print: the module version, VCS revision and Go toolchain the binary was
// built with, read from the build information the Go linker embeds
// (runtime/debug.ReadBuildInfo), so nothing needs setting at build time.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// String is "PROG VERSION (details) GO OS/ARCH" for the running binary.
func String(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Sprintf("%s (no build information) %s %s/%s", prog, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return format(prog, bi)
}

func format(prog string, bi *debug.BuildInfo) string {
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
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
