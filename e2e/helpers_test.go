//go:build linux

package e2e

import (
	"bytes"
	"sync"
	"testing"

	"github.com/tunvs/tunvs/internal/netns"
)

// lockedBuffer collects a daemon's output: exec's copying goroutine writes
// while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// inSandboxes runs fn in a fresh sandbox twice: created by root ("root")
// and by uid 65534 ("uid65534", the unprivileged headline case).
func inSandboxes(t *testing.T, fn func(t *testing.T)) { netns.InSandboxes(t, fn) }
