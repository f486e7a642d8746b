//go:build unix

package health

import (
	"os/exec"
	"syscall"
)

// ownGroup runs the command in a process group of its own and kills the
// whole group at the timeout, so that what the shell started dies with it
// and does not keep the check's output pipe open.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
