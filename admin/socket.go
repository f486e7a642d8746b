package admin

import (
	"os"
	"path/filepath"
)

// DefaultSocket is where the daemon listens and tunvsadm looks unless told
// otherwise (both call this, so they agree): $TUNVS_SOCKET; else
// /run/tunvs.sock if this process can create files in /run; else
// $XDG_RUNTIME_DIR/tunvs.sock if that is writable; else tunvs-UID.sock in
// the temporary directory (per user on macOS and Windows, where TMPDIR and
// TEMP are in the user's own profile).
//
// Writability is tried, not guessed from the uid: inside `unshare --user
// --map-root-user` the uid is 0 but /run belongs to a user the namespace
// does not map, so the kernel refuses the bind (capabilities in a user
// namespace do not override permissions on inodes whose owner it does not
// map: capable_wrt_inode_uidgid, fs/inode.c and kernel/capability.c).
func DefaultSocket() string {
	if p := os.Getenv("TUNVS_SOCKET"); p != "" {
		return p
	}
	if WritableDir("/run") {
		return "/run/tunvs.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && WritableDir(d) {
		return filepath.Join(d, "tunvs.sock")
	}
	// The shared temporary directory: the uid in the name keeps users
	// apart.
	return filepath.Join(os.TempDir(), tempSocketName())
}

// WritableDir reports whether this process can create a file in dir, by
// creating (and removing) one: permission bits, read-only mounts, ACLs and
// user namespaces all have their say, as they will on the socket's bind.
func WritableDir(dir string) bool {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return false
	}
	f, err := os.CreateTemp(dir, ".tunvs-probe-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}
