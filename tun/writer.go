package tun

// GSOWriter is the write half of a GSODevice.
type GSOWriter interface {
	// WriteGSO is GSODevice.WriteGSO.
	WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error)
}

// WriterSource is a device (one queue of one) that can give each
// goroutine writing to it a writer of its own. A Device's Write and
// WriteGSO are never called concurrently (they work in the device's
// buffers), so goroutines that share a device take turns under a lock
// that is held for the whole write(2); and on Linux, for a TUN or TAP
// device, the receiving host's TCP runs inside that write(2). A writer
// of its own has its own buffers and writes to the device's file
// descriptor without waiting for the others: the kernel takes
// concurrent writes on one TUN or TAP file, each write(2) a packet
// (tun_chr_write_iter, tun_get_user in drivers/net/tun.c).
type WriterSource interface {
	// NewWriter returns a writer for one goroutine. It stops working
	// when the device is closed.
	NewWriter() (GSOWriter, error)
}
