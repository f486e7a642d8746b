package netstack

import (
	"sync/atomic"
	"testing"
)

// An Egress slot (egress.go) gives back what was stored in its generation,
// noBypass and the largest hop and tunnel indexes included, and nothing
// in the next generation; in one exactly 2^15 later it gives back the
// same, as egress.go says (the tag keeps 15 bits). heldEgress names the
// hop whatever the generation.
func TestEgressSlot(t *testing.T) {
	tag := func(gen uint64) uint32 { return uint32(gen) << egBits }
	for _, eg := range []uint32{1, 2, maxHops, maxTunEPs, noBypass} {
		for _, gen := range []uint64{0, 1, 1<<15 - 1, 1 << 15, 1<<40 + 5} {
			var slot atomic.Uint32
			if got := loadEgress(slot.Load(), tag(gen)); got != 0 {
				t.Fatalf("empty slot: %d", got)
			}
			storeEgress(&slot, eg, tag(gen))
			if got := loadEgress(slot.Load(), tag(gen)); got != eg {
				t.Errorf("eg %d stored in generation %d: loaded %d", eg, gen, got)
			}
			if got := loadEgress(slot.Load(), tag(gen+1)); got != 0 {
				t.Errorf("eg %d stored in generation %d: loaded %d in the next", eg, gen, got)
			}
			if got := loadEgress(slot.Load(), tag(gen+1<<15)); got != eg {
				t.Errorf("eg %d stored in generation %d: %d 2^15 later, want the same (15-bit tag)", eg, gen, got)
			}
			want := eg
			if eg == noBypass {
				want = 0
			}
			if got := heldEgress(&slot); got != want {
				t.Errorf("heldEgress of eg %d: %d, want %d", eg, got, want)
			}
		}
	}
}
