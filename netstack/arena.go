package netstack

import (
	"os"
	"sync"

	"github.com/tunvs/tunvs/tun"
)

// gsoArena is the size of the buffer a GSO reader reads into: room for
// three 64 KiB super-packets, or a batch of about 90 small packets in
// their tun.SmallSlot each.
const gsoArena = 256 << 10

// gsoArenaMin is what a reader that keeps up reads into: one 64 KiB
// super-packet (ReadGSO's least) and room for 16 small packets. A batch
// that fills it doubles the reader's share, up to gsoArena.
const gsoArenaMin = 96 << 10

// pageSize is what a trim hands back whole pages of.
var pageSize = os.Getpagesize()

// rxArena is a GSO reader's arena. It lives outside the Go heap where the
// platform allows (arena_linux.go: an anonymous mapping): it holds packets
// for the time of a batch, not objects, so it has no business in the
// garbage collector's goal (the heap is let grow by a share of what is
// live: 256 KiB of buffers per reader would have counted), and the pages
// a burst made resident can be handed back to the kernel once the reader
// no longer needs them (Host.TrimBuffers), as a NIC driver frees its
// receive buffers: a flood's full batches touch the whole arena, and
// without that the director's RSS would keep them for good (issue 14).
//
// The reader reads into buf[:lim]; it alone changes lim, under mu when it
// grows it, so that a trim, which takes mu, never hands back a page the
// reader is about to read into. It shrinks lim only between batches, once
// the batch is out: nothing then refers to the arena.
type rxArena struct {
	buf    []byte
	mapped bool // buf is outside the Go heap, and may be released

	mu  sync.Mutex
	lim int // the reader's share: buf[:lim]
	hi  int // the largest lim since the last trim: what may be resident
	// keep is where the last batch ended: until the reader reads the
	// next, its packets may still be on their way out (a deferred
	// writer's go with the reader's next read: tun.DeferredWriterSource),
	// so a trim leaves buf[:keep] alone even when lim shrank below it.
	keep int
}

func newRxArena() *rxArena {
	buf, mapped := allocArena(gsoArena)
	return &rxArena{buf: buf, mapped: mapped, lim: gsoArenaMin, hi: gsoArenaMin}
}

// next is the part of the arena the reader reads its next batch into,
// after a batch of cnt packets out of room for room ended at end: a batch
// that filled its share (no room left for another super-packet, or as
// many packets as pkts holds) doubles it, one that did not brings it back
// to gsoArenaMin, since the device then had nothing more to give.
func (a *rxArena) next(cnt, room, end int) []byte {
	full := cnt == room || end+bufOffset+tun.MaxGSOPacket+64 > a.lim
	switch {
	case full && a.lim < len(a.buf):
		a.mu.Lock()
		a.lim = min(2*a.lim, len(a.buf))
		a.hi = max(a.hi, a.lim)
		a.keep = end
		a.mu.Unlock()
	case !full && a.lim > gsoArenaMin:
		a.mu.Lock()
		a.lim = gsoArenaMin
		a.keep = end
		a.mu.Unlock()
	case end > gsoArenaMin || a.keep > gsoArenaMin:
		a.mu.Lock()
		a.keep = end
		a.mu.Unlock()
	}
	return a.buf[:a.lim]
}

// trim hands the pages beyond the reader's share back to the kernel (they
// read as zeros when touched again) and reports how many bytes it gave.
func (a *rxArena) trim() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Whole pages, from the first one past what the reader may still
	// use.
	from := (max(a.lim, a.keep) + pageSize - 1) &^ (pageSize - 1)
	if !a.mapped || a.hi <= from {
		return 0
	}
	if releaseArena(a.buf[from:a.hi]) != nil {
		return 0
	}
	n := a.hi - from
	a.hi = from
	return n
}

// free returns the arena to the platform; the reader is gone.
func (a *rxArena) free() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mapped {
		freeArena(a.buf)
	}
	a.buf, a.mapped, a.lim, a.hi = nil, false, 0, 0
}

// TrimBuffers hands back to the kernel the pages of the readers' arenas
// that a burst made resident and that the readers, keeping up again, no
// longer read into, and those of the devices' own buffers
// (tun.BufferTrimmer: the io_uring reader's), and reports how many bytes
// that was. The director calls it with its memory check
// (director/memory.go).
func (h *Host) TrimBuffers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, nic := range h.byID {
		for _, q := range nic.txq {
			if q.arena != nil {
				n += q.arena.trim()
			}
			if t, ok := q.dev.(tun.BufferTrimmer); ok {
				n += t.TrimBuffers()
			}
		}
	}
	return n
}
