package lab

// What the namespace lab is made of, and its configuration: shared by the
// lab itself (Linux only, netnslab.go) and the command line, which parses
// and documents its flags on every system.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/tunvs/tunvs/admin"
)

// Addresses of the namespace lab beyond those of the in-process lab.
var (
	RouterPublic = netip.MustParsePrefix("10.0.0.200/24")
	RouterLab    = netip.MustParsePrefix("172.16.1.200/24")
	// LanGateway is the lan namespace's address on the bridge, used only
	// with --attach tun (the lan namespace then routes to the director's
	// TUN device and answers ARP for the DIP and the VIP).
	LanGateway = netip.MustParsePrefix("172.16.1.254/24")
)

// Names of devices and hosts in the namespace lab.
const (
	DirectorDev = "tvlab0" // the director's TAP or TUN device, in host "lan"
	BridgeDev   = "br0"    // the lab segment, in host "lan"
	HostClient  = "client"
	HostRouter  = "router"
	HostLan     = "lan"
	HostDir     = "director"
)

// MaxNetnsServers is the most real servers the namespace lab has: each is
// a network namespace with a veth pair and a process.
const MaxNetnsServers = 40

// RealServerHost is the name of real server i's host: rs1, rs2, ...
func RealServerHost(i int) string { return fmt.Sprintf("rs%d", i+1) }

// NetnsConfig describes a namespace lab.
type NetnsConfig struct {
	Scheduler string // default rr
	Servers   int    // default 2
	Attach    string // "tap" (default) or "tun"
	// RSCmd, if set, runs in each real server's namespace (by sh -c)
	// instead of the built-in HTTP server; TUNVS_LAB_NAME and
	// TUNVS_LAB_ADDR tell it who it is. It must listen on port 80.
	RSCmd string
	// Checks are health check rules (tunvs run --check) for the
	// director, e.g. "-t 172.16.1.100:80 http path=/ interval=1s".
	Checks   []string
	StateDir string
	// Self is the tunvs executable (for `tunvs run` and `tunvs lab serve`).
	Self string
	// FullNAT: the real servers are full NAT (--fwd fullnat), the
	// director owns LocalAddr, and the real servers' default route is
	// the router's, not the director's.
	FullNAT bool
	// HA: two directors, master and backup (see HAConf), the real
	// servers' gateway HAGateway. TAP and masquerading only.
	HA bool
	// NoBypass: the directors send every packet through their stack
	// (tunvs run --bypass=false), to compare with the default.
	NoBypass bool
	// Directors, if above 0, makes it the scale-out lab instead
	// (cluster.go): that many directors behind a BGP router with ECMP,
	// direct routing to the real servers.
	Directors int
}

func (c *NetnsConfig) defaults() error {
	if c.Scheduler == "" {
		c.Scheduler = "rr"
	}
	if c.Servers == 0 {
		c.Servers = 2
	}
	if c.Servers < 1 || c.Servers > MaxNetnsServers {
		return fmt.Errorf("lab: %d real servers: want 1 to %d", c.Servers, MaxNetnsServers)
	}
	if c.Attach == "" {
		c.Attach = "tap"
	}
	if c.Directors < 0 || c.Directors > MaxDirectors {
		return fmt.Errorf("lab: --directors %d: want 1 to %d", c.Directors, MaxDirectors)
	}
	if c.Attach != "tap" && c.Attach != "tun" {
		return fmt.Errorf("lab: --attach %q: want tap or tun", c.Attach)
	}
	if c.HA && (c.Attach != "tap" || c.FullNAT) {
		return errors.New("lab: --ha needs --attach tap and --fwd masq (the virtual addresses move by ARP on the segment, and the real servers' gateway moves with them)")
	}
	if c.StateDir == "" {
		return errors.New("lab: no state directory")
	}
	return nil
}

// DefaultStateDir is $XDG_RUNTIME_DIR/tunvs-lab when that directory is
// writable, else /tmp/tunvs-lab-UID.
func DefaultStateDir() string {
	if d := os.Getenv("TUNVS_LAB_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && admin.WritableDir(d) {
		return filepath.Join(d, "tunvs-lab")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tunvs-lab-%d", os.Getuid()))
}

// SocketPath is the director's control socket in a state directory.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, "tunvs.sock") }

// HostNamesFor lists the namespace lab's hosts with n real servers.
func HostNamesFor(n int) []string {
	h := []string{HostClient, HostRouter, HostDir, HostLan}
	for i := range n {
		h = append(h, RealServerHost(i))
	}
	return h
}
