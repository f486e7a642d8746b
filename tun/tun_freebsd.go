//go:build freebsd

package tun

// FreeBSD's tun(4) and tap(4), opened directly: water has no FreeBSD
// backend. The steps are those of wireguard-go's tun/tun_freebsd.go (and
// FreeBSD's own ifconfig): open the cloning device /dev/tun or /dev/tap,
// which creates the next free tunN/tapN; ask its name (TUNGIFNAME,
// which tap(4) answers too as TAPGIFNAME); rename it with SIOCSIFNAME
// when a name was asked for; set the MTU and IFF_UP through ioctls on a
// datagram socket. A cloned interface outlives its fd on FreeBSD, so
// Close destroys it (SIOCIFDESTROY), as Linux does for a non-persistent
// device.
//
// tun(4) is put in TUNSIFHEAD mode, in which every packet carries a 4-byte
// address family in network byte order ahead of it: without it the driver
// takes every written packet for IPv4 (sys/net/if_tuntap.c, tunwrite_l3).
// tunvs's packets carry no header above the Device, so the family is read
// into (and written from) a separate iovec with readv/writev: no copy. It
// also leaves point-to-point mode (TUNSIFMODE IFF_BROADCAST), so that
// `ifconfig tun0 inet 172.16.1.1/24` takes a netmask without a peer.
//
// Built and vetted here (make cross); never run: no FreeBSD machine was
// available. README's Systems table says so.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From FreeBSD's sys/net/if_tun.h (_IOW/_IOR('t', ...)); x/sys/unix does
// not carry them.
const (
	tunSIFHEAD = 0x80047460 // _IOW('t', 96, int)
	tunSIFMODE = 0x8004745e // _IOW('t', 94, int)
	tunGIFNAME = 0x4020745d // _IOR('t', 93, struct ifreq)
)

// ifreq is struct ifreq: the name and a 16-byte union, read as flags
// (ifru_flags[2]: low and high 16 bits), an int (ifru_mtu) or a pointer
// (ifru_data).
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data [16]byte
}

func newIfreq(name string) (*ifreq, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("interface name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	r := &ifreq{}
	copy(r.name[:], name)
	return r, nil
}

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// ifioctl runs an interface ioctl on a throwaway datagram socket, as
// ifconfig does.
func ifioctl(req uintptr, r *ifreq) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(s)
	return ioctl(uintptr(s), req, unsafe.Pointer(r))
}

func destroyInterface(name string) error {
	r, err := newIfreq(name)
	if err != nil {
		return err
	}
	if err := ifioctl(unix.SIOCIFDESTROY, r); err != nil {
		return fmt.Errorf("destroy %s: %w", name, err)
	}
	return nil
}

func openDevice(name string, kind Kind) (io.ReadWriteCloser, string, error) {
	path := "/dev/tun"
	if kind == KindTAP {
		path = "/dev/tap"
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", path, err)
	}
	var r ifreq
	if err := ioctl(uintptr(fd), tunGIFNAME, unsafe.Pointer(&r)); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("%s: TUNGIFNAME: %w", path, err)
	}
	cloned := unix.ByteSliceToString(r.name[:])
	fail := func(err error) (io.ReadWriteCloser, string, error) {
		unix.Close(fd)
		destroyInterface(cloned)
		return nil, "", err
	}
	if kind == KindTUN {
		on := int32(1)
		if err := ioctl(uintptr(fd), tunSIFHEAD, unsafe.Pointer(&on)); err != nil {
			return fail(fmt.Errorf("%s: TUNSIFHEAD: %w", cloned, err))
		}
		mode := int32(unix.IFF_BROADCAST | unix.IFF_MULTICAST)
		if err := ioctl(uintptr(fd), tunSIFMODE, unsafe.Pointer(&mode)); err != nil {
			return fail(fmt.Errorf("%s: TUNSIFMODE: %w", cloned, err))
		}
	}
	ifname := cloned
	if name != "" && name != cloned {
		r, err := newIfreq(cloned)
		if err != nil {
			return fail(err)
		}
		newName, err := newIfreq(name)
		if err != nil {
			return fail(err)
		}
		*(*uintptr)(unsafe.Pointer(&r.data[0])) = uintptr(unsafe.Pointer(&newName.name[0]))
		err = ifioctl(unix.SIOCSIFNAME, r)
		runtime.KeepAlive(newName) // the kernel reads it through a uintptr
		if err != nil {
			return fail(fmt.Errorf("rename %s to %s: %w", cloned, name, err))
		}
		ifname = name
	}
	// A non-blocking fd: os.NewFile puts it in the runtime's poller
	// (kqueue), so a blocked Read waits there and Close wakes it.
	f := os.NewFile(uintptr(fd), path)
	if kind == KindTAP {
		// Ethernet frames as they are: nothing to add or strip.
		return &bsdFile{File: f, name: ifname}, ifname, nil
	}
	d, err := newBSDTun(f, ifname)
	if err != nil {
		f.Close()
		destroyInterface(ifname)
		return nil, "", err
	}
	return d, ifname, nil
}

