//go:build darwin || freebsd

package admin

import (
	"errors"

	"golang.org/x/sys/unix"
)

// peerUID is the peer's effective uid at connect(2): LOCAL_PEERCRED at
// level SOL_LOCAL, a struct xucred (what getpeereid(3) reads on macOS and
// FreeBSD).
func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, err
	}
	// XUCRED_VERSION is 0; another layout cannot be read as this one.
	if cred.Version != 0 {
		return -1, errors.New("xucred: unknown version")
	}
	return int(cred.Uid), nil
}
