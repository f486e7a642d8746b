package lab

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/sched"
)

func TestLabRoundRobin(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := Run(ctx, Config{Scheduler: "rr"}, 6, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	// With rr the first connection goes to the server added last, as
	// the kernel's did in LAB.md.
	for i, want := range []string{"Proxy02", "Proxy01", "Proxy02", "Proxy01", "Proxy02", "Proxy01"} {
		if line := fmt.Sprintf("%d: %s Real Server\n", i+1, want); !strings.Contains(s, line) {
			t.Errorf("missing %q in:\n%s", line, s)
		}
	}
	for _, want := range []string{
		"  -> 172.16.1.5:80                Masq    1      0          3         \n",
		"  -> 172.16.1.6:80                Masq    1      0          3         \n",
		"TCP  172.16.1.100:80                     6",
		"TIME_WAIT   10.0.0.10:",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
}

// Every scheduler serves every request, and the table counts what the
// client saw. The ones that balance sequential connections from one client
// must use every server; the others by design do not: sh, dh, mh and
// lblc(r) pin a client or destination to a server, fo takes the heaviest,
// sed and nq count only active connections (none, between requests), ovf
// fills the first server up to its weight, twos is random.
func TestLabSchedulers(t *testing.T) {
	for _, name := range sched.Names() {
		t.Run(name, func(t *testing.T) {
			l, err := New(Config{Scheduler: name, Servers: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			seen := map[string]int{}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for range 12 {
				body, err := l.Get(ctx)
				if err != nil {
					t.Fatal(err)
				}
				seen[body]++
			}
			spreads := map[string]bool{"rr": true, "wrr": true, "wlc": true, "lc": true}
			if spreads[name] && len(seen) != 3 {
				t.Errorf("%s used %d servers: %v", name, len(seen), seen)
			}
			total := 0
			for _, d := range l.NAT().Services()[0].Dests() {
				st := d.Stats.Snapshot()
				total += int(st.Conns)
				name := RealServerName(int(d.Addr.As4()[3]) - 5)
				if int(st.Conns) != seen[name] {
					t.Errorf("%v: table says %d connections, client saw %d", d.Addr, st.Conns, seen[name])
				}
			}
			if total != 12 {
				t.Errorf("table counts %d connections, want 12", total)
			}
		})
	}
}

// The in-process lab with full NAT: the real servers' gateway is not the
// director (nothing answers at LabGateway), yet every request is served,
// each connection holding the local address.
func TestLabFullNAT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := New(Config{FullNAT: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, want := range []string{"Proxy02", "Proxy01", "Proxy02", "Proxy01"} {
		got, err := l.Get(ctx)
		if err != nil || got != want+" Real Server" {
			t.Fatalf("request %d: %q, %v", i+1, got, err)
		}
	}
	n := 0
	l.NAT().Conns(func(c *nat.Conn) {
		if c.Local().Addr() != LocalAddr {
			t.Errorf("connection %+v without the local address", c.Info())
		}
		n++
	})
	if n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
}
