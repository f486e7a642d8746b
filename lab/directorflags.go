package lab

import (
	"fmt"
	"net/netip"
)

// Every director of a namespace lab (the one-director lab on either
// attachment, the HA pair, the scale-out lab) is a `tunvs run` process,
// so its devices are made where the daemon's are (tun.OpenLink, with the
// daemon's defaults: offloads, super-packets NATed whole, the bypass, the
// default reader). directorFlags is what the labs add to its links and
// rules, the same for each: nothing about the devices but --bypass=false
// when asked for, so that what a lab measures is what `tunvs run` does.

// MetricsPort is where the namespace lab's first director serves its
// Prometheus metrics, on loopback in host director; the HA pair's backup
// and the scale-out lab's further directors take the next ports.
const MetricsPort = 9177

// MetricsAddr is director i's (0-based; in the HA pair the backup is 1)
// metrics address, in host director.
func MetricsAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(MetricsPort+i))
}

// metricsFlag makes director i serve its metrics on MetricsAddr(i).
func metricsFlag(i int) string { return "--metrics=" + MetricsAddr(i).String() }

// directorFlags are the flags every director of a namespace lab gets
// besides its links, routes, rules and metrics address: the health checks
// and --bypass=false if cfg.NoBypass.
func directorFlags(cfg NetnsConfig) []string {
	var a []string
	for _, c := range cfg.Checks {
		a = append(a, "--check="+c)
	}
	if cfg.NoBypass {
		a = append(a, "--bypass=false")
	}
	return a
}

// metricsTry is the banner's line showing director i's counters.
func metricsTry(self, dirFlag, host string, i int) [2]string {
	return [2]string{fmt.Sprintf("%s lab exec%s %s -- curl -s %s/metrics | grep _host_", self, dirFlag, host, MetricsAddr(i)),
		"the director's packet counters (fast_path: packets that skipped the stack)"}
}
