//go:build linux

package netns

import (
	"context"
	"encoding/json"
	"fmt"
)

// LinkStats are a link's packet counters, as `ip -s link` shows them
// (the kernel's rtnl_link_stats64).
type LinkStats struct {
	RX LinkCount `json:"rx"`
	TX LinkCount `json:"tx"`
}

// LinkCount is one direction's packets and drops.
type LinkCount struct {
	Packets uint64 `json:"packets"`
	Dropped uint64 `json:"dropped"`
}

// LinkStats reads the counters of link dev in the host.
func (h *Host) LinkStats(dev string) (LinkStats, error) {
	links, err := h.linkStats("show", "dev", dev)
	l, ok := links[dev]
	if err == nil && (!ok || len(links) != 1) {
		err = fmt.Errorf("netns: ip -j -s link show dev %s in %s: %d links, want it alone", dev, h, len(links))
	}
	return l, err
}

// AllLinkStats reads the counters of every link in the host, by name.
func (h *Host) AllLinkStats() (map[string]LinkStats, error) {
	return h.linkStats("show")
}

func (h *Host) linkStats(args ...string) (map[string]LinkStats, error) {
	out, err := h.Run(context.Background(), append([]string{"ip", "-j", "-s", "link"}, args...)...)
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name    string    `json:"ifname"`
		Stats64 LinkStats `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("netns: ip -j -s link %v in %s: %v: %q", args, h, err, out)
	}
	m := make(map[string]LinkStats, len(links))
	for _, l := range links {
		m[l.Name] = l.Stats64
	}
	return m, nil
}
