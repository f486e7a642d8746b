package ipvssync

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunvs/tunvs/nat"
)

// The golden vectors in testdata/kernel are datagrams a Linux 6.1 IPVS
// sync master sent (Debian's kernel under qemu): parity's TestSync
// makes them (TUNVS_PARITY=1 TUNVS_SYNC_GOLDEN_WRITE=1 go test -run
// TestSync ./parity/; what the VM does is parity/cmd/ipvsrun/sync.go),
// and runs TestKernelGolden against each fresh capture with
// TUNVS_SYNC_GOLDEN_DIR set. v1-N.bin were sent with sync_version=1,
// v0-N.bin with 0; master.txt has the master's -Lnc and -L --daemon.

// goldenRecord is a record the kernel must have sent.
type goldenRecord struct {
	proto   uint8
	cport   uint16 // offset from the pass's base port; -1: template
	vport   uint16
	dport   uint16
	state   uint16
	flags   uint32
	timeout uint32 // version 1 only
	v6      bool
	// only1: expected in the version 1 pass only (IPv6; the template is
	// new then, and assured from the start of the version 0 pass).
	only1 bool
}

const tpl = 0xffff

// goldenWant: what ipvsrun -sync's connections must produce, in each
// pass (client ports from 40000 in version 1, 41000 in version 0).
var goldenWant = []goldenRecord{
	// +0: established, held open (synced at the third client packet).
	{ProtoTCP, 0, 80, 8080, 1, 0, 900, false, false},
	// +1: the server closes first: FIN_WAIT when the client acknowledges
	// its FIN, TIME_WAIT at the client's FIN; inactive once not
	// established.
	{ProtoTCP, 1, 81, 8081, 1, 0, 900, false, false},
	{ProtoTCP, 1, 81, 8081, 4, FlagInactive, 120, false, false},
	{ProtoTCP, 1, 81, 8081, 5, FlagInactive, 120, false, false},
	// +2: the client closes first: CLOSE_WAIT, then TIME_WAIT.
	{ProtoTCP, 2, 80, 8080, 1, 0, 900, false, false},
	{ProtoTCP, 2, 80, 8080, 7, FlagInactive, 60, false, false},
	{ProtoTCP, 2, 80, 8080, 5, FlagInactive, 120, false, false},
	// +3: reset by the client: CLOSE.
	{ProtoTCP, 3, 80, 8080, 1, 0, 900, false, false},
	{ProtoTCP, 3, 80, 8080, 6, FlagInactive, 10, false, false},
	// +4: UDP, at the third datagram; UDP connections are never active.
	{ProtoUDP, 4, 53, 5353, 0, FlagInactive, 300, false, false},
	// +5: persistent (-p 360): the connection and its template, sent
	// with every client packet of it, assured once it was established.
	{ProtoTCP, 5, 443, 443, 1, 0, 900, false, false},
	{ProtoTCP, tpl, 443, 443, TemplateNone, FlagTemplate | FlagInactive, 360, false, true},
	{ProtoTCP, tpl, 443, 443, TemplateAssured, FlagTemplate | FlagInactive, 360, false, false},
	// +6: IPv6, version 1 only.
	{ProtoTCP, 6, 80, 8080, 1, 0, 900, true, true},
}

func (g goldenRecord) String() string {
	return fmt.Sprintf("proto %d +%d vport %d dport %d state %d flags %#x timeout %d v6 %v", g.proto, g.cport, g.vport, g.dport, g.state, g.flags, g.timeout, g.v6)
}

// matches says whether c is g in the pass whose client ports start at base.
func (g goldenRecord) matches(c *Conn, base uint16, version int) bool {
	client, vip, rs := "10.0.0.2", "10.0.0.100", "10.1.0.1"
	if g.v6 {
		client, vip, rs = "fd00::2", "fd00:100::100", "fd01::1"
	}
	cport := base + g.cport
	if g.cport == tpl {
		cport = 0
	}
	timeout := g.timeout
	if version == 0 {
		timeout = 0
	}
	return c.Proto == g.proto && c.CAddr == netip.MustParseAddr(client) && c.CPort == cport &&
		c.VAddr == netip.MustParseAddr(vip) && c.VPort == g.vport &&
		c.DAddr == netip.MustParseAddr(rs) && c.DPort == g.dport &&
		c.State == g.state && c.Flags == g.flags && c.Timeout == timeout && c.Fwmark == 0 &&
		c.Skip == ReasonNone
}

