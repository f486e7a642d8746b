//go:build unix

package admin

import (
	"fmt"
	"os"
)

// tempSocketName is tunvs-UID.sock, with the uid as the system outside any
// user namespace sees it (socketUID), so that a daemon run inside
// `unshare --user --map-root-user` and a tunvsadm outside it, in another
// terminal, agree on the name.
func tempSocketName() string { return fmt.Sprintf("tunvs-%d.sock", socketUID()) }

// socketUID is this process's uid in the parent user namespace, read from
// /proc/self/uid_map ("inside outside count" ranges; the initial
// namespace maps 0 to 0 for 2^32-1 ids), or the uid itself where there is
// no such file.
func socketUID() int {
	uid := os.Getuid()
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return uid
	}
	return mapUID(string(b), uid)
}
