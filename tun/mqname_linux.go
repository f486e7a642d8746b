//go:build linux

package tun

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A device with several queues comes into being with its first one, and
// the others attach to it by name (TUNSETIFF), one fd after another. Until
// the last has, the device must not move: whoever moves it to another
// namespace as soon as it appears (tunvs lab --netns, the e2e tests, a
// script after `tunvs run`) would leave the later queues to create a new
// device of the same name where the old one was. So a new multi-queue
// device is made under a temporary name and renamed to its own once
// every queue is attached: it appears under its name complete.

// queueAttached, when set (by tests), is called after each queue of an
// offload device is attached.
var queueAttached func(i int)

// stagedName is the name to create a new device named name under, and
// whether it is a temporary one: for several queues of a device that does
// not exist yet (and whose name is not a pattern the kernel fills in).
// An existing (persistent) device is attached to by its own name.
func stagedName(name string, queues int) (string, bool, error) {
	if queues < 2 || name == "" || strings.Contains(name, "%") {
		return name, false, nil
	}
	exists, err := linkExists(name)
	if err != nil || exists {
		return name, false, err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	return "tvq" + hex.EncodeToString(b[:]), true, nil
}

// linkExists reports whether this namespace has an interface called name.
func linkExists(name string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("socket for ioctls: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, err
	}
	switch err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENODEV):
		return false, nil
	default:
		return false, fmt.Errorf("look up %s: %w", name, err)
	}
}

// renameLink renames the interface from to to (SIOCSIFNAME: struct ifreq
// with the new name in its union). The interface must be down.
func renameLink(from, to string) error {
	if len(from) >= unix.IFNAMSIZ || len(to) >= unix.IFNAMSIZ {
		return fmt.Errorf("rename %s to %s: name longer than %d bytes", from, to, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for ioctls: %w", err)
	}
	defer unix.Close(fd)
	var req [unix.IFNAMSIZ + 24]byte // struct ifreq
	copy(req[:], from)
	copy(req[unix.IFNAMSIZ:], to)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCSIFNAME, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("rename %s to %s: %w", from, to, e)
	}
	return nil
}
