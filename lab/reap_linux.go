package lab

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tunvs/tunvs/internal/procfs"
)

// reapOrphans is the sandbox init's duty this process has as PID 1 of the
// lab's PID namespace: a process whose parent died is handed to it, and
// its zombie stays until it is waited for. Such a zombie in a lab host's
// own PID namespace (a `tunvs lab exec` or a walk's capture, whose
// nsenter was killed first) would keep the host's namespace from ending:
// the kernel's zap_pid_ns_processes waits for every task of it to be
// reaped, and the keeper's exit with it.
//
// Only those orphans are reaped, never a child this process started and
// waits for itself (os/exec's Wait would then fail): this process forks
// only into its own PID namespace (into a host's, nsenter forks), so a
// child of its in a nested PID namespace (more than one NSpid) is an
// orphan.
func reapOrphans(ctx context.Context) {
	if os.Getpid() != 1 {
		return
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		reapOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func reapOnce() {
	self := strconv.Itoa(os.Getpid())
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A zombie (state, field 3) whose parent (field 4) is this process.
		st, err := procfs.StatOf(pid)
		if err != nil || st.Field(3) != "Z" || st.Field(4) != self || !nestedPID(e.Name()) {
			continue
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// nestedPID tells whether process pid lives in a PID namespace below this
// one: its status's NSpid line has a number for each level.
func nestedPID(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			return len(strings.Fields(rest)) > 1
		}
	}
	return false
}
