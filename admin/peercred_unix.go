//go:build linux || darwin || freebsd

package admin

import (
	"net"
	"os"
)

// peerAllowed checks the peer's credentials: the daemon's own user or
// root. The socket's mode already keeps others out; this holds even if
// someone loosens it. peerUID reads the peer's uid by the system's means.
func peerAllowed(c *net.UnixConn) (int, bool) {
	if c == nil {
		return -1, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	uid, uerr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { uid, uerr = peerUID(int(fd)) }); err != nil || uerr != nil {
		return -1, false
	}
	return uid, uid == os.Geteuid() || uid == 0
}
