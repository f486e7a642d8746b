//go:build linux

package netns

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// TUNPath is the TUN clone device.
const TUNPath = "/dev/net/tun"

// CheckTUN reports whether this process may open /dev/net/tun, without
// creating any device. Opening it is an ordinary permission check against
// the real user behind the sandbox (root of a user namespace gets no
// override on a file owned by an unmapped uid), so a sandbox created by uid
// 65534 needs the device to be mode 0666. This package never changes the
// mode; tests call CheckTUN and skip with its error, which says exactly
// that.
func CheckTUN() error {
	fd, err := unix.Open(TUNPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	outer, inUserns := outerUID()
	mode := "mode unknown"
	var st unix.Stat_t
	if unix.Stat(TUNPath, &st) == nil {
		owner := fmt.Sprintf("owner uid %d", st.Uid)
		if inUserns && st.Uid == overflowUID {
			// Unmapped owners show up as the overflow uid.
			owner = "owner not mapped into this user namespace"
		}
		mode = fmt.Sprintf("mode %04o, %s", st.Mode&0o7777, owner)
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	if inUserns {
		who = fmt.Sprintf("uid %d (uid %s outside the user namespace)", os.Geteuid(), outer)
	}
	return fmt.Errorf("netns: %s (%s) cannot be opened by %s: %w; unprivileged TUN use needs it to be mode 0666 (as root: chmod 0666 %s)",
		TUNPath, mode, who, err, TUNPath)
}

// overflowUID is what stat reports for owners a user namespace does not map
// (kernel.overflowuid, 65534 unless changed).
const overflowUID = 65534

// outerUID is the uid that this user namespace's root maps to; false in the
// initial user namespace (whose map is the identity over all uids) or when
// the map cannot be read.
func outerUID() (string, bool) {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "0" && f[2] != "4294967295" {
			return f[1], true
		}
	}
	return "", false
}
