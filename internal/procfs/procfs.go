// Package procfs reads what the tests and benchmarks measure of a
// process from Linux's /proc: the memory lines of its status and its
// threads' scheduler statistics. Elsewhere the reads fail.
package procfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StatusKB reads the numeric lines of /proc/PID/status ("VmRSS", "RssAnon",
// ...: kB for the memory ones), by name without the colon.
func StatusKB(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	return ParseStatus(string(b)), nil
}

// ParseStatus reads the lines of a /proc/PID/status text whose value is
// a number (with or without "kB" after it): "VmRSS:\t 1234 kB" gives
// VmRSS 1234.
func ParseStatus(st string) map[string]int64 {
	m := map[string]int64{}
	for _, l := range strings.Split(st, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			m[k] = n
		}
	}
	return m
}

// Sched is what the scheduler counted for the threads of a process,
// summed: the time they ran and the time they waited for a CPU while
// runnable (the first two fields of /proc/PID/task/TID/schedstat, in ns:
// sched_info_dequeue in kernel/sched/stats.h, CONFIG_SCHED_INFO), and
// the times they were switched out while still runnable, preempted
// (nonvoluntary_ctxt_switches of each thread's status).
type Sched struct {
	Run, Wait time.Duration
	Preempted int64
}

// SchedOf sums Sched over the threads process pid has now. Threads that
// ended are not counted, so a difference of two readings leaves out what
// threads that ended between them did.
func SchedOf(pid int) (Sched, error) {
	var s Sched
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		return s, fmt.Errorf("threads of %d: none found (%v)", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		r, _ := strconv.ParseInt(f[0], 10, 64)
		w, _ := strconv.ParseInt(f[1], 10, 64)
		s.Run += time.Duration(r)
		s.Wait += time.Duration(w)
		if st, err := os.ReadFile(t + "/status"); err == nil {
			s.Preempted += ParseStatus(string(st))["nonvoluntary_ctxt_switches"]
		}
	}
	return s, nil
}
