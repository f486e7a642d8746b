//go:build linux

package tun

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// tunDevicePath is the Linux TUN/TAP clone device.
const tunDevicePath = "/dev/net/tun"

// openDevice creates (or attaches to) the TUN or TAP interface name and
// returns its fd as a file together with the name the kernel gave it.
//
// This does what water.New does on Linux (TUNSETIFF with IFF_NO_PI) but
// opens the device itself, because water's Linux open has two defects that
// matter to a long-running load balancer:
//   - it uses syscall.Open without O_CLOEXEC, so every process tunvs
//     executes inherits the fd and keeps the interface alive after Close;
//   - it does not close the fd when TUNSETIFF fails (e.g. name busy), so
//     every failed attempt leaks a descriptor.
//
// The fd is opened O_NONBLOCK, so os.NewFile registers it with the Go
// netpoller: a Read parks in the poller rather than in read(2), and Close
// wakes it with os.ErrClosed (older water versions opened the device
// blocking, where a Read would stay stuck after Close). water is still used
// on other systems, where its per-platform code is the point of having it.
//
// Persistence is left alone: a new device is non-persistent (removed on
// Close), and attaching to an existing persistent one does not change it.
func openDevice(name string, kind Kind) (io.ReadWriteCloser, string, error) {
	// The kernel would silently truncate a long name; refuse instead of
	// creating a device under a name the caller never asked for.
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, "", fmt.Errorf("name longer than %d bytes: %w", unix.IFNAMSIZ-1, err)
	}
	flags := uint16(unix.IFF_NO_PI | unix.IFF_TUN)
	if kind == KindTAP {
		flags = unix.IFF_NO_PI | unix.IFF_TAP
	}
	ifr.SetUint16(flags)

	fd, err := unix.Open(tunDevicePath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", tunDevicePath, err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("tunsetiff: %w", err)
	}
	return os.NewFile(uintptr(fd), tunDevicePath), ifr.Name(), nil
}

// configure applies cfg.MTU and cfg.Up to the interface called name and
// returns the MTU the kernel reports afterwards. Interface ioctls need some
// socket to be issued on; an AF_INET datagram socket is the conventional,
// always-available one.
func configure(name string, cfg Config) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket for ioctls: %w", err)
	}
	defer unix.Close(fd)

	if cfg.MTU > 0 {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return 0, fmt.Errorf("set mtu: %w", err)
		}
		ifr.SetUint32(uint32(cfg.MTU))
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
			return 0, fmt.Errorf("set mtu %d: %w", cfg.MTU, err)
		}
	}
	if cfg.Up {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return 0, fmt.Errorf("bring up: %w", err)
		}
		// Read-modify-write so that the kernel's other flags (NOARP,
		// POINTOPOINT, MULTICAST) are kept.
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return 0, fmt.Errorf("get flags: %w", err)
		}
		if flags := ifr.Uint16(); flags&unix.IFF_UP == 0 {
			ifr.SetUint16(flags | unix.IFF_UP)
			if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
				return 0, fmt.Errorf("bring up: %w", err)
			}
		}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, fmt.Errorf("get mtu: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("get mtu: %w", err)
	}
	return int(ifr.Uint32()), nil
}
