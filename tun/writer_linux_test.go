//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Writers of one queue, each on its own goroutine, and the queue's own
// Write on a third, write at once: every run reaches "the kernel" whole
// and uncorrupted (each coalesced into one super-packet in its writer's
// buffer, or copied there when there is no headroom for the virtio
// header), in each writer's order. Run it with -race: the writers share
// nothing but the fd and the counters.
func TestWritersConcurrent(t *testing.T) {
	q, peer := fakeQueue(t)
	const rounds, segs = 300, 6
	run := func(id, round int) [][]byte {
		var out [][]byte
		for i := range segs {
			out = append(out, pktSpec{sport: uint16(5000 + id), dport: 80, seq: uint32((round*segs + i) * 1000),
				ack: 1, flags: tcpFlagACK, id: uint16(i), tsval: 7, payload: bytes.Repeat([]byte{byte(id)}, 1000)}.build())
		}
		return out
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for id := range 3 {
		var write func(bufs [][]byte, offset int) (int, error)
		if id == 0 {
			write = q.Write
		} else {
			w, err := q.NewWriter()
			if err != nil {
				t.Fatal(err)
			}
			ordinary := make([]GSO, segs)
			write = func(bufs [][]byte, offset int) (int, error) { return w.WriteGSO(bufs, ordinary, offset) }
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				offset := []int{16, 4}[r%2]
				if _, err := write(withOffset(run(id, r), offset), offset); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	next := [3]uint32{}
	rbuf := make([]byte, readBufSize)
	pfd := []unix.PollFd{{Fd: int32(peer), Events: unix.POLLIN}}
	for got := 0; got < 3*rounds; {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		m, err := unix.Read(peer, rbuf)
		if err == unix.EAGAIN {
			_, _ = unix.Poll(pfd, 100)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
		var h virtioHdr
		h.decode(rbuf)
		if h.gsoType != vnetGSOTCPv4 || h.gsoSize != 1000 {
			t.Fatalf("message %d: virtio header %+v, want a super-packet of 1000-byte segments", got, h)
		}
		pieces := splitAll(t, rbuf[:m], 1500)
		if len(pieces) != segs {
			t.Fatalf("message %d: %d segments, want %d", got, len(pieces), segs)
		}
		for _, p := range pieces {
			id := int(binary.BigEndian.Uint16(p[20:])) - 5000
			if id < 0 || id > 2 {
				t.Fatalf("message %d: segment from port %d", got, id+5000)
			}
			if seq := binary.BigEndian.Uint32(p[24:]); seq != next[id]*1000 {
				t.Fatalf("writer %d: segment %d, want %d", id, seq/1000, next[id])
			}
			next[id]++
			if payload := p[20+32:]; len(payload) != 1000 || bytes.Count(payload, []byte{byte(id)}) != 1000 {
				t.Fatalf("writer %d: segment %d's payload is not its own", id, next[id]-1)
			}
		}
	}
	wg.Wait()
	if c := q.c.writeSyscalls.Load(); c != 3*rounds {
		t.Errorf("%d write syscalls counted, want %d", c, 3*rounds)
	}
}

// A writer stops with the queue: its writes after Close fail with
// ErrClosed and write nothing.
func TestWriterAfterClose(t *testing.T) {
	q, peer := fakeQueue(t)
	w, err := q.NewWriter()
	if err != nil {
		t.Fatal(err)
	}
	pkt := withOffset(segments(false, 1, 1400, 1400), 16)
	if _, err := w.WriteGSO(pkt, []GSO{{}}, 16); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if _, err := w.WriteGSO(pkt, []GSO{{}}, 16); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
	rbuf := make([]byte, readBufSize)
	if _, err := unix.Read(peer, rbuf); err != nil {
		t.Fatalf("the write before Close: %v", err)
	}
	// The end of the socket: 0 bytes, the other end closed.
	if m, _ := unix.Read(peer, rbuf); m > 0 {
		t.Fatalf("%d bytes written after Close", m)
	}
}
