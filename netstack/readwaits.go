package netstack

// ReadWaits sums, over the NICs whose device counts them (a Linux
// tun.OffloadDevice), the times a reader found its device empty and
// slept until woken: one wakeup each, whether in Go's poller or in ppoll
// (tun.Config.ReadWait). Divided by the packets read, it is how often a
// packet costs a wakeup.
func (h *Host) ReadWaits() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n uint64
	for _, nic := range h.byID {
		if d, ok := nic.dev.(interface{ ReadWaits() uint64 }); ok {
			n += d.ReadWaits()
		}
	}
	return n
}

// RingCounts sums, over the NICs whose device reads on io_uring
// (tun.Config.ReadWait WaitRing), the readers' io_uring_enter calls and
// the packets their deferred writers sent with them
// (tun.DeferredWriterSource).
func (h *Host) RingCounts() (enters, writes uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, nic := range h.byID {
		if d, ok := nic.dev.(interface{ RingCounts() (uint64, uint64) }); ok {
			e, w := d.RingCounts()
			enters += e
			writes += w
		}
	}
	return enters, writes
}
