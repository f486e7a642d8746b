package parity

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSyncGolden boots the parity VM, runs a kernel IPVS sync master with
// connections in every state the protocol carries (ipvsrun -sync: see
// cmd/ipvsrun/sync.go), records the datagrams it sends, and runs
// ipvssync's TestKernelGolden against them: the checks the committed
// vectors (ipvssync/testdata/kernel) pass must hold for a fresh capture.
// TUNVS_SYNC_GOLDEN_WRITE=1 replaces the committed vectors with it.
func TestSyncGolden(t *testing.T) {
	if os.Getenv("TUNVS_PARITY") != "1" {
		t.Skip("boots Debian's kernel under qemu: run `make ipvs-parity`, or set TUNVS_PARITY=1")
	}
	env, err := readEnv(filepath.Join(cacheDir(), "parity.env"))
	if err != nil {
		t.Fatalf("%v: run parity/setup.sh first", err)
	}
	job := t.TempDir()
	console, exit, _, err := bootVM(t, job, env, "/job/ipvsrun -sync /job/golden")
	if err != nil || exit != "0" {
		t.Fatalf("VM run failed (qemu: %v, in-VM exit %q); console:\n%s", err, exit, console)
	}
	golden := filepath.Join(job, "golden")
	if testing.Verbose() {
		b, _ := os.ReadFile(filepath.Join(golden, "master.txt"))
		t.Logf("kernel master:\n%s", b)
	}
	if os.Getenv("TUNVS_SYNC_GOLDEN_WRITE") == "1" {
		dst := filepath.Join("..", "ipvssync", "testdata", "kernel")
		old, _ := filepath.Glob(filepath.Join(dst, "*"))
		for _, f := range old {
			os.Remove(f)
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		fs, _ := os.ReadDir(golden)
		var names []string
		for _, f := range fs {
			b, err := os.ReadFile(filepath.Join(golden, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, f.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
			names = append(names, f.Name())
		}
		t.Logf("wrote %s to %s", strings.Join(names, " "), dst)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "test", "-count=1", "-run", "^TestKernelGolden$", "-v", "../ipvssync/")
	cmd.Env = append(os.Environ(), "TUNVS_SYNC_GOLDEN_DIR="+golden)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipvssync against a fresh capture: %v\n%s", err, out)
	}
	t.Logf("ipvssync against a fresh capture:\n%s", out)
}
