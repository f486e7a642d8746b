package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
)

// The HA pair (`tunvs lab --netns --ha`): two directors on the lab
// segment, as keepalived LVS-NAT setups run them. One VRRP router moves
// the VIP and the real servers' gateway (HAGateway) between them; the
// connection sync daemons follow it (lvs_sync_daemon), so that the
// backup's table holds the master's connections when it takes over.

// Addresses and devices of the HA pair's second director.
var (
	// BackupDIP is the backup director's own address.
	BackupDIP = netip.MustParsePrefix("172.16.1.2/24")
	// HAGateway is the real servers' gateway in the HA lab: a virtual
	// address like the VIP, on whichever director is master. (The
	// single-director lab's real servers use the VIP itself, which the
	// director always holds.)
	HAGateway = netip.MustParseAddr("172.16.1.254")
)

const (
	// BackupDev is the backup director's TAP device, in host "lan".
	BackupDev = "tvlab1"
	// HAVRID is the HA pair's virtual router id.
	HAVRID = 51
	// HAMasterPriority and HABackupPriority are the two directors'
	// VRRP priorities.
	HAMasterPriority = 150
	HABackupPriority = 100
)

// HAConf is the keepalived.conf part of one director of an HA pair on
// link with a VRRP priority: one virtual router (VRRP version 3, advert
// every second) holding the VIP and the real servers' gateway, and the
// sync daemon it drives on the same link. Both directors read the same
// text but for the link and the priority.
func HAConf(link string, prio int) string {
	return fmt.Sprintf(`global_defs {
    vrrp_version 3
    lvs_sync_daemon %[1]s VI_1
}
vrrp_instance VI_1 {
    state BACKUP
    interface %[1]s
    virtual_router_id %[3]d
    priority %[2]d
    advert_int 1
    virtual_ipaddress {
        %[4]s/24
        %[5]s/24
    }
}
`, link, prio, HAVRID, VIP, HAGateway)
}

// BackupSocketPath is the backup director's control socket.
func BackupSocketPath(stateDir string) string { return filepath.Join(stateDir, "tunvs-backup.sock") }

// directorPIDFile holds a director's PID in the sandbox (what `tunvs lab
// exec director -- kill` takes).
func directorPIDFile(stateDir string, backup bool) string {
	if backup {
		return filepath.Join(stateDir, "backup.pid")
	}
	return filepath.Join(stateDir, "director.pid")
}

// MasterPIDFile is the file holding the HA lab's first director's PID,
// as seen in the lab (`tunvs lab exec director -- sh -c 'kill -9 $(cat
// FILE)'` is the failover).
func MasterPIDFile(stateDir string) string { return directorPIDFile(stateDir, false) }
