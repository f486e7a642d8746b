package admin

import (
	"strings"
	"testing"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// Tunnelling real servers list as ipvsadm 1.31 lists them: Tunnel, with
// the service's port; --tun-info shows fwd_tun_info's words, -S saves
// print_tunnel_rule's options, and -R of that makes them again. -e
// changes the encapsulation.
func TestTunnelListing(t *testing.T) {
	tb := nat.New(nat.Config{})
	mustApply(t, tb, "-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 10.0.0.2 -i -w 2",
		"-a -t 10.0.0.1:80 -r 10.0.0.3:8080 -i --tun-type gue --tun-port 6080 --tun-csum",
		"-a -t 10.0.0.1:80 -r 10.0.0.4 -i --tun-type gre --tun-csum",
		"-a -t 10.0.0.1:80 -r 10.0.0.5 -i --tun-type gue --tun-port 5555",
		"-a -t 10.0.0.1:80 -r 10.0.0.6 -i --tun-type gre")
	listingHas(t, tb, []listingLine{
		{"-L -n", "  -> 10.0.0.2:80                  Tunnel  2      0          0         \n"},
		{"-L -n", "  -> 10.0.0.3:80                  Tunnel  1      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.2:80                  Tunnel  ipip          2      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.3:80                  Tunnel  gue:6080:+c   1      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.4:80                  Tunnel  gre:+c        1      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.5:80                  Tunnel  gue:5555:-c   1      0          0         \n"},
		{"-L -n --tun-info", "  -> 10.0.0.6:80                  Tunnel  gre:-c        1      0          0         \n"},
		{"-S -n", "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -i -w 2 --tun-type ipip\n"},
		{"-S -n", "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n"},
		{"-S -n", "-a -t 10.0.0.1:80 -r 10.0.0.4:80 -i -w 1 --tun-type gre --tun-csum\n"},
		{"-S -n", "-a -t 10.0.0.1:80 -r 10.0.0.5:80 -i -w 1 --tun-type gue --tun-port 5555 --tun-nocsum\n"},
	})
	tb2 := saveRestore(t, tb)
	got := tb2.Rules().Services[0].Servers
	var gue *rules.Server
	for i := range got {
		if got[i].Addr.Addr().String() == "10.0.0.3" {
			gue = &got[i]
		}
	}
	if gue == nil || gue.Method != rules.Tunnel || gue.Tun != (rules.Encap{Type: rules.TunGUE, Port: 6080, Flags: rules.TunCsum}) {
		t.Errorf("after -R: %+v", gue)
	}
	// -e sends the whole server: the encapsulation changes, and a
	// change to -m leaves none.
	mustApply(t, tb, "-e -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-csum")
	if out, _ := Execute(tb, []string{"-S", "-n"}, ""); !strings.Contains(out, "-r 10.0.0.2:80 -i -w 1 --tun-type gre --tun-csum\n") {
		t.Errorf("after -e:\n%s", out)
	}
	mustApply(t, tb, "-e -t 10.0.0.1:80 -r 10.0.0.2 -m")
	if out, _ := Execute(tb, []string{"-S", "-n"}, ""); !strings.Contains(out, "-r 10.0.0.2:80 -m -w 1\n") {
		t.Errorf("after -e -m:\n%s", out)
	}
}

// ipvsadm's checks of the tunnel options (tunnel_opt_check and
// process_options), and the kernel's (a gue tunnel needs a port).
func TestTunnelOptionsRefused(t *testing.T) {
	for _, c := range []struct{ args, msg string }{
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 1", "Illegal 'tun-port' option with the 'ipip' tunnel type"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum", "Illegal 'tun-remcsum' option with the 'gre' tunnel type"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 1 --tun-csum --tun-nocsum", "conflicts"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -m --tun-type gre", "Tunnel options conflict with forward method"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan", "illegal tunnel type specified"},
		{"-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 0", "illegal tunnel port specified"},
		{"-a -t 10.0.0.1:80 -r [fd00::2]:80 -i", "-i between address families"},
		{"-a -t [fd00::1]:80 -r 10.0.0.2:80 -i --tun-type gre", "-i between address families"},
	} {
		if _, err := Parse(strings.Fields(c.args)); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %q", c.args, err, c.msg)
		}
	}
	c, err := Parse(strings.Fields("-a -t 10.0.0.1:80 -r 10.0.0.2:99 -i --tun-type gue --tun-port 6080 --tun-remcsum"))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Change().Server; s.Method != rules.Tunnel || s.Tun != (rules.Encap{Type: rules.TunGUE, Port: 6080, Flags: rules.TunRemCsum}) || s.Addr.Port() != 80 {
		t.Errorf("%+v", s)
	}
}
