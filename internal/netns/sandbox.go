//go:build linux

package netns

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// UnprivilegedUID is the uid and gid a root parent drops to when
// SandboxOptions.Unprivileged is set ("nobody" on most distributions).
const UnprivilegedUID = 65534

// SandboxOptions says how to re-execute a program inside a sandbox.
type SandboxOptions struct {
	// Unprivileged makes the sandbox's creator an ordinary user, so that
	// everything inside runs with no real privilege at all: a root parent
	// first drops to uid/gid UnprivilegedUID with setpriv (and the program
	// is copied to a world-readable place, see CopyExecutable). A non-root
	// parent is unprivileged already and runs unshare directly.
	Unprivileged bool
	// Path is the program to run in the sandbox; empty means this one
	// (os.Executable).
	Path string
	// Args are the program's arguments, without argv[0].
	Args []string
	// Env is added to this process's environment (later entries win).
	Env []string
	// Dir is the working directory; empty means this process's.
	Dir    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Sandboxed is a program prepared to run inside a sandbox. Cmd is exposed
// for inspection and for fields Sandbox does not set; use Start/Wait or Run
// on Sandboxed, not on Cmd, so that the lifeline and the copied executable
// are released.
type Sandboxed struct {
	Cmd *exec.Cmd

	lifelineR  *os.File // the child's end, passed as fd 3
	lifelineW  *os.File // held here: closing it (or dying) ends the sandbox
	removeCopy func() error
	once       sync.Once
	releaseErr error
}

// Sandbox prepares path (normally this program) to run as
//
//	[setpriv --reuid=65534 --regid=65534 --clear-groups --] \
//	unshare --user --map-root-user --net --mount --pid --fork --kill-child --mount-proc -- PATH ARGS...
//
// with EnvSandbox=1, EnvOuterNetns set to this process's network namespace
// and EnvLifeline=3 naming a pipe the parent holds. The child is PID 1 of a
// new PID namespace, so when it exits, or is killed, or notices through the
// lifeline that the parent died, every process and namespace it created
// goes with it. ctx kills the sandbox when done.
//
// Sandbox does not check that the kernel allows it; Probe does, with an
// explanation.
func Sandbox(ctx context.Context, opts SandboxOptions) (*Sandboxed, error) {
	outer, err := readNetnsID()
	if err != nil {
		return nil, fmt.Errorf("netns: cannot record the outer network namespace: %w", err)
	}
	path := opts.Path
	if path == "" {
		if path, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("netns: cannot find this program to re-execute it: %w", err)
		}
	}
	argv, drop, err := sandboxPrefix(opts.Unprivileged)
	if err != nil {
		return nil, err
	}
	s := &Sandboxed{}
	if drop {
		// The dropped user must be able to execute the program; go test's
		// binaries live in 0700 directories.
		copied, remove, err := CopyExecutable(path)
		if err != nil {
			return nil, err
		}
		path, s.removeCopy = copied, remove
	}
	if s.lifelineR, s.lifelineW, err = os.Pipe(); err != nil {
		s.release()
		return nil, fmt.Errorf("netns: lifeline pipe: %w", err)
	}
	argv = append(argv, "--", path)
	argv = append(argv, opts.Args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.Env = append(cmd.Env,
		EnvSandbox+"=1",
		EnvOuterNetns+"="+outer,
		EnvLifeline+"=3", // ExtraFiles[0]
	)
	cmd.ExtraFiles = []*os.File{s.lifelineR}
	cmd.Dir = opts.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	// A server that outlives the sandbox's first process could hold the
	// output pipes open; do not wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	s.Cmd = cmd
	return s, nil
}

// Start starts the sandboxed program.
func (s *Sandboxed) Start() error {
	err := s.Cmd.Start()
	// Only the child needs the read end; keeping ours open would not stop
	// the child from seeing EOF, but it is one descriptor less to leak.
	s.lifelineR.Close()
	if err != nil {
		s.release()
		return fmt.Errorf("netns: start sandbox: %s: %w", strings.Join(s.Cmd.Args, " "), err)
	}
	return nil
}

// Wait waits for the sandboxed program and releases what Sandbox set up.
// Its error is the program's (an *exec.ExitError when it failed).
func (s *Sandboxed) Wait() error {
	err := s.Cmd.Wait()
	if rerr := s.release(); err == nil {
		err = rerr
	}
	return err
}

// Run is Start followed by Wait.
func (s *Sandboxed) Run() error {
	if err := s.Start(); err != nil {
		return err
	}
	return s.Wait()
}

// Close releases what Sandbox set up without running the program, or after
// it. Closing the lifeline of a running sandbox makes it exit. Idempotent.
func (s *Sandboxed) Close() error {
	if s.lifelineR != nil {
		s.lifelineR.Close()
	}
	return s.release()
}

func (s *Sandboxed) release() error {
	s.once.Do(func() {
		if s.lifelineW != nil {
			s.lifelineW.Close()
		}
		if s.removeCopy != nil {
			s.releaseErr = s.removeCopy()
		}
	})
	return s.releaseErr
}

// sandboxPrefix returns the wrapper command line and whether it drops
// privileges.
func sandboxPrefix(unprivileged bool) (argv []string, drop bool, err error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, false, fmt.Errorf("netns: unshare (util-linux) is needed to create a sandbox: %w", err)
	}
	if unprivileged && os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			return nil, false, fmt.Errorf("netns: setpriv (util-linux) is needed to drop to uid %d: %w", UnprivilegedUID, err)
		}
		id := strconv.Itoa(UnprivilegedUID)
		argv = []string{setpriv, "--reuid=" + id, "--regid=" + id, "--clear-groups", "--"}
		drop = true
	}
	// --kill-child: if unshare dies, the child (and with it the PID
	// namespace) dies too. --mount-proc: /proc must show the new PID
	// namespace, or /proc/PID paths would name other processes.
	argv = append(argv, unshare, "--user", "--map-root-user", "--net", "--mount",
		"--pid", "--fork", "--kill-child", "--mount-proc")
	return argv, drop, nil
}

