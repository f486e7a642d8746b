package bgp

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ownSocket reports whether the loopback connection from `from` to `to`
// was made by process pid (the speaker): the kernel's socket for its far
// end (local address from, remote to, in /proc/net/tcp) is one of pid's
// descriptors. Another program on the machine could bind the relay's
// loopback address too; this keeps it from taking the director's
// session to the router. Reading another process's /proc/PID/fd needs
// ptrace read access (proc_fd_access_allowed): the speaker is the
// director's own child, same credentials, so it has it.
func ownSocket(pid int, from, to netip.AddrPort) (bool, error) {
	if pid <= 0 {
		return false, nil
	}
	want := procTCPAddr(from) + " " + procTCPAddr(to)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false, err
	}
	defer f.Close()
	inode := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 9 && fl[1]+" "+fl[2] == want {
			inode = fl[9]
			break
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	if inode == "" || inode == "0" {
		return false, nil
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	target := "socket:[" + inode + "]"
	for _, e := range ents {
		if l, err := os.Readlink(dir + e.Name()); err == nil && l == target {
			return true, nil
		}
	}
	return false, nil
}

// procTCPAddr is an IPv4 address and port as /proc/net/tcp prints them
// (tcp4_seq_show): the address's network-order word read as a host
// integer, then the port, both in hex.
func procTCPAddr(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(a[:]), ap.Port())
}
