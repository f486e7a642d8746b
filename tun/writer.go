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

// DeferredWriterSource is a device queue that a reader of another queue
// (or of this one) can write to with deferred writes: they go out in that
// reader's next read, in the same system call as its reads (Linux,
// Config.ReadWait WaitRing: io_uring). A deferred writer is for the
// reader's goroutine alone, between its Read or ReadGSO calls, and the
// buffers it is given must stay as they are until the reader's next Read
// or ReadGSO: the reader's own buffers, which it reads the next batch
// into only once the writes are done. A deferred write that fails is
// reported by the writer's next WriteGSO. The target queue's Close waits
// for writes queued to it to go out.
type DeferredWriterSource interface {
	// NewDeferredWriter returns a deferred writer to this queue for
	// reader's goroutine, or false if reader does not take them.
	NewDeferredWriter(reader GSODevice) (GSOWriter, bool)
}

// BufferTrimmer is a queue that keeps buffers of its own outside the Go
// heap (the io_uring reader's slots and write buffers): TrimBuffers hands
// back to the kernel the pages that a burst of super-packets made
// resident, once the queue has gone a call without needing them, and
// reports how many bytes that was.
type BufferTrimmer interface {
	TrimBuffers() int
}
