package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestNoDaemonAndUsage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	var out, errb bytes.Buffer
	if code := run([]string{"--socket", sock, "-L", "-n"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "no tunvs daemon is running") {
		t.Errorf("no daemon: exit %d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"--socket", sock, "-A", "-t", "10.0.0.1:80", "-w", "2"}, nil, &out, &errb); code != 2 ||
		errb.String() != "Illegal 'weight' option with the 'add-service' command\n" {
		t.Errorf("bad line: exit %d %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"-h"}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "--persistent-conn") {
		t.Errorf("-h: exit %d", code)
	}
}
