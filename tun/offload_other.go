//go:build !linux

package tun

import "errors"

// offloadAvailable is false: the offload device (virtio-net header,
// TSO/USO) is Linux's; elsewhere Open ignores Config.Offload.
const offloadAvailable = false

func openOffload(Config, Kind) (Device, error) {
	return nil, errors.New("tun offloads are Linux-only")
}
