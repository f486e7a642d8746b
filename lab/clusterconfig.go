package lab

// The scale-out lab's addresses and numbers, shared by the lab (Linux,
// cluster.go) and the command line, which parses its flags on every
// system.

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"time"
)

// MaxDirectors is the most directors the scale-out lab has.
const MaxDirectors = 8

// The BGP autonomous systems of the scale-out lab's router and directors
// (private numbers, RFC 6996).
const (
	RouterAS   = 65000
	DirectorAS = 65001
)

// The scale-out lab's addresses and numbers.
var (
	ClusterVIP    = netip.MustParseAddr("172.16.2.100")
	ClusterClient = netip.MustParsePrefix("10.0.0.1/24")
)

const (
	ClusterHold   = 3 * time.Second // BGP hold time: how long a dead director keeps its share
	birdSock      = "bird.ctl"
	birdConf      = "bird.conf"
	clusterMarker = "cluster"
)

// DirectorDIP is director i's (0-based) address: 172.16.1.150, .151, ...
func DirectorDIP(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, 1, byte(150 + i)}), 24)
}

// DirectorName is director i's name: d1, d2, ...
func DirectorName(i int) string { return fmt.Sprintf("d%d", i+1) }

// DirectorTAP is director i's TAP device.
func DirectorTAP(i int) string { return fmt.Sprintf("tvd%d", i+1) }

// DirectorSocket is director i's control socket in a state directory.
func DirectorSocket(stateDir string, i int) string {
	return filepath.Join(stateDir, DirectorName(i)+".sock")
}
