//go:build linux

package main

import (
	"regexp"
	"strconv"
	"testing"
)

// TestSyscallCost checks that the run's machine line says what a null
// system call cost, in nanoseconds measured, and how the kernel isolates
// itself (or that it could not tell).
func TestSyscallCost(t *testing.T) {
	got := syscallCost()
	m := regexp.MustCompile(`^a null system call (\d+) ns \(meltdown: .+\)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("syscallCost() = %q", got)
	}
	if ns, _ := strconv.Atoi(m[1]); ns <= 0 {
		t.Errorf("syscallCost() = %q: no time measured", got)
	}
}
