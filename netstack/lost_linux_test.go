package netstack

import (
	"syscall"
	"testing"
	"time"
)

// A NIC whose device is gone (EBADFD: the TUN's namespace was deleted) is
// closed and reported once with how many links remain; its reader stops
// instead of retrying (it used to spin, logging each failure).
func TestDeviceGoneClosesNICOnce(t *testing.T) {
	type report struct {
		nic       string
		remaining int
	}
	reports := make(chan report, 10)
	h := New(Config{OnLinkLost: func(nic string, err error, remaining int) { reports <- report{nic, remaining} }})
	defer h.Close()
	a, b := newFailingDev(syscall.EBADFD), newFailingDev(syscall.EBADFD)
	if _, err := h.AddNIC("a", a); err != nil {
		t.Fatal(err)
	}
	if _, err := h.AddNIC("b", b); err != nil {
		t.Fatal(err)
	}
	a.fail.Store(true)
	r := <-reports
	if r.nic != "a" || r.remaining != 1 {
		t.Fatalf("report %+v, want a with 1 remaining", r)
	}
	if !a.isClosed() || b.isClosed() {
		t.Fatalf("closed: a %v b %v, want only a", a.isClosed(), b.isClosed())
	}
	n, _ := h.NICByName("a")
	if !n.Gone() {
		t.Error("NIC a not marked gone")
	}
	b.fail.Store(true)
	if r := <-reports; r.nic != "b" || r.remaining != 0 {
		t.Fatalf("report %+v, want b with 0 remaining", r)
	}
	select {
	case r := <-reports:
		t.Fatalf("reported twice: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if got := a.failed.Load() + b.failed.Load(); got != 2 {
		t.Errorf("%d failed reads, want 2 (one each, no retry)", got)
	}
}
