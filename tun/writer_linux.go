package tun

import (
	"os"

	"golang.org/x/sys/unix"
)

var _ WriterSource = (*offloadQueue)(nil)

// queueWriter is a writer of an offloadQueue of its own (WriterSource).
type queueWriter struct {
	q *offloadQueue
	w writeState
}

// NewWriter implements WriterSource.
func (q *offloadQueue) NewWriter() (GSOWriter, error) {
	x := &queueWriter{q: q, w: writeState{direct: true}}
	if err := q.rc.Control(func(fd uintptr) { x.w.fd = fd }); err != nil {
		return nil, q.wrapErr("writer", err)
	}
	return x, nil
}

// WriteGSO implements GSOWriter: the queue's WriteGSO, in the writer's
// buffers.
func (x *queueWriter) WriteGSO(bufs [][]byte, gso []GSO, offset int) (int, error) {
	return x.q.writeGSO(&x.w, bufs, gso, offset)
}

// writeDirect writes pkt to fd, the queue's, without going through its
// os.File: the file's write lock (internal/poll's fdMutex, taken by
// RawConn.Write) would make writers on several goroutines take turns
// just as one lock around the device does. closeMu keeps Close from
// closing the fd, whose number could then be another file's, while a
// write is under way. done is false when the device's buffer is full
// (EAGAIN): the caller then waits in the poller.
func (q *offloadQueue) writeDirect(fd uintptr, pkt []byte) (done bool, err error) {
	q.closeMu.RLock()
	defer q.closeMu.RUnlock()
	if q.closed.Load() {
		return true, q.wrapErr("write", os.ErrClosed)
	}
	for {
		_, err := rawWrite(fd, pkt)
		switch err {
		case nil:
			return true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false, nil
		}
		return true, q.wrapErr("write", err)
	}
}
