// Package waitfor is the tests' polling loop: wait until a condition
// holds, or fail the test after a bound.
package waitfor

import (
	"testing"
	"time"
)

// every is how often Until looks again.
const every = 5 * time.Millisecond

// Until polls cond until it holds, and fails the test if it does not
// within the given time. what names the condition in the failure.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(every)
	}
}
