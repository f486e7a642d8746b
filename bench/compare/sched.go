//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// procRunDelay sums, over process pid's threads, the time they spent
// runnable but waiting for a CPU, in seconds (the second field of
// /proc/PID/task/TID/schedstat, run_delay: the scheduler's
// sched_info_dequeue in kernel/sched/stats.h), and the times they were
// switched out while still runnable, preempted (nonvoluntary_ctxt_switches
// in .../status). Threads that ended meanwhile are not counted.
func procRunDelay(pid int) (delayS, preempted float64, err error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		return 0, 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	for _, t := range tasks {
		if b, err := os.ReadFile(t + "/schedstat"); err == nil {
			var run, wait float64
			if n, _ := fmt.Sscan(string(b), &run, &wait); n == 2 {
				delayS += wait / 1e9
			}
		}
		if b, err := os.ReadFile(t + "/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "nonvoluntary_ctxt_switches:"); ok {
					var n float64
					fmt.Sscan(strings.TrimSpace(v), &n)
					preempted += n
				}
			}
		}
	}
	return delayS, preempted, nil
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
