package admin

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// streamTable has n UDP flows and n/4 TCP ones under persistence
// (templates too), made at a few instants so that many expire together
// and the listing's tie order (client text) is exercised.
func streamTable(t *testing.T, n int, now int64) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{Seed: 1})
	mustApply(t, tb,
		"-A -u 172.16.1.100:53 -s rr",
		"-a -u 172.16.1.100:53 -r 172.16.1.5 -m",
		"-a -u 172.16.1.100:53 -r 172.16.1.6 -m",
		"-A -t 172.16.1.100:80 -s rr -p 60",
		"-a -t 172.16.1.100:80 -r 172.16.1.5 -m")
	var p nat.Packet
	for i := range n {
		cli := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8 % 64), byte(i)}), uint16(1000+i%7919))
		at := now + int64(i%5)*int64(time.Second)
		b := nattest.UDP(cli, nattest.AP("172.16.1.100:53"), []byte("q"))
		if i%4 == 0 {
			b = nattest.TCP(cli, nattest.AP("172.16.1.100:80"), nattest.SYN, 0)
		}
		if r := tb.Process(b, &p, at); r.Verdict != nat.Forward {
			t.Fatalf("flow %d: %+v", i, r)
		}
	}
	return tb
}

// countWriter counts the writes CallTo makes: one per streamed part.
type countWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *countWriter) Write(b []byte) (int, error) {
	w.writes++
	return w.buf.Write(b)
}

// tunvsadm -Lnc through the control socket arrives in parts and prints
// exactly what the listing is when made whole; a client that does not ask
// for parts gets it in one answer, as before.
func TestConnListStreams(t *testing.T) {
	now := time.Unix(100000, 0)
	tb := streamTable(t, 6000, now.UnixNano())
	env := Env{Table: tb, Now: func() time.Time { return now }}
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := ListenEnv(path, env, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	args := []string{"-L", "-n", "-c"}
	want, err := ExecuteWith(env, args, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 4*streamPart {
		t.Fatalf("listing of %d bytes: too small to need parts", len(want))
	}

	var got countWriter
	resp, err := CallTo(path, Request{Args: args}, &got)
	if err != nil || resp.Exit != 0 || resp.Error != "" {
		t.Fatalf("CallTo: %+v, %v", resp, err)
	}
	got.buf.WriteString(resp.Output)
	if got.buf.String() != want {
		t.Errorf("streamed listing differs from the whole one (%d against %d bytes)", got.buf.Len(), len(want))
	}
	if got.writes < len(want)/streamPart-1 {
		t.Errorf("%d parts for %d bytes", got.writes, len(want))
	}
	// Call gathers the parts.
	if resp, err := Call(path, Request{Args: args}); err != nil || resp.Output != want {
		t.Errorf("Call: %d bytes, %v", len(resp.Output), err)
	}

	// A client of before (no "stream"): one answer.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(Request{V: ProtocolVersion, Args: args}); err != nil {
		t.Fatal(err)
	}
	var one Response
	if err := json.NewDecoder(c).Decode(&one); err != nil || one.More || one.Output != want {
		t.Errorf("unstreamed answer: more %v, %d bytes, %v", one.More, len(one.Output), err)
	}

	// The listing is what it was when every entry's info was gathered
	// and sorted whole: the entries expiring last first, those expiring
	// together by client text.
	var cs []nat.ConnInfo
	tb.Conns(func(c *nat.Conn) { cs = append(cs, c.Info()) })
	sort.SliceStable(cs, func(i, j int) bool {
		if !cs[i].Expires.Equal(cs[j].Expires) {
			return cs[i].Expires.After(cs[j].Expires)
		}
		return cs[i].Client.String() < cs[j].Client.String()
	})
	var old bytes.Buffer
	for i := range cs {
		printConn(&old, &cs[i], now, FmtNumeric)
	}
	if lines := strings.SplitN(want, "\n", 3); lines[2] != old.String() || len(cs) != tb.Len() {
		t.Errorf("listing differs from the whole-table sort of before")
	}
}

// An ordering of client addresses equal to that of their text.
func TestCompareClients(t *testing.T) {
	aps := []string{"10.0.0.1:999", "10.0.0.1:1000", "10.0.0.10:1", "10.0.0.2:0", "[fd00::1]:80", "[fd00::10]:1", "1.2.3.4:5"}
	for _, a := range aps {
		for _, b := range aps {
			x, y := netip.MustParseAddrPort(a), netip.MustParseAddrPort(b)
			if got, want := compareClients(x, y), strings.Compare(x.String(), y.String()); got != want {
				t.Errorf("compareClients(%v, %v) = %d, want %d", a, b, got, want)
			}
		}
	}
}