// TestKernelGolden decodes the kernel's datagrams: every record expected
// is there and nothing else, and encoding what was decoded gives the
// kernel's bytes back.
func TestKernelGolden(t *testing.T) {
	dir := os.Getenv("TUNVS_SYNC_GOLDEN_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "kernel")
	}
	for _, pass := range []struct {
		version int
		base    uint16
	}{{1, 40000}, {0, 41000}} {
		files, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("v%d-*.bin", pass.version)))
		if len(files) == 0 {
			t.Fatalf("no version %d vectors in %s", pass.version, dir)
		}
		seen := make([]bool, len(goldenWant))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var m Message
			if r := m.Decode(b); r != ReasonNone {
				t.Fatalf("%s: refused: %v", f, r)
			}
			if m.Version != pass.version || m.SyncID != 5 {
				t.Errorf("%s: version %d syncid %d, want %d and 5", f, m.Version, m.SyncID, pass.version)
			}
			if len(b) > 1472 {
				t.Errorf("%s: %d bytes, more than the default maxlen", f, len(b))
			}
			for i := range m.Conns {
				c := &m.Conns[i]
				found := false
				for j, g := range goldenWant {
					if g.matches(c, pass.base, pass.version) {
						seen[j], found = true, true
					}
				}
				if !found {
					t.Errorf("%s: unexpected record %+v", f, *c)
				}
			}
			// The kernel fills one buffer at a time: encoding the
			// same records gives the same datagram.
			out := Encode(m.Version, m.SyncID, 1472, m.Conns)
			if len(out) != 1 || !bytes.Equal(out[0], b) {
				t.Errorf("%s: re-encoded differs:\n%x\nkernel:\n%x", f, bytes.Join(out, []byte("|")), b)
			}
		}
		for j, g := range goldenWant {
			if !seen[j] && !(g.only1 && pass.version == 0) {
				t.Errorf("version %d: no record %v", pass.version, g)
			}
		}
	}
	master, err := os.ReadFile(filepath.Join(dir, "master.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(master), "master sync daemon (mcast=sync0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)") {
		t.Errorf("master.txt: no daemon line:\n%s", master)
	}
}

// TestKernelGoldenApplied: the kernel's own datagrams, given to a tunvs
// backup, make the connections the kernel master listed (master.txt),
// tuples, states and templates; version 0's, which carry no timeout,
// with the timeout of their state.
func TestKernelGoldenApplied(t *testing.T) {
	dir := filepath.Join("testdata", "kernel")
	tb := nat.New(nat.Config{})
	b := &BackupDaemon{tb: tb, cfg: Config{SyncID: 5, MaxLen: 1472}}
	now := time.Unix(1_000_000, 0).UnixNano()
	files, _ := filepath.Glob(filepath.Join(dir, "v*.bin"))
	var m Message
	for _, f := range files {
		p, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Process(&m, p, len(p), now)
	}
	if b.Stats.Refused.Load() != 0 || b.Stats.Messages.Load() != uint64(len(files)) {
		t.Fatalf("%d of %d messages applied, %d records refused", b.Stats.Messages.Load(), len(files), b.Stats.Refused.Load())
	}
	got := map[string]bool{}
	tb.Conns(func(c *nat.Conn) {
		i := c.Info()
		got[fmt.Sprintf("%s %s %v %v %v", nat.ProtoName(i.Proto), i.State, i.Client, i.Virtual, i.Dest)] = true
		if !c.Synced() {
			t.Errorf("%v not marked synced", i)
		}
	})
	// The master's last listing: every entry but those that closed
	// after the capture (CLOSE, 10 s) must be on the backup.
	master, err := os.ReadFile(filepath.Join(dir, "master.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(master)
	s = s[strings.LastIndex(s, "# after the version 0 pass"):]
	n := 0
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) != 6 || (f[0] != "TCP" && f[0] != "UDP") || f[2] == "CLOSE" {
			continue
		}
		k := strings.Join([]string{f[0], f[2], f[3], f[4], f[5]}, " ")
		if !got[k] {
			t.Errorf("the backup lacks the master's %s", k)
		}
		n++
	}
	if n < 10 {
		t.Errorf("only %d entries compared", n)
	}
	// A version 0 record has no timeout: its state's.
	c, _ := tb.Lookup(6, netip.MustParseAddrPort("10.0.0.2:41000"), netip.MustParseAddrPort("10.0.0.100:80"))
	if c == nil || c.Expires().Sub(time.Unix(0, now)) != nat.DefaultTimeouts[nat.StateEstablished] {
		t.Errorf("version 0 connection: %+v", c)
	}
}
