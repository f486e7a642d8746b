package parity

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSync boots the parity VM once for the sync daemon's two checks
// against a real kernel (ipvsrun -sync and -sync-interop).
//
// golden: a kernel IPVS sync master with connections in every state the
// protocol carries (cmd/ipvsrun/sync.go) has its datagrams recorded, and
// ipvssync's TestKernelGolden runs against them: the checks the committed
// vectors (ipvssync/testdata/kernel) pass must hold for a fresh capture.
// TUNVS_SYNC_GOLDEN_WRITE=1 replaces the committed vectors with it.
//
// interop: kernel IPVS and tunvs are each other's sync master and backup
// on one link (cmd/ipvsrun/interop.go): the kernel master (syncid 5) with
// tunvs as its backup, tunvs as master (syncid 6) with the kernel as its
// backup. Each backup's -Lnc must list what its master lists: the same
// tuples, states and templates, each expiring within the flush delay of
// the master's.
func TestSync(t *testing.T) {
	env := vmEnv(t)
	job := t.TempDir()
	buildForVM(t, job, "../cmd/tunvs", "../cmd/tunvsadm")
	console, exit, _, err := bootVM(t, job, env, "/job/ipvsrun -timeout 20s -sync /job/golden -sync-interop /job/interop")
	if err != nil || exit != "0" {
		logB, _ := os.ReadFile(filepath.Join(job, "interop", "tunvs.log"))
		t.Fatalf("VM run failed (qemu: %v, in-VM exit %q); console:\n%s\ntunvs log:\n%s", err, exit, console, logB)
	}
	t.Run("golden", func(t *testing.T) { syncGoldenCheck(t, goTool(), filepath.Join(job, "golden")) })
	t.Run("interop", func(t *testing.T) { syncInteropCheck(t, filepath.Join(job, "interop")) })
}

// vmEnv skips the test unless TUNVS_PARITY=1 and returns what
// parity/setup.sh prepared for the VM.
func vmEnv(t *testing.T) map[string]string {
	t.Helper()
	if os.Getenv("TUNVS_PARITY") != "1" {
		t.Skip("boots Debian's kernel under qemu: run `make ipvs-parity`, or set TUNVS_PARITY=1")
	}
	env, err := readEnv(filepath.Join(cacheDir(), "parity.env"))
	if err != nil {
		t.Fatalf("%v: run parity/setup.sh first", err)
	}
	return env
}

