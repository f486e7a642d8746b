package netstack

import (
	"errors"
	"syscall"
	"time"
)

// A device's read fails for good when the device itself is gone: a TUN or
// TAP device whose network namespace was deleted is unregistered by the
// kernel (default_device_exit_batch deletes devices with rtnl_link_ops
// instead of moving them home), and its file descriptor then answers every
// read and write with EBADFD (tun_chr_read_iter: tun_get() finds no
// device). Such a NIC is closed and reported once, as wireguard-go's
// RoutineReadFromTUN closes its device on a read error, never retried in
// a loop.
func deviceGone(err error) bool {
	return errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO) || goneOS(err)
}

// Other read errors are retried, but never in a tight loop: the reader
// backs off as a failing accept does in net/http (5 ms doubling to 1 s),
// and says so once per run of failures.
const (
	readBackoffMin = 5 * time.Millisecond
	readBackoffMax = time.Second
)

// lost closes a NIC whose device is gone: the stack no longer routes to
// it, its other queues' readers stop (their reads end with tun.ErrClosed),
// and the loss is reported once, with how many links remain, to
// Config.OnLinkLost (the director decides whether it goes on) or the log.
func (n *NIC) lost(err error) {
	h := n.h
	if n.gone.Swap(true) {
		return
	}
	_ = h.s.DisableNIC(n.id)
	h.routesChanged()
	_ = n.dev.Close()
	h.mu.Lock()
	remaining := 0
	for _, o := range h.byID {
		if !o.gone.Load() {
			remaining++
		}
	}
	h.mu.Unlock()
	if h.cfg.OnLinkLost != nil {
		h.cfg.OnLinkLost(n.name, err, remaining)
		return
	}
	h.cfg.Log.Error().Err(err).Str("nic", n.name).Int("links_remaining", remaining).
		Msg("device gone; its link is closed")
}

// Gone reports whether the NIC's device is gone (see lost).
func (n *NIC) Gone() bool { return n.gone.Load() }
