package parity

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeepalivedSamplesCurrent: every scenarios/keepalived_sample_*.txt
// (pending/ for PendingSamples) is what KeepalivedSampleCase makes of the
// sample.
func TestKeepalivedSamplesCurrent(t *testing.T) {
	for _, name := range KeepalivedSamples {
		text, err := os.ReadFile(filepath.Join("..", "keepalived", "testdata", "keepalived.conf."+name))
		if err != nil {
			t.Fatal(err)
		}
		checkGenerated(t, filepath.Join("scenarios", KeepalivedSampleFile(name)), KeepalivedSampleCase(name, string(text)), "TestKeepalivedSamplesCurrent")
	}
}
