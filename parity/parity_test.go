package parity

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestScenariosTunvs runs every scenario against tunvs only (no VM): the
// files parse and no step fails inside the harness itself. Cheap; part of
// plain `go test ./...`.
func TestScenariosTunvs(t *testing.T) {
	for _, dir := range []string{"scenarios", "scenarios/pending"} {
		scs, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range scs {
			r := RunTunvs(sc)
			for _, ev := range r.Events {
				if strings.HasPrefix(ev.Outcome, "error: ") {
					t.Errorf("%s/%s:%d %s: %s %s", dir, sc.Name, ev.Line, ev.Step, ev.Outcome, ev.Detail)
				}
			}
		}
	}
}

func cacheDir() string {
	if d := os.Getenv("TUNVS_PARITY_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/tunvs-parity"
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "tunvs-parity")
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".cache", "tunvs-parity")
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			m[k] = v
		}
	}
	return m, s.Err()
}

type scenarioRun struct {
	sc      *Scenario
	pending bool
}

// TestIPVSParity boots Debian's kernel under qemu once, runs every scenario
// there against kernel IPVS (ipvsrun), then against tunvs, and diffs them.
// Scenarios in scenarios/pending/ run too, but their differences are only
// logged: they cover what tunvs does not implement yet.
func TestIPVSParity(t *testing.T) {
	if os.Getenv("TUNVS_PARITY") != "1" {
		t.Skip("boots Debian's kernel under qemu (minutes; needs parity/setup.sh, normally as root): run `make ipvs-parity`, or set TUNVS_PARITY=1")
	}
	envPath := filepath.Join(cacheDir(), "parity.env")
	env, err := readEnv(envPath)
	if err != nil {
		t.Fatalf("%v: run parity/setup.sh first", err)
	}
	var runs []scenarioRun
	for _, d := range []struct {
		dir     string
		pending bool
	}{{"scenarios", false}, {"scenarios/pending", true}} {
		scs, err := Load(d.dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range scs {
			runs = append(runs, scenarioRun{sc, d.pending})
		}
	}
	if only := os.Getenv("TUNVS_PARITY_ONLY"); only != "" {
		var keep []scenarioRun
		for _, r := range runs {
			if strings.Contains(r.sc.Name, only) {
				keep = append(keep, r)
			}
		}
		runs = keep
	}
	if len(runs) == 0 {
		t.Fatal("no scenarios")
	}

	var b []byte
	if replay := os.Getenv("TUNVS_PARITY_REPLAY"); replay != "" {
		// The kernel's answers kept by an earlier run (TUNVS_PARITY_KEEP),
		// for working on tunvs without booting the VM again.
		if b, err = os.ReadFile(replay); err != nil {
			t.Fatal(err)
		}
	} else {
		b = runVM(t, env, runs)
	}
	var kernel []Result
	if err := json.Unmarshal(b, &kernel); err != nil {
		t.Fatal(err)
	}
	if len(kernel) != len(runs) {
		t.Fatalf("VM returned %d results for %d scenarios", len(kernel), len(runs))
	}
	if dir := os.Getenv("TUNVS_PARITY_KEEP"); dir != "" {
		// Keep the kernel's answers (to study a diff offline).
		if err := os.WriteFile(filepath.Join(dir, "kernel-results.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var matched, pendingMatched, pendingDiff []string
	for i, run := range runs {
		k := kernel[i]
		name := run.sc.Name
		if run.pending {
			name = "pending/" + name
		}
		t.Run(name, func(t *testing.T) {
			if k.Error != "" {
				t.Fatalf("VM side: %s", k.Error)
			}
			u := RunTunvs(run.sc)
			diffs := Diff(k, u)
			switch {
			case len(diffs) == 0 && run.pending:
				pendingMatched = append(pendingMatched, name)
				t.Logf("pending scenario now matches the kernel: move it to scenarios/")
			case len(diffs) == 0:
				matched = append(matched, name)
			case run.pending:
				pendingDiff = append(pendingDiff, name)
				t.Logf("pending (not a failure): %d differences from the kernel:\n%s", len(diffs), strings.Join(diffs, "\n"))
			default:
				t.Errorf("%d differences from the kernel (treat as tunvs bugs):\n%s", len(diffs), strings.Join(diffs, "\n"))
			}
		})
	}
	t.Logf("match: %v", matched)
	t.Logf("pending, now matching: %v", pendingMatched)
	t.Logf("pending, still different: %v", pendingDiff)
}

// Diff compares the kernel's and tunvs's runs of one scenario, step by
// step: the outcome of every step, listings after trimming trailing blanks.
func Diff(kernel, tunvs Result) []string {
	var out []string
	n := max(len(kernel.Events), len(tunvs.Events))
	for i := range n {
		if i >= len(kernel.Events) || i >= len(tunvs.Events) {
			out = append(out, fmt.Sprintf("event %d: kernel has %d events, tunvs %d", i, len(kernel.Events), len(tunvs.Events)))
			break
		}
		k, u := kernel.Events[i], tunvs.Events[i]
		if k.Step != u.Step {
			out = append(out, fmt.Sprintf("event %d: steps differ: kernel %q, tunvs %q", i, k.Step, u.Step))
			break
		}
		if d, ok := diffLive(k); ok {
			if d != "" {
				out = append(out, d)
			}
			continue
		}
		if k.Step == StepNodeExporter {
			if k.Outcome == NodeExporterMissing {
				continue
			}
			kl, ul := maskNodeTraffic(k.Outcome), maskNodeTraffic(u.Outcome)
			if kl != ul {
				out = append(out, fmt.Sprintf("line %d: node_exporter's IPVS series differ:\n--- node_exporter (kernel)\n%s\n+++ tunvs\n%s", k.Line, indent(kl), indent(ul)))
			}
			continue
		}
		if strings.HasPrefix(k.Step, StepCmd+" ") || k.Step == StepCmd {
			if k.Outcome != u.Outcome {
				out = append(out, fmt.Sprintf("line %d: %s:\n--- ipvsadm (kernel)\n%s\n+++ tunvsadm (tunvs)\n%s", k.Line, k.Step, indent(k.Outcome), indent(u.Outcome)))
			}
			continue
		}
		if strings.HasPrefix(k.Step, "list") {
			kl, ul := TrimListing(k.Outcome), TrimListing(u.Outcome)
			if kl != ul {
				out = append(out, fmt.Sprintf("line %d: list differs:\n--- ipvsadm -L -n (kernel)\n%s\n+++ tunvsadm -L -n (tunvs)\n%s", k.Line, indent(kl), indent(ul)))
			}
			continue
		}
		if k.Outcome != u.Outcome {
			d := fmt.Sprintf("line %d: %s: kernel %s, tunvs %s", k.Line, k.Step, k.Outcome, u.Outcome)
			if k.Detail != "" || u.Detail != "" {
				d += fmt.Sprintf(" (kernel: %s; tunvs: %s)", k.Detail, u.Detail)
			}
			out = append(out, d)
		}
	}
	return out
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// bootVM boots Debian's kernel under qemu with the job directory at /job
// (vm/run.sh and a static ipvsrun copied there first) and waits for it to
// power off. run, if set, is the command vm/run.sh runs instead of the
// scenarios. It returns the console, the in-VM exit status and the time
// the VM took; err is qemu's.
func bootVM(t *testing.T, job string, env map[string]string, run string) (console []byte, exit string, took time.Duration, err error) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	runSh, err := os.ReadFile("vm/run.sh")
	must(err)
	must(os.WriteFile(filepath.Join(job, "run.sh"), runSh, 0o755))
	vars := fmt.Sprintf("KVER=%s\nMODDIR=%s\nNODE_EXPORTER=%s\n", env["KVER"], env["MODDIR"], env["NODE_EXPORTER"])
	if run != "" {
		vars += fmt.Sprintf("RUN='%s'\n", run)
	}
	must(os.WriteFile(filepath.Join(job, "env"), []byte(vars), 0o644))
	buildForVM(t, job, "./cmd/ipvsrun")

	// Boot. TCG by default: the KVM device of some hosts (firecracker-
	// style) does not run stock kernels. TUNVS_PARITY_ACCEL=kvm overrides.
	accel := os.Getenv("TUNVS_PARITY_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	limit := 25 * time.Minute
	if s := os.Getenv("TUNVS_PARITY_VM_TIMEOUT"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			limit = d
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	smp := min(runtime.NumCPU(), 4)
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-machine", "q35", "-accel", accel, "-cpu", "max", "-smp", fmt.Sprint(smp), "-m", "1024",
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-kernel", env["KERNEL"], "-initrd", env["INITRD"],
		"-append", "console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path="+job+",mount_tag=job,security_model=none,multidevs=remap",
	)
	cf, err := os.Create(filepath.Join(job, "console.log"))
	must(err)
	qemu.Stdout, qemu.Stderr = cf, cf
	t0 := time.Now()
	err = qemu.Run()
	cf.Close()
	took = time.Since(t0)
	t.Logf("VM: qemu -accel %s, %d CPUs, %v", accel, smp, took.Round(100*time.Millisecond))
	console, _ = os.ReadFile(filepath.Join(job, "console.log"))
	exitB, _ := os.ReadFile(filepath.Join(job, "exit"))
	return console, strings.TrimSpace(string(exitB)), took, err
}

// goTool is the go command of the toolchain running the test.
func goTool() string {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		return "go"
	}
	return goBin
}

// buildForVM builds each package's command statically for the VM into
// the job directory, named after the package's last element.
func buildForVM(t *testing.T, job string, pkgs ...string) {
	t.Helper()
	for _, pkg := range pkgs {
		build := exec.Command(goTool(), "build", "-o", filepath.Join(job, filepath.Base(pkg)), pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
}

// runVM runs the scenarios in the VM and returns its results.json.
func runVM(t *testing.T, env map[string]string, runs []scenarioRun) []byte {
	// The job directory, shared read-write with the VM at /job.
	job := t.TempDir()
	if err := os.Mkdir(filepath.Join(job, "scenarios"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, r := range runs {
		src := filepath.Join("scenarios", r.sc.Name+".txt")
		if r.pending {
			src = filepath.Join("scenarios", "pending", r.sc.Name+".txt")
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// ipvsrun takes them in glob order: keep ours.
		if err := os.WriteFile(filepath.Join(job, "scenarios", fmt.Sprintf("%03d_%s.txt", i, r.sc.Name)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range runs {
		if r.sc.Live() {
			// keepalived's checkers against tunvs run's (live.go).
			buildForVM(t, job, "../cmd/tunvs", "../cmd/tunvsadm")
			break
		}
	}
	log, exit, boot, err := bootVM(t, job, env, "")
	t.Logf("VM ran %d scenarios in %v", len(runs), boot.Round(100*time.Millisecond))
	b, rerr := os.ReadFile(filepath.Join(job, "results.json"))
	if err != nil || rerr != nil {
		t.Fatalf("VM run failed (qemu: %v, in-VM exit %q, results: %v); console:\n%s", err, exit, rerr, log)
	}
	if testing.Verbose() || exit != "0" {
		t.Logf("console (in-VM exit %s):\n%s", exit, log)
	}
	return b
}

// maskNodeTraffic hides the values of node_exporter's packet and byte
// totals: the kernel's count what real TCP stacks sent (options such as
// timestamps lengthen every segment; delayed ACKs change the count), and
// tunvs's the fixed, option-less exchange parity pushes through it.
// Names, HELP, TYPE, labels and every other value are compared.
func maskNodeTraffic(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		for _, n := range []string{"node_ipvs_incoming_packets_total ", "node_ipvs_outgoing_packets_total ",
			"node_ipvs_incoming_bytes_total ", "node_ipvs_outgoing_bytes_total "} {
			if strings.HasPrefix(l, n) {
				lines[i] = n + "(traffic)"
			}
		}
	}
	return strings.Join(lines, "\n")
}
