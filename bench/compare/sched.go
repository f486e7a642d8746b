//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/tunvs/tunvs/internal/procfs"
)

// procRunDelay is the time process pid's threads have spent runnable
// but waiting for a CPU, in seconds, and the times they were preempted
// (procfs.Sched).
func procRunDelay(pid int) (delayS, preempted float64, err error) {
	s, err := procfs.SchedOf(pid)
	return s.Wait.Seconds(), float64(s.Preempted), err
}

// cpuIdle is the time all CPUs have been idle (idle and iowait of
// /proc/stat's cpu line) and the time they have counted in all, in
// clock ticks: a workload that left no CPU idle is bound by the
// machine's CPU, shared by every process of the run.
func cpuIdle() (idle, total float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected %q", line)
	}
	for i, s := range f[1:] {
		var v float64
		fmt.Sscan(s, &v)
		// guest and guest_nice are counted in user and nice already.
		if i < 8 {
			total += v
		}
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return idle, total, nil
}

// idleDuring reads the machine's CPU times now and returns what reads
// them again and records key_idle_pct, the share of the CPU time that was
// idle meanwhile, for every director: the kernel's NAT works in softirq,
// in the time of whatever task the packet interrupted, so that is the
// figure that says whether a workload was bound by the machine's CPU.
func idleDuring(r *result, key string) func() {
	idle0, tot0, err := cpuIdle()
	if err != nil {
		return func() {}
	}
	return func() {
		idle, tot, err := cpuIdle()
		if err != nil || tot <= tot0 {
			return
		}
		r.Figures[key+"_idle_pct"] = 100 * (idle - idle0) / (tot - tot0)
		fmt.Fprintf(os.Stderr, "   %-15s %.1f%% of the machine's CPU time idle\n", key+" idle", r.Figures[key+"_idle_pct"])
	}
}
