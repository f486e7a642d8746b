package tun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// defaultMTU is what Ethernet-style interfaces start with; it is reported
// where the MTU cannot be read back from the system.
const defaultMTU = 1500

// Config describes a kernel TUN or TAP device to create (or attach to).
type Config struct {
	// Name is the interface name, e.g. "tunvs0". Empty lets the kernel
	// choose; on Linux a "%d" in the name is replaced by the first free
	// number. On Linux names are at most 15 bytes (IFNAMSIZ-1).
	Name string
	// Kind selects TUN (IP packets) or TAP (Ethernet frames). The zero
	// value means KindTUN so that a zero Config is usable.
	Kind Kind
	// MTU, when > 0, is set on the interface before it is brought up.
	// Zero keeps the system default.
	MTU int
	// Up brings the interface up (IFF_UP) once it exists, so that the
	// kernel starts routing to it without an external "ip link set up".
	Up bool
	// Offload, on Linux, opens the device (TUN or TAP) with a
	// virtio-net header and TCP/UDP segmentation offloads (see
	// OffloadDevice): the kernel exchanges 64 KiB super-packets with
	// tunvs, which splits and coalesces them in software, so the
	// packets above the Device are the same as without it but cost far
	// fewer system calls. Ignored on other systems, which get the plain
	// device.
	Offload bool
	// Queues, with Offload, opens the device with IFF_MULTI_QUEUE and
	// this many fds (see OffloadDevice.Queues). 0 or 1 means one queue.
	Queues int
	// Standby, with Queues > 1, leaves the queues beyond the first
	// detached once open (Standby: the kernel sends them nothing until
	// they are attached), for a caller that puts a second reader to
	// work only when one cannot keep up (netstack does).
	Standby bool
	// BusyPoll, with Offload, makes a reader that finds the device empty
	// before it has read anything keep trying for up to this long,
	// yielding to other goroutines between tries, before it waits in the
	// poller: a packet that comes meanwhile is read without a wakeup, at
	// the cost of a CPU kept busy. 0 (the default) waits at once. It is
	// the kernel's socket busy polling (SO_BUSY_POLL, net.core.busy_read:
	// sk_busy_loop in include/net/busy_poll.h) for a device fd.
	BusyPoll time.Duration
	// ReadWait, with Offload on Linux, is where a queue's reader that
	// finds the queue empty waits for packets: WaitPoller (the default)
	// in Go's network poller, WaitPoll or WaitThread in ppoll(2) on its
	// own thread, which the kernel then wakes itself when the device
	// queues a packet (see readthread_linux.go). Ignored elsewhere.
	ReadWait ReadWait
}

// ReadWait says where a device's reader waits for packets
// (Config.ReadWait).
type ReadWait uint8

const (
	// WaitPoller parks the reading goroutine in Go's network poller
	// (epoll): a thread in epoll_wait is woken and readies it, often
	// for another thread to run.
	WaitPoller ReadWait = iota
	// WaitPoll makes the reader sleep in ppoll(2) as a blocking system
	// call on whatever thread runs it: the kernel wakes that thread.
	WaitPoll
	// WaitThread is WaitPoll with the reading goroutine locked to its
	// OS thread (runtime.LockOSThread) from its first wait until it
	// exits, so that every wait is on one thread: a thread per queue,
	// for a goroutine per queue that reads it for the queue's life, as
	// the netstack's readers do. The thread ends with the goroutine.
	WaitThread
	// WaitArmed parks the reading goroutine in Go's network poller, but
	// on an epoll instance of the device's own in which the reader arms
	// the device (EPOLLONESHOT) when it finds it empty: packets that
	// come while the reader is busy wake no thread (in the poller each
	// one may). See readarmed_linux.go.
	WaitArmed
	// WaitRing reads on io_uring: a round is one io_uring_enter that
	// sends the writes deferred since the last (DeferredWriterSource)
	// and makes a handful of reads, each taking a queued packet or
	// failing at once; the reader waits in Go's poller, as with
	// WaitPoller, once a round finds the device empty. Where io_uring
	// cannot be set up the device falls back to WaitPoller and its
	// OffloadStats say why. See readring_linux.go.
	WaitRing
)

