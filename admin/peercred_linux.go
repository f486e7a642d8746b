package admin

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// peerAllowed checks the peer's credentials: the daemon's own user or
// root. The socket's mode already keeps others out; this holds even if
// someone loosens it. Linux: SO_PEERCRED, the credentials the peer had at
// connect(2) (net/unix/af_unix.c, copy_peercred).
func peerAllowed(c *net.UnixConn) (int, bool) {
	if c == nil {
		return -1, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return -1, false
	}
	uid := int(cred.Uid)
	return uid, uid == os.Geteuid() || uid == 0
}
