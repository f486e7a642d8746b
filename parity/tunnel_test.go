package parity

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTunnel boots the parity VM once for tunnelling (-i) end to end
// (cmd/ipvsrun/tunnel.go): a tunvs director on TUN and TAP devices sends
// a client's connections encapsulated (ipip, gue with a checksum, gre
// with a checksum, IPv6 in IPv6) to real servers whose Debian kernel
// decapsulates them and answers the client directly; the schedule, path
// MTU discovery through the tunnel (200 kB uploads; a kernel router's
// "fragmentation needed" about a tunnelled packet relayed by tunvs to the
// client) and tunvs's counters
// are checked, as root and again as uid 65534 in a user namespace. This
// host's kernel has no ipip, gre or fou; the VM's has.
func TestTunnel(t *testing.T) {
	env := vmEnv(t)
	job := t.TempDir()
	buildForVM(t, job, "../cmd/tunvs", "../cmd/tunvsadm")
	console, exit, _, err := bootVM(t, job, env, "/job/ipvsrun -timeout 10s -tunnel /job/tunnel")
	for _, run := range []string{"root", "userns"} {
		for _, f := range []string{"report.txt", "tunvs.log"} {
			if b, err := os.ReadFile(filepath.Join(job, "tunnel", run, f)); err == nil {
				t.Logf("%s, %s:\n%s", run, f, b)
			}
		}
	}
	if err != nil || exit != "0" {
		t.Fatalf("VM run failed (qemu: %v, in-VM exit %q); console:\n%s", err, exit, console)
	}
}