// newBSDTun wraps a tun(4) file in TUNSIFHEAD mode.
func newBSDTun(f *os.File, name string) (*bsdTun, error) {
	d := &bsdTun{bsdFile: bsdFile{File: f, name: name}}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	d.rc = rc
	d.readFn, d.writeFn = d.readv, d.writev
	return d, nil
}

// bsdFile is a cloned device: Close also destroys the interface.
type bsdFile struct {
	*os.File
	name string
}

func (f *bsdFile) Close() error {
	err := f.File.Close()
	if derr := destroyInterface(f.name); err == nil {
		err = derr
	}
	return err
}

// bsdTun strips and adds TUNSIFHEAD's address family with readv/writev
// through the file's poller. The iovecs and the callbacks live in the
// struct, so a packet allocates nothing; a mutex per direction keeps
// concurrent callers apart.
type bsdTun struct {
	bsdFile
	rc syscall.RawConn

	rmu     sync.Mutex
	rhdr    [4]byte
	riov    [2]unix.Iovec
	rn      int
	rerr    syscall.Errno
	readFn  func(uintptr) bool
	wmu     sync.Mutex
	whdr    [4]byte
	wiov    [2]unix.Iovec
	wn      int
	werr    syscall.Errno
	writeFn func(uintptr) bool
}

func (d *bsdTun) readv(fd uintptr) bool {
	n, _, e := unix.Syscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&d.riov[0])), 2)
	if e == unix.EAGAIN {
		return false // wait in the poller
	}
	d.rn, d.rerr = int(n), e
	return true
}

func (d *bsdTun) writev(fd uintptr) bool {
	n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.wiov[0])), 2)
	if e == unix.EAGAIN {
		return false
	}
	d.wn, d.werr = int(n), e
	return true
}

// Read reads one packet into p, its address family dropped.
func (d *bsdTun) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, io.ErrShortBuffer
	}
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.riov[0].Base, d.riov[1].Base = &d.rhdr[0], &p[0]
	d.riov[0].SetLen(len(d.rhdr))
	d.riov[1].SetLen(len(p))
	if err := d.rc.Read(d.readFn); err != nil {
		return 0, err
	}
	if d.rerr != 0 {
		return 0, d.rerr
	}
	if d.rn < len(d.rhdr) {
		return 0, fmt.Errorf("read %d bytes: shorter than the address family", d.rn)
	}
	return d.rn - len(d.rhdr), nil
}

// Write writes p as one packet after its address family, taken from the
// IP version nibble.
func (d *bsdTun) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, io.ErrShortBuffer
	}
	var af uint32
	switch p[0] >> 4 {
	case 4:
		af = unix.AF_INET
	case 6:
		af = unix.AF_INET6
	default:
		return 0, errors.New("not an IPv4 or IPv6 packet")
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	binary.BigEndian.PutUint32(d.whdr[:], af)
	d.wiov[0].Base, d.wiov[1].Base = &d.whdr[0], &p[0]
	d.wiov[0].SetLen(len(d.whdr))
	d.wiov[1].SetLen(len(p))
	if err := d.rc.Write(d.writeFn); err != nil {
		return 0, err
	}
	if d.werr != 0 {
		return 0, d.werr
	}
	return max(d.wn-len(d.whdr), 0), nil
}

// configure sets the MTU and IFF_UP as ifconfig does (SIOCSIFMTU,
// SIOCGIFFLAGS/SIOCSIFFLAGS) and reads the MTU back (SIOCGIFMTU).
// Addresses are the director's, inside tunvs; the kernel side's are
// ifconfig's, as on Linux.
func configure(name string, cfg Config) (int, error) {
	r, err := newIfreq(name)
	if err != nil {
		return 0, err
	}
	if cfg.MTU > 0 {
		*(*int32)(unsafe.Pointer(&r.data[0])) = int32(cfg.MTU)
		if err := ifioctl(unix.SIOCSIFMTU, r); err != nil {
			return 0, fmt.Errorf("set mtu %d: %w", cfg.MTU, err)
		}
	}
	if cfg.Up {
		if err := ifioctl(unix.SIOCGIFFLAGS, r); err != nil {
			return 0, fmt.Errorf("get flags: %w", err)
		}
		flags := *(*uint16)(unsafe.Pointer(&r.data[0]))
		*(*uint16)(unsafe.Pointer(&r.data[0])) = flags | unix.IFF_UP
		if err := ifioctl(unix.SIOCSIFFLAGS, r); err != nil {
			return 0, fmt.Errorf("set up: %w", err)
		}
	}
	if err := ifioctl(unix.SIOCGIFMTU, r); err != nil {
		return 0, fmt.Errorf("get mtu: %w", err)
	}
	return int(*(*int32)(unsafe.Pointer(&r.data[0]))), nil
}
