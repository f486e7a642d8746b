package waitfor

import (
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	Until(t, time.Second, "three looks", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("looked %d times, want 3", n)
	}
}