// Open creates the TUN or TAP device described by cfg (on Linux the process
// needs CAP_NET_ADMIN) and returns it as a Device with BatchSize 1 and
// Headroom 0: each Read and Write is one system call for one packet.
//
// Packets carry no packet-information header (IFF_NO_PI). Buffers passed to
// Read should hold at least MTU() bytes (MTU()+14 for TAP) after the offset:
// the kernel truncates a packet that does not fit, silently.
//
// On Linux and FreeBSD the MTU and the up flag are applied with ioctls and
// the MTU is read back, so MTU() tells what the kernel really uses
// (FreeBSD: tun_freebsd.go). On other systems MTU and Up are not applied
// and MTU() reports 1500; see water_other.go.
//
// With cfg.Offload, on Linux, Open returns an *OffloadDevice instead (BatchSize 128, Headroom 10): same packets, far
// fewer system calls; see its documentation.
func Open(cfg Config) (Device, error) {
	kind := cfg.Kind
	if kind == 0 {
		kind = KindTUN
	}
	if kind != KindTUN && kind != KindTAP {
		return nil, fmt.Errorf("open %q: invalid kind %d", cfg.Name, cfg.Kind)
	}
	if cfg.MTU < 0 {
		return nil, fmt.Errorf("open %q: negative mtu %d", cfg.Name, cfg.MTU)
	}
	if cfg.Offload && offloadAvailable {
		if cfg.Queues < 0 {
			return nil, fmt.Errorf("open %q: negative queue count %d", cfg.Name, cfg.Queues)
		}
		d, err := openOffload(cfg, kind)
		if err != nil {
			return nil, fmt.Errorf("open %s %q with offloads: %w", kind, cfg.Name, err)
		}
		return d, nil
	}
	f, name, err := openDevice(cfg.Name, kind)
	if err != nil {
		return nil, fmt.Errorf("open %s %q: %w", kind, cfg.Name, err)
	}
	// The kernel may have picked or completed the name (empty or "%d"):
	// everything below, and Name(), uses the real one.
	mtu, err := configure(name, cfg)
	if err != nil {
		// Do not leave a half-configured device behind; closing the
		// last fd of a non-persistent device removes the interface.
		_ = f.Close()
		return nil, fmt.Errorf("configure %s: %w", name, err)
	}
	return &waterDevice{f: f, name: name, kind: kind, mtu: mtu}, nil
}

// OpenLink opens a device for a director's link: the one place where
// tunvs run (and through it both attachments of the namespace lab) makes
// its devices. It is Open, except that a kernel that refuses the offloads
// (or their queues) still gets the device: it is opened plain, one packet
// per system call, and warn is told why. Without cfg.Offload (or off
// Linux) Queues is ignored.
func OpenLink(cfg Config, warn func(error)) (Device, error) {
	if !cfg.Offload || !offloadAvailable {
		cfg.Offload, cfg.Queues = false, 0
		return Open(cfg)
	}
	dev, err := Open(cfg)
	if err == nil {
		return dev, nil
	}
	plain := cfg
	plain.Offload, plain.Queues = false, 0
	dev, perr := Open(plain)
	if perr != nil {
		// Not the offloads' fault (a busy name, no permission): the
		// plain device's error is the one to tell.
		return nil, perr
	}
	if warn != nil {
		warn(err)
	}
	return dev, nil
}

// waterDevice is a kernel TUN/TAP device: opened directly on Linux
// (water_linux.go) and FreeBSD (tun_freebsd.go), through water elsewhere
// (water_other.go).
type waterDevice struct {
	// f is, on Linux, an *os.File over a non-blocking fd, so reads wait in
	// the Go netpoller and Close wakes a blocked Read with os.ErrClosed.
	f      io.ReadWriteCloser
	name   string
	kind   Kind
	mtu    int
	closed atomic.Bool
}

// Read reads one packet into bufs[0][offset:]. The kernel hands out one
// packet per read(2), so batching would only add latency.
func (d *waterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, fmt.Errorf("read %s: no buffers", d.name)
	}
	if offset < 0 || offset >= len(bufs[0]) {
		return 0, fmt.Errorf("read %s: offset %d outside buffer of %d bytes", d.name, offset, len(bufs[0]))
	}
	n, err := d.f.Read(bufs[0][offset:])
	if err != nil {
		return 0, d.wrapErr("read", err)
	}
	sizes[0] = n
	return 1, nil
}

// Write writes each bufs[i][offset:] as one packet, stopping at the first
// error; the kernel validates packets (e.g. the IP version nibble on TUN)
// and its error is returned wrapped.
func (d *waterDevice) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return i, fmt.Errorf("write %s: offset %d outside buffer of %d bytes", d.name, offset, len(b))
		}
		if _, err := d.f.Write(b[offset:]); err != nil {
			return i, d.wrapErr("write", err)
		}
	}
	return len(bufs), nil
}

// wrapErr maps the file's "closed" errors to ErrClosed so callers need to
// know only the contract's error, and names the device in all others.
func (d *waterDevice) wrapErr(op string, err error) error {
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s %s: %w", op, d.name, ErrClosed)
	}
	if errors.Is(err, io.EOF) {
		// A tun fd never reaches end of file while open; seeing it means
		// the device went away underneath us.
		return fmt.Errorf("%s %s: unexpected end of file: %w", op, d.name, err)
	}
	return fmt.Errorf("%s %s: %w", op, d.name, err)
}

// BatchSize is 1: one packet per read system call.
func (d *waterDevice) BatchSize() int { return 1 }

// Headroom is 0: without a virtio-net header nothing precedes the packet.
func (d *waterDevice) Headroom() int { return 0 }

// MTU is the interface MTU as read back after configuration.
func (d *waterDevice) MTU() int { return d.mtu }

// Kind is KindTUN or KindTAP as opened.
func (d *waterDevice) Kind() Kind { return d.kind }

// Name is the kernel's name for the interface.
func (d *waterDevice) Name() string { return d.name }

// Close closes the device fd, which removes the (non-persistent) interface
// and wakes a blocked Read. Closing twice is a no-op.
func (d *waterDevice) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", d.name, err)
	}
	return nil
}
