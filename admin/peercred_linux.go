package admin

import "golang.org/x/sys/unix"

// peerUID is the uid the peer had at connect(2): SO_PEERCRED
// (net/unix/af_unix.c, copy_peercred), translated into this process's
// user namespace.
func peerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}
