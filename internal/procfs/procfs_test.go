package procfs

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with blanks and parentheses in it (a thread may set
	// any 15 bytes: PR_SET_NAME), then the fields up to starttime (22).
	line := "4242 (x) (y) z ) S 1 4242 4242 0 -1 4194560 136 0 0 0 7 3 0 0 20 0 1 0 987654 12345678 400\n"
	s, err := ParseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{1: "4242", 2: "x) (y) z ", 3: "S", 4: "1", 5: "4242", 14: "7", 15: "3", 22: "987654", 24: "400", 25: "", 0: ""} {
		if got := s.Field(n); got != want {
			t.Errorf("field %d = %q, want %q", n, got, want)
		}
	}
	if s.Uint(14) != 7 || s.Uint(15) != 3 || s.Uint(22) != 987654 {
		t.Errorf("utime %d stime %d starttime %d, want 7 3 987654", s.Uint(14), s.Uint(15), s.Uint(22))
	}
	if s.Uint(3) != 0 || s.Uint(30) != 0 {
		t.Errorf("a state or an absent field read as a number: %d %d", s.Uint(3), s.Uint(30))
	}
	for _, bad := range []string{"", "4242 x S 1", "4242 )x( S 1", "(x) S 1"} {
		if _, err := ParseStat(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestStatOfThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc")
	}
	// Name this goroutine's thread with blanks and a ')' and read its stat
	// back (/proc/TID/stat is the thread's). The thread stays locked: it
	// ends with the test's goroutine, name and all.
	runtime.LockOSThread()
	self, err := os.Readlink("/proc/thread-self") // "PID/task/TID"
	if err != nil {
		t.Skip(err)
	}
	tid, err := strconv.Atoi(filepath.Base(self))
	if err != nil {
		t.Fatal(self, err)
	}
	const comm = "a) (b) c"
	if err := os.WriteFile("/proc/thread-self/comm", []byte(comm), 0); err != nil {
		t.Skip(err)
	}
	s, err := StatOf(tid)
	if err != nil {
		t.Fatal(err)
	}
	if s.Field(1) != strconv.Itoa(tid) || s.Field(2) != comm || s.Field(3) != "R" || s.Uint(4) != uint64(os.Getppid()) || s.Uint(22) == 0 {
		t.Fatalf("thread %d named %q: pid %q comm %q state %q ppid %q (want %d) starttime %q", tid, comm, s.Field(1), s.Field(2), s.Field(3), s.Field(4), os.Getppid(), s.Field(22))
	}
	if _, err := StatOf(-1); err == nil {
		t.Fatal("a process that does not exist has a stat line")
	}
}

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
