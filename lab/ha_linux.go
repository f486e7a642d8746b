//go:build linux

package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tunvs/tunvs/internal/netns"
)

// startHA starts the HA pair: the master (priority HAMasterPriority, on
// DirectorDev with DIP, the "director" of the lab) and the backup
// (HABackupPriority, on BackupDev with BackupDIP), each with args (the
// rules) and its keepalived.conf of HAConf.
func startHA(ctx context.Context, cfg NetnsConfig, topo *netns.Topology, lan *netns.Host, args []string) ([]*labProc, error) {
	var procs []*labProc
	for i, d := range []struct {
		name, dev, sock string
		dip             string
		prio            int
	}{
		{"director", DirectorDev, SocketPath(cfg.StateDir), DIP.String(), HAMasterPriority},
		{"backup", BackupDev, BackupSocketPath(cfg.StateDir), BackupDIP.String(), HABackupPriority},
	} {
		conf := filepath.Join(cfg.StateDir, d.name+"-keepalived.conf")
		if err := os.WriteFile(conf, []byte(HAConf(d.dev, d.prio)), 0o600); err != nil {
			return procs, err
		}
		a := append(append([]string(nil), args...), metricsFlag(i), "--keepalived-conf", conf,
			fmt.Sprintf("--link=name=%s,kind=tap,addr=%s", d.dev, d.dip),
			"--route=default,via="+RouterLab.Addr().String())
		p, err := startLabDirector(ctx, cfg, topo, lan, d.name, d.dev, d.sock, a)
		if p != nil {
			procs = append(procs, p)
		}
		if err != nil {
			return procs, err
		}
	}
	return procs, nil
}
