package procfs

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	st := "Name:\thaproxy\nUmask:\t0022\nVmHWM:\t   16076 kB\nVmRSS:\t   15360 kB\nRssAnon:\t    4608 kB\nThreads:\t3\nCpus_allowed_list:\t0-1\nnonvoluntary_ctxt_switches:\t17\n"
	m := ParseStatus(st)
	for k, want := range map[string]int64{"VmHWM": 16076, "VmRSS": 15360, "RssAnon": 4608, "Threads": 3, "nonvoluntary_ctxt_switches": 17} {
		if m[k] != want {
			t.Errorf("%s = %d, want %d", k, m[k], want)
		}
	}
	for _, k := range []string{"Name", "Cpus_allowed_list"} {
		if _, ok := m[k]; ok {
			t.Errorf("%s parsed as a number", k)
		}
	}
}

func TestSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc")
	}
	m, err := StatusKB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m["VmRSS"] <= 0 || m["RssAnon"] <= 0 || m["RssFile"] <= 0 {
		t.Fatalf("VmRSS %d RssAnon %d RssFile %d kB, want all above 0", m["VmRSS"], m["RssAnon"], m["RssFile"])
	}
	// Spin until the run time grows: a running thread's is brought up
	// to date at the scheduler's tick or when it is switched out.
	s0, err := SchedOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		for x := 0; x < 1e6; x++ {
			runtime.KeepAlive(x)
		}
		s1, err := SchedOf(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if s1.Run > s0.Run {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("run time still %v after %v of spinning", s1.Run, time.Since(start))
		}
	}
	if _, err := SchedOf(-1); err == nil {
		t.Fatal("a process that does not exist has threads")
	}
}