// Probe creates and discards a sandbox with the options' privileges, running
// only `true` inside, and explains any failure: missing tools, unprivileged
// user namespaces disabled (user.max_user_namespaces,
// kernel.unprivileged_userns_clone, AppArmor's
// kernel.apparmor_restrict_unprivileged_userns), or a /proc that cannot be
// mounted. Tests skip with its error text.
func Probe(ctx context.Context, opts SandboxOptions) error {
	argv, drop, err := sandboxPrefix(opts.Unprivileged)
	if err != nil {
		return err
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		return fmt.Errorf("netns: probe needs true(1): %w", err)
	}
	argv = append(argv, "--", truePath)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	if drop {
		who = fmt.Sprintf("uid %d (dropped from %d)", UnprivilegedUID, os.Geteuid())
	}
	return fmt.Errorf("netns: cannot create a sandbox as %s: %s: %w: %s%s",
		who, strings.Join(argv, " "), err, strings.TrimSpace(string(out)),
		diagnose(string(out), readKnobs()))
}

// userns knobs that decide whether unprivileged user namespaces work. Absent
// files are left out: not every kernel has every knob.
var usernsKnobs = []string{
	"/proc/sys/user/max_user_namespaces",
	"/proc/sys/user/max_net_namespaces",
	"/proc/sys/user/max_mnt_namespaces",
	"/proc/sys/user/max_pid_namespaces",
	"/proc/sys/kernel/unprivileged_userns_clone",
	"/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
}

func readKnobs() map[string]string {
	m := map[string]string{}
	for _, p := range usernsKnobs {
		if b, err := os.ReadFile(p); err == nil {
			m[p] = strings.TrimSpace(string(b))
		}
	}
	return m
}

// diagnose turns unshare's output and the knob values into a reason.
func diagnose(out string, knobs map[string]string) string {
	var why []string
	for _, p := range usernsKnobs[:4] {
		if knobs[p] == "0" {
			why = append(why, fmt.Sprintf("%s is 0, so no such namespace may be created", knobName(p)))
		}
	}
	if knobs["/proc/sys/kernel/unprivileged_userns_clone"] == "0" {
		why = append(why, "kernel.unprivileged_userns_clone is 0 (unprivileged user namespaces disabled)")
	}
	if knobs["/proc/sys/kernel/apparmor_restrict_unprivileged_userns"] == "1" {
		why = append(why, "kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor blocks unprivileged user namespaces)")
	}
	if strings.Contains(out, "mount") && strings.Contains(out, "proc") {
		why = append(why, "mounting /proc for the new PID namespace failed (is /proc partly masked, as in many containers?)")
	}
	if strings.Contains(out, "setresuid") || strings.Contains(out, "setpriv") {
		why = append(why, fmt.Sprintf("dropping to uid %d with setpriv failed", UnprivilegedUID))
	}
	if len(why) == 0 && strings.Contains(out, "Operation not permitted") {
		why = append(why, "no sysctl forbids it; a seccomp filter or security module probably blocks unshare(CLONE_NEWUSER), as container runtimes do by default")
	}
	// The values themselves help whoever reads a skip message.
	var vals []string
	for _, p := range usernsKnobs {
		if v, ok := knobs[p]; ok {
			vals = append(vals, knobName(p)+"="+v)
		}
	}
	if len(vals) > 0 {
		why = append(why, strings.Join(vals, " "))
	}
	if len(why) == 0 {
		return ""
	}
	return " (" + strings.Join(why, "; ") + ")"
}

// knobName turns /proc/sys/user/max_user_namespaces into
// user.max_user_namespaces, the name sysctl(8) and documentation use.
func knobName(path string) string {
	return strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
}

// CopyExecutable copies the executable at src into a fresh temporary
// directory that every user may enter (directory 0755, file 0755), so that a
// program dropped to uid 65534 can execute it; `go test` builds test
// binaries in 0700 directories. remove deletes the copy.
//
// The copy is made by cp(1), not by this process: a file this (threaded)
// process had open for writing could be inherited for an instant by a child
// forked concurrently elsewhere, and executing the copy would then fail
// with ETXTBSY.
func CopyExecutable(src string) (dst string, remove func() error, err error) {
	dir, err := os.MkdirTemp("", "tunvs-netns-exec-")
	if err != nil {
		return "", nil, fmt.Errorf("netns: copy executable: %w", err)
	}
	remove = func() error { return os.RemoveAll(dir) }
	fail := func(err error) (string, func() error, error) {
		remove()
		return "", nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(fmt.Errorf("netns: copy executable: %w", err))
	}
	// Every ancestor must be searchable by others too.
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fail(fmt.Errorf("netns: copy executable: %w", err))
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fail(fmt.Errorf("netns: copy executable: %s (mode %v) is not searchable by other users; set TMPDIR to a directory that is", d, fi.Mode().Perm()))
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	dst = filepath.Join(dir, filepath.Base(src))
	cp, err := exec.LookPath("cp")
	if err != nil {
		return fail(fmt.Errorf("netns: copy executable: %w", err))
	}
	if out, err := exec.Command(cp, "--", src, dst).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("netns: copy executable: cp %s %s: %w: %s", src, dst, err, strings.TrimSpace(string(out))))
	}
	if err := os.Chmod(dst, 0o755); err != nil {
		return fail(fmt.Errorf("netns: copy executable: %w", err))
	}
	return dst, remove, nil
}
