package director

import "testing"

func TestShrinkPolicy(t *testing.T) {
	// A flood's 10,000 entries drain, 300 per check: the heap is handed
	// back several times, the last with the table almost empty.
	p := shrinkPolicy{peak: 50}
	var at []int
	for n := 50; n <= 10000; n += 2000 {
		if p.shrank(n) {
			t.Fatalf("released while the table grew, at %d", n)
		}
	}
	for n := 10000; n >= 0; n -= 300 {
		if p.shrank(n) {
			at = append(at, n)
		}
	}
	if len(at) < 3 || at[0] >= 5000 || at[len(at)-1] > 500 {
		t.Errorf("released at %v entries: want a first release below 5000 and a last at 500 or fewer", at)
	}

	// A large table that only comes and goes by less than half is left
	// alone, however many entries that is.
	p = shrinkPolicy{}
	for i := range 100 {
		n := 100000 + (i%2)*40000
		if p.shrank(n) {
			t.Fatalf("released at %d while the table churned between 100k and 140k", n)
		}
	}
	// Small tables are never worth a release.
	p = shrinkPolicy{}
	for _, n := range []int{400, 0, 400, 0} {
		if p.shrank(n) {
			t.Fatalf("released at %d after a peak of 400", n)
		}
	}
}
