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
