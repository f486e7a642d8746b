package bgp

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// ownSocket reports whether the loopback connection from `from` to `to`
// was made by this process: the kernel's socket for its far end (local
// address from, remote to, in /proc/net/tcp) is one of this process's
// descriptors. Another program on the machine could bind the relay's
// loopback address too; this keeps it from taking the director's
// session to the router.
func ownSocket(from, to netip.AddrPort) (bool, error) {
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
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false, err
	}
	target := "socket:[" + inode + "]"
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == target {
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
