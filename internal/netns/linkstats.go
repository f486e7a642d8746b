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
	out, err := h.Run(context.Background(), "ip", "-j", "-s", "link", "show", "dev", dev)
	if err != nil {
		return LinkStats{}, err
	}
	var links []struct {
		Stats64 LinkStats `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return LinkStats{}, fmt.Errorf("netns: ip -j -s link show %s in %s: %v: %q", dev, h, err, out)
	}
	return links[0].Stats64, nil
}
