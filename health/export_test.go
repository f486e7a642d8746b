package health

import (
	"context"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// What the external tests (package health_test, which may import lab and
// through it director) need of the insides.

var FindDest = findDest

func OpenConns() int64 { return openConns.Load() }

// RunProbe runs one check once; weight is -1 unless a dynamic misc check
// set one.
func RunProbe(ctx context.Context, s *stack.Stack, svc string, to netip.AddrPort, c Check) (weight int, err error) {
	r := newProber(s, svc, to, c).probe(ctx)
	return r.weight, r.err
}
