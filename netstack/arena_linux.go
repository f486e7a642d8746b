package netstack

import "golang.org/x/sys/unix"

// allocArena maps n bytes of anonymous memory, whose pages become resident
// as they are first written and go back to the kernel with releaseArena.
// ok is false if the mapping failed and b is from the Go heap.
func allocArena(n int) (b []byte, ok bool) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, n), false
	}
	return b, true
}

// releaseArena gives the pages of b, a page-aligned part of a mapping, back
// to the kernel at once: MADV_DONTNEED takes them out of RSS now (they
// read as zeros if touched again), where MADV_FREE would leave them
// counted until the kernel wants them.
func releaseArena(b []byte) error {
	return unix.Madvise(b, unix.MADV_DONTNEED)
}

func freeArena(b []byte) error {
	return unix.Munmap(b)
}
