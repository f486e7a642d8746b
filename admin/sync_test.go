package admin

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/nat"
)

// nullLink is a Transport with one link, eth0, whose sockets go nowhere.
type nullLink struct{}

func (nullLink) LinkMTU(name string) (int, error) {
	if name != "eth0" {
		return 0, errors.New("no such link")
	}
	return 1500, nil
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) Close() error                { return nil }

func (nullLink) MulticastSender(string, netip.AddrPort, uint8) (io.WriteCloser, error) {
	return discard{}, nil
}

func (nullLink) MulticastListener(string, netip.AddrPort) (net.PacketConn, error) {
	return net.ListenPacket("udp", "127.0.0.1:0")
}

// TestDaemonCommands: tunvsadm --start-daemon and --stop-daemon run the
// sync daemons, -L --daemon lists them as ipvsadm does, and the kernel's
// refusals read as ipvsadm prints them.
func TestDaemonCommands(t *testing.T) {
	tb := nat.New(nat.Config{})
	sd := ipvssync.NewDaemons(tb, nullLink{}, nil, zerolog.Nop())
	defer sd.Close()
	env := Env{Table: tb, Sync: sd}
	run := func(line string) (string, error) {
		c, err := Parse(strings.Fields(line))
		if err != nil {
			return "", err
		}
		var w bytes.Buffer
		err = ApplyWith(env, []Command{c}, nil, &w)
		return w.String(), err
	}
	for _, line := range []string{
		"--start-daemon master --mcast-interface eth0 --syncid 5",
		"--start-daemon backup --mcast-interface eth0 --syncid 5 --sync-maxlen 2000 --mcast-group 224.0.0.82 --mcast-port 9000 --mcast-ttl 3",
	} {
		if _, err := run(line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	out, err := run("-L --daemon")
	want := "master sync daemon (mcast=eth0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
		"backup sync daemon (mcast=eth0, syncid=5, maxlen=2000, group=224.0.0.82, port=9000, ttl=3)\n"
	if err != nil || out != want {
		t.Fatalf("-L --daemon: %v\n%s\nwant\n%s", err, out, want)
	}
	if _, err := run("--start-daemon master --mcast-interface eth0"); err == nil || err.Error() != "Daemon has already run" {
		t.Errorf("second master: %v", err)
	}
	for _, line := range []string{"--stop-daemon master", "--stop-daemon backup"} {
		if _, err := run(line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	if _, err := run("--stop-daemon backup"); err == nil || err.Error() != "No daemon is running" {
		t.Errorf("stop again: %v", err)
	}
	if _, err := run("--start-daemon master --mcast-interface eth9"); err == nil || !strings.HasPrefix(err.Error(), "Invalid argument") {
		t.Errorf("unknown link: %v", err)
	}
	if out, err := run("-L --daemon"); err != nil || out != "" {
		t.Errorf("-L --daemon with none: %q %v", out, err)
	}
	// Without daemons (a plain table), refused.
	c, _ := Parse(strings.Fields("--start-daemon master --mcast-interface eth0"))
	if err := Apply(tb, []Command{c}, nil, io.Discard); err == nil {
		t.Error("started without daemons")
	}
}
