//go:build !linux && !freebsd

package tun

import (
	"fmt"
	"io"

	"github.com/songgao/water"
)

// openDevice opens a TUN or TAP device through water, which carries the
// per-system code (utun on macOS, the tap-windows driver on Windows).
// water's platform parameters differ per system (macOS takes a utun name,
// Windows a component ID and network, others nothing), so outside Linux the
// system picks the interface with its defaults and name is not applied;
// Name() reports the name actually used.
func openDevice(_ string, kind Kind) (io.ReadWriteCloser, string, error) {
	wcfg := water.Config{DeviceType: water.TUN}
	if kind == KindTAP {
		wcfg.DeviceType = water.TAP
	}
	ifce, err := water.New(wcfg)
	if err != nil {
		return nil, "", fmt.Errorf("water: %w", err)
	}
	return ifce, ifce.Name(), nil
}

// configure does not touch the interface outside Linux: there is no
// portable ioctl set for it, and tunvs is deployed on Linux. The MTU and
// up state are left to the system (or its tools), and the system's usual
// default MTU is reported.
func configure(_ string, _ Config) (int, error) {
	return defaultMTU, nil
}
