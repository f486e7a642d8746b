//go:build linux

package main

import (
	"math"
	"os"
	"testing"

	"github.com/tunvs/tunvs/internal/procfs"
)

func TestParseProcMem(t *testing.T) {
	st := "Name:\thaproxy\nVmHWM:\t   16076 kB\nVmRSS:\t   15360 kB\nRssAnon:\t    4608 kB\nRssFile:\t   10240 kB\nRssShmem:\t     512 kB\n"
	s, err := procMemOf(procfs.ParseStatus(st))
	if err != nil {
		t.Fatal(err)
	}
	want := procMemSample{rss: 15, hwm: 16076.0 / 1024, anon: 4.5, file: 10, shmem: 0.5}
	if s != want {
		t.Fatalf("procMemOf = %+v, want %+v", s, want)
	}
	if _, err := procMemOf(procfs.ParseStatus("Name:\tx\n")); err == nil {
		t.Fatal("a status without VmRSS parsed")
	}
}

// The sampler keeps the sample with the highest VmRSS whole (its parts add
// up), and the highest of each part apart.
func TestMemSamplerPeak(t *testing.T) {
	m := &memSampler{}
	m.add(procMemSample{rss: 10, anon: 2, file: 8}, nil)
	m.add(procMemSample{rss: 14, anon: 5, file: 9}, nil)
	m.add(procMemSample{rss: 12, anon: 1, file: 11}, nil)
	if m.peak.rss != 14 || m.peak.anon != 5 || m.peak.file != 9 {
		t.Fatalf("peak = %+v, want the 14 MB sample", m.peak)
	}
	if m.maxAnon != 5 || m.maxFile != 11 {
		t.Fatalf("max anon %v file %v, want 5 and 11", m.maxAnon, m.maxFile)
	}
}

func TestReadProcMemSelf(t *testing.T) {
	s, err := readProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.anon <= 0 || s.file <= 0 {
		t.Fatalf("RssAnon %v RssFile %v MB, want both above 0", s.anon, s.file)
	}
	// VmRSS is the sum of the three (fs/proc/task_mmu.c task_mem); the
	// counters are read one after the other, so allow a little drift.
	if d := math.Abs(s.rss - (s.anon + s.file + s.shmem)); d > 1 {
		t.Fatalf("VmRSS %v MB, parts add up to %v", s.rss, s.anon+s.file+s.shmem)
	}
	m := sampleMem(os.Getpid())
	peak, _, _, n, err := m.finish(os.Getpid())
	if err != nil || n < 1 || peak.rss <= 0 {
		t.Fatalf("sampler: %d samples, peak %+v, err %v", n, peak, err)
	}
}