func syncGoldenCheck(t *testing.T, goBin, golden string) {
	if testing.Verbose() {
		b, _ := os.ReadFile(filepath.Join(golden, "master.txt"))
		t.Logf("kernel master:\n%s", b)
	}
	if os.Getenv("TUNVS_SYNC_GOLDEN_WRITE") == "1" {
		dst := filepath.Join("..", "ipvssync", "testdata", "kernel")
		old, _ := filepath.Glob(filepath.Join(dst, "*.bin"))
		old = append(old, filepath.Join(dst, "master.txt"))
		for _, f := range old {
			os.Remove(f)
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
	cmd := exec.Command(goBin, "test", "-count=1", "-run", "^TestKernelGolden$", "-v", "../ipvssync/")
	cmd.Env = append(os.Environ(), "TUNVS_SYNC_GOLDEN_DIR="+golden)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ipvssync against a fresh capture: %v\n%s", err, out)
	}
	t.Logf("ipvssync against a fresh capture:\n%s", out)
}

func syncInteropCheck(t *testing.T, dir string) {
	kb, err := os.ReadFile(filepath.Join(dir, "kernel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ub, err := os.ReadFile(filepath.Join(dir, "tunvs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel:\n%s\ntunvs:\n%s", kb, ub)
	kernel, tunvs := parseConnList(string(kb)), parseConnList(string(ub))
	// The kernel's master and tunvs's backup (syncid 5), then tunvs's
	// master and the kernel's backup (syncid 6), by their VIPs.
	ofKernel := func(vip string) bool {
		return strings.HasPrefix(vip, "10.0.0.100:") || strings.HasPrefix(vip, "[fd00:100::100]:")
	}
	ofTunvs := func(vip string) bool { return strings.HasPrefix(vip, "10.3.0.100:") }
	n := compareSynced(t, "kernel master -> tunvs backup", kernel, tunvs, ofKernel)
	n += compareSynced(t, "tunvs master -> kernel backup", tunvs, kernel, ofTunvs)
	if n < 10 {
		t.Errorf("only %d connections compared", n)
	}
	// The SYN-proxied connection, whose records carry the sequence option
	// and tunvs's own optional one, is on the kernel backup: the kernel
	// skipped the option and took the record.
	proxied := false
	for k := range kernel {
		proxied = proxied || strings.Contains(k, "10.4.0.2:42004") && strings.Contains(k, "10.3.0.100:8443")
	}
	if !proxied {
		t.Errorf("the kernel backup lacks the SYN-proxied connection 10.4.0.2:42004 -> 10.3.0.100:8443")
	}
	for _, want := range []string{
		"master sync daemon (mcast=tvs0, syncid=6, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
		"backup sync daemon (mcast=tvs0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
	} {
		if !strings.Contains(string(ub), want) {
			t.Errorf("tunvsadm -L --daemon lacks %q", want)
		}
	}
	for _, want := range []string{
		"master sync daemon (mcast=sync0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
		"backup sync daemon (mcast=sync0, syncid=6, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
	} {
		if !strings.Contains(string(kb), want) {
			t.Errorf("ipvsadm -L --daemon lacks %q", want)
		}
	}
}

// connEntry is a line of -Lnc: its key (protocol, state, the three
// addresses) and when it expires, as the interval [lo, hi] in Unix ms
// that the listing's time and its whole seconds allow.
type connEntry struct {
	key    string
	vip    string
	expire int // seconds, as listed
	lo, hi int64
}

// parseConnList reads a listing with its "# taken START END" line.
func parseConnList(s string) map[string]connEntry {
	var start, end int64
	for _, l := range strings.Split(s, "\n") {
		fmt.Sscanf(l, "# taken %d %d", &start, &end)
	}
	m := map[string]connEntry{}
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) != 6 || (f[0] != "TCP" && f[0] != "UDP") {
			continue
		}
		var mm, ss int
		if _, err := fmt.Sscanf(f[1], "%d:%d", &mm, &ss); err != nil {
			continue
		}
		k := strings.Join([]string{f[0], f[2], f[3], f[4], f[5]}, " ")
		e := mm*60 + ss
		m[k] = connEntry{key: k, vip: f[4], expire: e, lo: start + int64(e)*1000, hi: end + int64(e+1)*1000}
	}
	return m
}

// flushSlack is how much later a backup's entry may expire than its
// master's: the master sends a record within 3 s (a 2 s flush, checked
// every second); and a little earlier, as a master's later packets that
// are not sent move its expiry on.
const flushSlack = 3500

// compareSynced checks that backup lists every entry of master (those
// of interest), expiring within the flush delay of it, and nothing else;
// entries about to expire on one side may be gone from the other.
func compareSynced(t *testing.T, what string, master, backup map[string]connEntry, of func(vip string) bool) int {
	t.Helper()
	n := 0
	for k, m := range master {
		if !of(m.vip) {
			continue
		}
		b, ok := backup[k]
		switch {
		case !ok && m.expire <= 5:
		case !ok:
			t.Errorf("%s: the backup lacks %s (master: %ds)", what, k, m.expire)
		case b.hi < m.lo-flushSlack || b.lo > m.hi+flushSlack:
			t.Errorf("%s: %s expires at %d..%d ms on the backup, %d..%d on the master (slack %d)", what, k, b.lo, b.hi, m.lo, m.hi, flushSlack)
		default:
			n++
		}
	}
	for k, b := range backup {
		if _, ok := master[k]; !ok && of(b.vip) && b.expire > 5 {
			t.Errorf("%s: the backup has %s (%ds), the master not", what, k, b.expire)
		}
	}
	return n
}
