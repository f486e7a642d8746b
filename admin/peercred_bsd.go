//go:build darwin || freebsd

package admin

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed checks the peer's credentials: the daemon's own user or
// root. The socket's mode already keeps others out; this holds even if
// someone loosens it. macOS and FreeBSD: LOCAL_PEERCRED at level
// SOL_LOCAL, a struct xucred with the peer's effective uid at connect(2)
// (what getpeereid(3) reads).
func peerAllowed(c *net.UnixConn) (int, bool) {
	if c == nil {
		return -1, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	var cred *unix.Xucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil || cerr != nil {
		return -1, false
	}
	// XUCRED_VERSION is 0; another layout cannot be read as this one.
	if cred.Version != 0 {
		return -1, false
	}
	uid := int(cred.Uid)
	return uid, uid == os.Geteuid() || uid == 0
}
