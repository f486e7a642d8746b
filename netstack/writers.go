package netstack

import "github.com/tunvs/tunvs/tun"

// writerSlot is a reader's own writer of one device queue (see
// fastPath.writer).
type writerSlot struct {
	w     tun.GSOWriter
	tried bool
}

// writer is f's own writer of q (tun.WriterSource), made on first use,
// or nil where q has none: then f writes q's device under q.mu, taking
// turns with the other readers and the stack. On the TUN topology both
// real servers' readers write to the client's device, and each write(2)
// runs the client's TCP; with a writer each, neither waits for the
// other's.
func (f *fastPath) writer(q *txQueue) tun.GSOWriter {
	if q.src == nil {
		return nil
	}
	if q.id >= len(f.writers) {
		f.writers = append(f.writers, make([]writerSlot, q.id+1-len(f.writers))...)
	}
	s := &f.writers[q.id]
	if !s.tried {
		s.tried = true
		// A reader on io_uring sends its writes with its next
		// round of reads (tun.DeferredWriterSource): the packets are
		// in its arena, which it reads into again only after that.
		if d, ok := q.src.(tun.DeferredWriterSource); ok && f.self != nil {
			if w, ok := d.NewDeferredWriter(f.self); ok {
				s.w = w
				return s.w
			}
		}
		// Failing (the device closed), the shared way is left; its
		// error is counted where it is met.
		s.w, _ = q.src.NewWriter()
	}
	return s.w
}
