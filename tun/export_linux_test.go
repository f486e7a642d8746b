//go:build linux

package tun

// Test helpers of water_linux_test.go for the external test package
// (offload_device_linux_test.go, which imports netstack: package tun's own
// tests cannot, netstack importing tun).
var (
	InSandbox  = inSandbox
	OpenOrSkip = openOrSkip
	SetAddr    = setAddr
)

// ArmedFds is the device's fd and its epoll instance's fd of queue 0 of
// d, a device opened with ReadWait WaitArmed (0, 0 for another).
func ArmedFds(d Device) (dev, ep int) {
	q := d.(*OffloadDevice).offloadQueue
	if !q.armed {
		return 0, 0
	}
	_ = q.epRC.Control(func(fd uintptr) { ep = int(fd) })
	return int(q.devFd), ep
}

// DeviceFd is the fd of queue 0 of d, an offload device.
func DeviceFd(d Device) (fd int) {
	_ = d.(*OffloadDevice).rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
