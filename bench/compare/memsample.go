//go:build linux

package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/tunvs/tunvs/internal/procfs"
)

// What a director's resident memory is made of, from /proc/PID/status.
// VmHWM alone mixes two things that answer to different changes: the
// pages of the binary and its libraries the process has mapped (RssFile:
// the kernel maps the page cache's pages 64 KiB around each faulting
// address, fault_around_bytes, so most of a binary whose code runs all
// over it: docs/perf.md) and its own memory (RssAnon: heap, stacks, the
// runtime's metadata). /proc keeps a peak of the sum only, so a
// sampler reads both while the workloads run and keeps the sample where
// their sum was highest.

// memSampleEvery is how often the sampler reads the director's status.
// A read costs about 20 µs of a core; VmRSS moves in steps of a GC cycle
// or a connection table's growth, which last longer than this.
const memSampleEvery = 50 * time.Millisecond

// procMemSample is one reading of a process's status, in MB.
type procMemSample struct {
	rss, hwm, anon, file, shmem float64
}

// readProcMem reads process pid's VmRSS, VmHWM, RssAnon, RssFile and
// RssShmem.
func readProcMem(pid int) (procMemSample, error) {
	m, err := procfs.StatusKB(pid)
	if err != nil {
		return procMemSample{}, err
	}
	s, err := procMemOf(m)
	if err != nil {
		return s, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return s, nil
}

// procMemOf takes the memory lines of a /proc/PID/status, as
// procfs.ParseStatus reads them.
func procMemOf(m map[string]int64) (procMemSample, error) {
	mb := func(k string) float64 { return float64(m[k]) / 1024 }
	s := procMemSample{rss: mb("VmRSS"), hwm: mb("VmHWM"), anon: mb("RssAnon"), file: mb("RssFile"), shmem: mb("RssShmem")}
	if s.rss == 0 {
		return s, fmt.Errorf("no VmRSS")
	}
	return s, nil
}

// memSampler reads a process's status every memSampleEvery until stopped.
type memSampler struct {
	stop chan struct{}
	done chan struct{}

	mu sync.Mutex
	// peak is the sample with the highest VmRSS; maxAnon and maxFile
	// are the highest of each, whenever they were.
	peak             procMemSample
	maxAnon, maxFile float64
	samples          int
	err              error
}

// sampleMem starts sampling process pid.
func sampleMem(pid int) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tk := time.NewTicker(memSampleEvery)
		defer tk.Stop()
		for {
			s, err := readProcMem(pid)
			m.add(s, err)
			if err != nil {
				return // the process is gone
			}
			select {
			case <-m.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return m
}

// add records one sample.
func (m *memSampler) add(s procMemSample, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.err = err
		return
	}
	m.samples++
	if s.rss > m.peak.rss {
		m.peak = s
	}
	m.maxAnon = max(m.maxAnon, s.anon)
	m.maxFile = max(m.maxFile, s.file)
}

// finish stops the sampler, takes one last sample (the end of the last
// workload) and returns what it saw.
func (m *memSampler) finish(pid int) (peak procMemSample, maxAnon, maxFile float64, samples int, err error) {
	close(m.stop)
	<-m.done
	m.add(readProcMem(pid))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.samples == 0 {
		return m.peak, 0, 0, 0, m.err
	}
	return m.peak, m.maxAnon, m.maxFile, m.samples, nil
}
