package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/lab"
)

// BenchmarkLabHTTP is one HTTP GET through the in-process lab per
// iteration: client host -> director (TAP links, so through the stack)
// -> real server and back, each request on a new TCP connection (as
// lab.Get does). ns/op is per request.
func BenchmarkLabHTTP(b *testing.B) {
	l, err := lab.New(lab.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	get := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := l.Get(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	// One untimed request: ARP, the first connection, a real answer.
	if body := get(); !strings.HasSuffix(body, "Real Server") {
		b.Fatalf("unexpected answer %q", body)
	}
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
