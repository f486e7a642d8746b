// Package procfs reads what the tests, the benchmarks and the lab read of
// a process from Linux's /proc: its stat line, the memory lines of its
// status and its threads' scheduler statistics. Elsewhere the reads fail.
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

// Stat is the fields of a /proc/PID/stat line, numbered as proc(5)
// numbers them: Field(1) is the pid, Field(2) the command name without
// its parentheses, Field(3) the state ("R", "S", "Z", ...), Field(4) the
// parent's pid, Field(5) the process group, Field(14) and Field(15) utime
// and stime, Field(22) starttime (the times in clock ticks, USER_HZ:
// 1/100 s on Linux).
type Stat []string

// StatOf reads /proc/PID/stat.
func StatOf(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return ParseStat(string(b))
}

// ParseStat splits a /proc/PID/stat line into its fields. The command
// name (field 2) may hold blanks and parentheses of its own: it is what
// lies between the first '(' and the last ')', the other fields are
// separated by blanks.
func ParseStat(st string) (Stat, error) {
	i, j := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
	if i < 0 || j < i {
		return nil, fmt.Errorf("procfs: a stat line without its command name in parentheses: %.40q", st)
	}
	pid := strings.TrimSpace(st[:i])
	if pid == "" {
		return nil, fmt.Errorf("procfs: a stat line without its pid: %.40q", st)
	}
	return append(Stat{pid, st[i+1 : j]}, strings.Fields(st[j+1:])...), nil
}

// Field is field n (from 1, as proc(5) numbers them), "" if the line has
// none.
func (s Stat) Field(n int) string {
	if n < 1 || n > len(s) {
		return ""
	}
	return s[n-1]
}

// Uint is field n as a number, 0 if the line has none or it is not one.
func (s Stat) Uint(n int) uint64 {
	v, _ := strconv.ParseUint(s.Field(n), 10, 64)
	return v
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
	if err != nil {
		return s, fmt.Errorf("threads of %d: %w", pid, err)
	}
	if len(tasks) == 0 {
		return s, fmt.Errorf("threads of %d: none found", pid)
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
