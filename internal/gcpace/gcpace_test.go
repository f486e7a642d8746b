package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live uint64
		base int
		want int
	}{
		{0, 50, 50},
		{4 * mb, 50, 50},   // 2 MB of headroom
		{32 * mb, 50, 50},  // 16 MB: at the cap
		{64 * mb, 50, 25},  // 16 MB
		{128 * mb, 50, 12}, // a million connections
		{1 << 40, 50, MinPercent},
		{1 << 40, 5, 5}, // a base below the floor stays
		{128 * mb, 100, 12},
		{128 * mb, -1, -1}, // GOGC=off stays off
	} {
		if got := Percent(c.live, c.base, 16*mb); got != c.want {
			t.Errorf("Percent(%d MB, %d) = %d, want %d", c.live/mb, c.base, got, c.want)
		}
	}
}

// Run lowers GOGC when the live heap is large and restores the base when
// it is small again.
func TestRun(t *testing.T) {
	old := debug.SetGCPercent(50)
	defer debug.SetGCPercent(old)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, 50, 1<<20); close(done) }()
	defer func() { cancel(); <-done }()
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	wait := func(want func(int) bool, what string) {
		t.Helper()
		for range 20 {
			runtime.GC()
			time.Sleep(Every + 100*time.Millisecond)
			s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
			metrics.Read(s)
			if want(int(s[0].Value.Uint64())) {
				return
			}
		}
		t.Fatalf("GOGC never %s", what)
	}
	wait(func(p int) bool { return p < 50 }, "lowered for a 64 MB live heap")
	runtime.KeepAlive(big)
	big = nil
	wait(func(p int) bool { return p == 50 }, "back to 50 for a small heap")
}
