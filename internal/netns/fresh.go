//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Environment variables that carry the sandbox contract from the parent to
// the re-executed child.
const (
	// EnvSandbox is "1" in a process started by Sandbox.
	EnvSandbox = "TUNVS_NETNS_SANDBOX"
	// EnvOuterNetns holds the parent's network namespace identity, the
	// text of the /proc/self/ns/net link ("net:[4026531840]"). CheckFresh
	// compares against it.
	EnvOuterNetns = "TUNVS_NETNS_OUTER"
	// EnvLifeline names the file descriptor of a pipe whose write end only
	// the parent holds. When it reports end-of-file the parent is gone and
	// the sandbox exits, taking its namespaces with it. It is removed from
	// the environment once armed so that children never mistake an
	// unrelated descriptor for it.
	EnvLifeline = "TUNVS_NETNS_LIFELINE"
	// EnvRequire, set to "1", makes RunInSandbox fail instead of skip when
	// the sandbox cannot be created (for CI machines that must run them).
	EnvRequire = "TUNVS_NETNS_REQUIRE"
)

// selfNetns is the link CheckFresh reads. The thread group leader's view is
// the right one: Host.Do never moves the main thread into another
// namespace (see doLocked), so the leader always reflects the sandbox.
const selfNetns = "/proc/self/ns/net"

// freshness caches CheckFresh's first success. Failures are not cached:
// they are cheap to recompute and a cached failure would hide a fix made
// with os.Setenv in tests. This is the package's only mutable global.
var freshness struct {
	mu sync.Mutex
	ok bool
}

// Inside reports whether this process claims to be a sandbox child, going
// by EnvSandbox alone. It is a hint for choosing between the outer and the
// inner half of a program; only CheckFresh is a safety check.
func Inside() bool { return os.Getenv(EnvSandbox) == "1" }

// CheckFresh returns nil only if this process runs in a network namespace
// other than the one its sandbox parent started in: EnvSandbox must be "1",
// EnvOuterNetns must hold a namespace identity, /proc/self/ns/net must be
// readable, and the two identities must differ. Every function in this
// package that changes network state calls it and refuses to run on error.
//
// The first success is cached for the life of the process; it also arms the
// lifeline (see EnvLifeline), which makes the process exit when the parent
// that created the sandbox dies.
func CheckFresh() error {
	freshness.mu.Lock()
	defer freshness.mu.Unlock()
	if freshness.ok {
		return nil
	}
	outer, hasOuter := os.LookupEnv(EnvOuterNetns)
	cur, err := os.Readlink(selfNetns)
	if err := verifyFresh(os.Getenv(EnvSandbox), outer, hasOuter, cur, err); err != nil {
		return err
	}
	freshness.ok = true
	armLifeline()
	return nil
}

var netnsID = regexp.MustCompile(`^net:\[[0-9]+\]$`)

// verifyFresh is CheckFresh's decision without the reads, so that it can be
// tested without touching any namespace.
func verifyFresh(marker, outer string, hasOuter bool, cur string, readErr error) error {
	if readErr != nil {
		// An unreadable /proc (not mounted, hidepid, seccomp) proves
		// nothing, so it is a failure, not a pass.
		return fmt.Errorf("netns: cannot read %s to verify the network namespace: %w", selfNetns, readErr)
	}
	if marker != "1" {
		return fmt.Errorf("netns: not inside a sandbox (%s is not \"1\"); start the program with Sandbox or the test with RunInSandbox", EnvSandbox)
	}
	if !hasOuter || outer == "" {
		return fmt.Errorf("netns: %s is missing, so the namespace this program started in is unknown", EnvOuterNetns)
	}
	if !netnsID.MatchString(outer) {
		return fmt.Errorf("netns: %s=%q is not a network namespace identity like net:[4026531840]", EnvOuterNetns, outer)
	}
	if !netnsID.MatchString(cur) {
		return fmt.Errorf("netns: %s reads %q, not a network namespace identity", selfNetns, cur)
	}
	if cur == outer {
		return fmt.Errorf("netns: still in the outer network namespace %s; refusing to change network state", cur)
	}
	return nil
}

// readNetnsID returns this process's network namespace identity.
func readNetnsID() (string, error) {
	id, err := os.Readlink(selfNetns)
	if err != nil {
		return "", err
	}
	if !netnsID.MatchString(id) {
		return "", fmt.Errorf("%s reads %q, not a network namespace identity", selfNetns, id)
	}
	return id, nil
}

// armLifeline starts watching the pipe named by EnvLifeline, if any. It
// ignores anything that is not a pipe, so a stale variable cannot make a
// process exit because of an unrelated descriptor.
func armLifeline() {
	v, ok := os.LookupEnv(EnvLifeline)
	if !ok {
		return
	}
	os.Unsetenv(EnvLifeline)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	// Children (hosts, servers, the daemon) must not inherit it.
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "netns-lifeline")
	go func() {
		var b [64]byte
		for {
			if _, err := f.Read(b[:]); err != nil {
				break
			}
		}
		// We are PID 1 of the sandbox's PID namespace (or close to it):
		// exiting kills every host and server in it.
		fmt.Fprintln(os.Stderr, "netns: the process that created this sandbox is gone; exiting to tear the sandbox down")
		os.Exit(3)
	}()
}

var errClosed = errors.New("netns: topology is closed")
