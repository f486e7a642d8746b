package nat

import (
	"sync"
	"testing"
)

// Both directions' MTUs share one word (connmtu.go): setting one leaves
// the other, a value past 16 bits is clamped, and concurrent setters of
// the two directions (the router rerouting each as its packets come) do
// not undo each other's store.
func TestConnEgressMTU(t *testing.T) {
	var c Conn
	c.initMTU(1500, 9000)
	if in, out := c.egressMTU(DirIn), c.egressMTU(DirOut); in != 1500 || out != 9000 {
		t.Fatalf("after initMTU(1500, 9000): in %d, out %d", in, out)
	}
	c.SetEgressMTU(DirIn, 1400)
	if in, out := c.egressMTU(DirIn), c.egressMTU(DirOut); in != 1400 || out != 9000 {
		t.Fatalf("after SetEgressMTU(DirIn, 1400): in %d, out %d; want 1400, 9000", in, out)
	}
	c.SetEgressMTU(DirOut, 70000)
	c.SetEgressMTU(DirIn, -1)
	if in, out := c.egressMTU(DirIn), c.egressMTU(DirOut); in != 0 || out != 0xffff {
		t.Fatalf("after SetEgressMTU(DirOut, 70000) and (DirIn, -1): in %d, out %d; want 0, 65535", in, out)
	}

	c.initMTU(0, 0)
	const n = 50000
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, dir := range []Dir{DirIn, DirOut} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range n {
				want := 1000 + int(dir)*10000 + i
				c.SetEgressMTU(dir, want)
				// Only this goroutine sets dir: a store of the
				// other's that undid this one shows here.
				if got := c.egressMTU(dir); got != want {
					t.Errorf("direction %d: %d just after setting %d", dir, got, want)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if in, out := c.egressMTU(DirIn), c.egressMTU(DirOut); in != 1000+n-1 || out != 11000+n-1 {
		t.Fatalf("after concurrent setters: in %d, out %d; want %d, %d", in, out, 1000+n-1, 11000+n-1)
	}
}
