package netstack

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts the pages of b that are in memory (mincore(2)).
func resident(t *testing.T, b []byte) int {
	t.Helper()
	vec := make([]byte, (len(b)+4095)/4096)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

func TestRxArena(t *testing.T) {
	a := newRxArena()
	defer a.free()
	if !a.mapped {
		t.Skip("anonymous mapping refused")
	}
	if got := len(a.buf[:a.lim]); got != gsoArenaMin {
		t.Fatalf("first share %d, want %d", got, gsoArenaMin)
	}
	if resident(t, a.buf) != 0 {
		t.Fatal("pages resident before any read")
	}

	// Full batches (no room left for a super-packet) double the share
	// up to the whole arena.
	b := a.next(10, 128, gsoArenaMin-100)
	if len(b) != 2*gsoArenaMin {
		t.Fatalf("after a full batch: share %d, want %d", len(b), 2*gsoArenaMin)
	}
	b = a.next(128, 128, 1000) // as many packets as pkts holds
	if len(b) != gsoArena {
		t.Fatalf("after a second full batch: share %d, want %d", len(b), gsoArena)
	}
	for i := range b {
		b[i] = 0xa5 // a flood's batches write the whole arena
	}
	if got := resident(t, a.buf); got != gsoArena/4096 {
		t.Fatalf("%d pages resident after a full write, want %d", got, gsoArena/4096)
	}
	// A trim while the reader may read into all of it gives nothing.
	if n := a.trim(); n != 0 {
		t.Fatalf("trim of a reader using the whole arena gave %d bytes", n)
	}

	// A batch that leaves room brings the share back, and a trim hands
	// the rest to the kernel; what is below the share stays.
	b = a.next(3, 128, 10000)
	if len(b) != gsoArenaMin {
		t.Fatalf("after a partial batch: share %d, want %d", len(b), gsoArenaMin)
	}
	if n := a.trim(); n != gsoArena-gsoArenaMin {
		t.Fatalf("trim gave %d bytes, want %d", n, gsoArena-gsoArenaMin)
	}
	if got := resident(t, a.buf); got != gsoArenaMin/4096 {
		t.Fatalf("%d pages resident after the trim, want %d", got, gsoArenaMin/4096)
	}
	if a.buf[gsoArenaMin-1] != 0xa5 || a.buf[gsoArenaMin] != 0 {
		t.Fatalf("after the trim: byte %d = %#x (want kept), byte %d = %#x (want 0)",
			gsoArenaMin-1, a.buf[gsoArenaMin-1], gsoArenaMin, a.buf[gsoArenaMin])
	}
	if n := a.trim(); n != 0 {
		t.Fatalf("a second trim gave %d bytes", n)
	}

	// Growing again after a trim is allowed and reads zeros.
	b = a.next(128, 128, 0)
	if len(b) != 2*gsoArenaMin || b[len(b)-1] != 0 {
		t.Fatalf("share %d after growing again, last byte %#x", len(b), b[len(b)-1])
	}
	if n := testing.AllocsPerRun(100, func() { a.next(3, 128, 1000); a.next(128, 128, 0) }); n != 0 {
		t.Errorf("next allocates %v times", n)
	}

	// A partial batch that ended past the smaller share: its packets
	// may still be on their way out (a deferred writer's), so a trim
	// before the next batch leaves their pages; after it, they go.
	b = a.next(128, 128, 0)
	for i := range b {
		b[i] = 0x5a
	}
	end := gsoArenaMin + 3*4096 + 100
	a.next(5, 128, end)
	keep := (end + pageSize - 1) &^ (pageSize - 1)
	if n := a.trim(); n != len(b)-keep {
		t.Fatalf("trim with a batch out to %d gave %d bytes, want %d", end, n, len(b)-keep)
	}
	if a.buf[end-1] != 0x5a {
		t.Fatalf("byte %d of the last batch lost to a trim", end-1)
	}
	a.next(1, 128, 200)
	if n := a.trim(); n != keep-gsoArenaMin {
		t.Fatalf("trim after the next batch gave %d bytes, want %d", n, keep-gsoArenaMin)
	}
}
