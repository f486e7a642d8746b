package admin

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/tunvs/tunvs/nat"
)

// A batch (-R) and a writer outside the control socket, as the health
// checks are, racing: every batch is applied whole or not at all (issue
// 14: "a health transition between -R's validation and its apply can
// leave a batch half applied"). The other writer removes and adds back
// the second server the batch edits; a batch refused because the server
// was gone must not have edited the first.
func TestBatchWholeUnderConcurrentChange(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb,
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 1",
		"-a -t 10.0.0.1:80 -r 10.0.0.3 -m -w 1")
	k := nat.ServiceKey{Proto: nat.ProtoTCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}
	rs3 := netip.MustParseAddrPort("10.0.0.3:80")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = tb.DelDest(k, rs3)
			_, _ = tb.AddDest(k, nat.DestConfig{Addr: rs3.Addr(), Port: rs3.Port(), Weight: 1})
		}
	}()
	refused := 0
	for i := range 2000 {
		w := 2 + i%1000
		text := fmt.Sprintf("-e -t 10.0.0.1:80 -r 10.0.0.2 -m -w %d\n-e -t 10.0.0.1:80 -r 10.0.0.3 -m -w %d\n", w, w)
		cmds, lines, err := ParseRulesLines(strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		before := weight(tb, k, "10.0.0.2:80")
		if err := Apply(tb, cmds, lines, &bytes.Buffer{}); err != nil {
			refused++
			if got := weight(tb, k, "10.0.0.2:80"); got != before {
				close(stop)
				wg.Wait()
				t.Fatalf("batch %d refused (%v) but its first command was applied: weight %d, was %d", i, err, got, before)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d of 2000 batches refused", refused)
}

func weight(tb *nat.Table, k nat.ServiceKey, a string) int {
	for _, d := range tb.Service(k).Dests() {
		if d.AddrPort() == netip.MustParseAddrPort(a) {
			return d.Weight()
		}
	}
	return -1
}
