package admin

import (
	"net"
	"unsafe"

	"golang.org/x/sys/windows"
)

// sioAFUnixGetPeerPID is SIO_AF_UNIX_GETPEERPID, _WSAIOR(IOC_VENDOR, 256)
// in the Windows SDK's afunix.h: the process id of an AF_UNIX peer.
const sioAFUnixGetPeerPID = 0x58000100

// umask does nothing on Windows, which has no file mode creation mask: the
// socket is private through the directory it is in (DefaultSocket puts it
// in the user's own %TEMP%, whose ACL admits only the user, SYSTEM and
// Administrators) and through the check below.
func umask(m int) int { return 0 }

// peerAllowed checks the peer: Windows' AF_UNIX has no SO_PEERCRED, so the
// peer's process id comes from SIO_AF_UNIX_GETPEERPID and its user from
// that process's token, which must be the daemon's own user (a user's
// elevated process has the same user SID). The uid it returns is -1:
// Windows users are SIDs, not numbers.
func peerAllowed(c *net.UnixConn) (int, bool) {
	if c == nil {
		return -1, false
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	var pid uint32
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		var n uint32
		ierr = windows.WSAIoctl(windows.Handle(fd), sioAFUnixGetPeerPID, nil, 0,
			(*byte)(unsafe.Pointer(&pid)), uint32(unsafe.Sizeof(pid)), &n, nil, 0)
	}); err != nil || ierr != nil || pid == 0 {
		return -1, false
	}
	peer, err := processUser(pid)
	if err != nil {
		return -1, false
	}
	self, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return -1, false
	}
	return -1, peer.Equals(self.User.Sid)
}

// processUser is the user SID of process pid.
func processUser(pid uint32) (*windows.SID, error) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return nil, err
	}
	defer windows.CloseHandle(h)
	var tok windows.Token
	if err := windows.OpenProcessToken(h, windows.TOKEN_QUERY, &tok); err != nil {
		return nil, err
	}
	defer tok.Close()
	u, err := tok.GetTokenUser()
	if err != nil {
		return nil, err
	}
	// The SID points into u's buffer; copy it out before tok's memory
	// goes.
	return u.User.Sid.Copy()
}
