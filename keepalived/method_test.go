package keepalived

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/rules"
)

// lb_kind and lvs_method map onto tunvs's methods as keepalived 2.2.7 sets
// them (check_parser.c's svr_forwarding_handler, check_data.c's alloc_rs,
// alloc_ssvr and validate_check_config): the virtual server's is the
// default of the servers allocated after it, a real server's own wins,
// servers without one take the virtual server's final one, NAT when there
// is none (said once); a DR or TUN server's port is the service's.
func TestForwardingMethods(t *testing.T) {
	const sorryCheck = "TCP_CHECK {\n}\n"
	for _, c := range []struct {
		name, body string
		// want is each real server as "addr method encap", then the
		// sorry server's, if any, as "sorry addr method encap".
		want     []string
		warnings []string
	}{
		{name: "default NAT", body: "real_server 10.0.0.2 8080 {\n}\n",
			want:     []string{"10.0.0.2:8080 Masq {ipip 0 nocsum}"},
			warnings: []string{"k.conf:1: virtual_server 10.0.0.1:80: no forwarding method set, setting default NAT"}},
		{name: "DR", body: "lb_kind DR\nreal_server 10.0.0.2 80 {\n}\nreal_server 10.0.0.3 {\n}\n",
			want: []string{"10.0.0.2:80 Route {ipip 0 nocsum}", "10.0.0.3:80 Route {ipip 0 nocsum}"}},
		{name: "DR port reset", body: "lvs_method DR\nreal_server 10.0.0.2 8080 {\n}\n",
			want:     []string{"10.0.0.2:80 Route {ipip 0 nocsum}"},
			warnings: []string{"k.conf:4: virtual_server 10.0.0.1:80 and real_server 10.0.0.2:8080 ports don't match: resetting"}},
		{name: "TUN ipip", body: "lb_kind TUN\nreal_server 10.0.0.2 80 {\n}\n",
			want: []string{"10.0.0.2:80 Tunnel {ipip 0 nocsum}"}},
		{name: "TUN gue", body: "lvs_method TUN type gue port 6080 csum\nreal_server 10.0.0.2 80 {\n}\n",
			want: []string{"10.0.0.2:80 Tunnel {gue 6080 csum}"}},
		{name: "TUN gre", body: "lvs_method TUN type gre remcsum csum\nreal_server 10.0.0.2 80 {\n}\n",
			want: []string{"10.0.0.2:80 Tunnel {gre 0 csum}"}},
		{name: "per real server", body: "lb_kind DR\nreal_server 10.0.0.2 80 {\nlvs_method NAT\n}\nreal_server 10.0.0.3 80 {\nlvs_method TUN type gre\n}\nreal_server 10.0.0.4 80 {\n}\n",
			want: []string{"10.0.0.2:80 Masq {ipip 0 nocsum}", "10.0.0.3:80 Tunnel {gre 0 nocsum}", "10.0.0.4:80 Route {ipip 0 nocsum}"}},
		// alloc_rs copies the method the virtual server has so far; one
		// without a method yet takes the final one.
		{name: "order", body: "real_server 10.0.0.2 80 {\n}\nlb_kind DR\nreal_server 10.0.0.3 80 {\n}\nlb_kind TUN\n",
			want: []string{"10.0.0.2:80 Tunnel {ipip 0 nocsum}", "10.0.0.3:80 Route {ipip 0 nocsum}"}},
		{name: "options on NAT", body: "lb_kind NAT type gre\nreal_server 10.0.0.2 80 {\n}\n",
			want:     []string{"10.0.0.2:80 Masq {ipip 0 nocsum}"},
			warnings: []string{"k.conf:3: lb_kind NAT: tunnel options ignored"}},
		{name: "lb_kind in real_server", body: "lb_kind DR\nreal_server 10.0.0.2 80 {\nlb_kind NAT\n}\n",
			want:     []string{"10.0.0.2:80 Route {ipip 0 nocsum}"},
			warnings: []string{"k.conf:5: unknown keyword \"lb_kind\" in real_server ignored"}},
		{name: "sorry server", body: "lb_kind NAT\nsorry_server 10.0.0.9 8080\nsorry_server_lvs_method TUN type gue port 5555\nreal_server 10.0.0.2 80 {\n" + sorryCheck + "}\n",
			want:     []string{"10.0.0.2:80 Masq {ipip 0 nocsum}", "sorry 10.0.0.9:80 Tunnel {gue 5555 nocsum}"},
			warnings: []string{"k.conf:1: virtual_server 10.0.0.1:80 and sorry_server 10.0.0.9:8080 ports don't match: resetting"}},
		{name: "sorry server takes the virtual server's", body: "lb_kind DR\nsorry_server 10.0.0.9\nreal_server 10.0.0.2 80 {\n" + sorryCheck + "}\n",
			want: []string{"10.0.0.2:80 Route {ipip 0 nocsum}", "sorry 10.0.0.9:80 Route {ipip 0 nocsum}"}},
		{name: "NAT sorry server keeps its port", body: "sorry_server 10.0.0.9 8080\nreal_server 10.0.0.2 80 {\nlvs_method NAT\n" + sorryCheck + "}\n",
			want:     []string{"10.0.0.2:80 Masq {ipip 0 nocsum}", "sorry 10.0.0.9:8080 Masq {ipip 0 nocsum}"},
			warnings: []string{"k.conf:1: virtual_server 10.0.0.1:80: no forwarding method set, setting default NAT"}},
		{name: "sorry method without sorry server", body: "lb_kind NAT\nsorry_server_lvs_method DR\n",
			warnings: []string{"k.conf:4: sorry_server_lvs_method ignored: used without (or before) sorry_server"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k.conf")
			os.WriteFile(p, []byte("virtual_server 10.0.0.1 80 {\nprotocol TCP\n"+c.body+"}\n"), 0o644)
			cfg, err := Load(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range cfg.Rules.Services[0].Servers {
				got = append(got, fmt.Sprintf("%v %v %v", d.Addr, d.Method, d.Tun))
			}
			for _, cs := range cfg.Rules.Checks.Services {
				if cs.Sorry.IsValid() {
					got = append(got, fmt.Sprintf("sorry %v %v %v", cs.Sorry, cs.SorryMethod, cs.SorryTun))
				}
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if len(cfg.Warnings) != len(c.warnings) {
				t.Fatalf("warnings %v, want %q", cfg.Warnings, c.warnings)
			}
			for i, w := range c.warnings {
				if !strings.HasPrefix(cfg.Warnings[i].String(), p[:len(p)-len("k.conf")]+w) {
					t.Errorf("warning %q, want %q", cfg.Warnings[i], w)
				}
			}
		})
	}
}

// A DR or TUN real server of a group keeps a port that differs from an
// entry's, with keepalived's warning (validate_check_config resets it only
// outside groups); one without a port takes each entry's.
func TestForwardingGroup(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.conf")
	os.WriteFile(p, []byte(`virtual_server_group G {
	10.0.0.1 80
	10.0.0.1 443
}
virtual_server group G {
	protocol TCP
	lb_kind DR
	real_server 10.0.0.2 {
	}
	real_server 10.0.0.3 443 {
	}
}
`), 0o644)
	cfg, err := Load(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range cfg.Rules.Services {
		for _, d := range s.Servers {
			got = append(got, fmt.Sprintf("%d>%v %v", s.Port, d.Addr, d.Method))
		}
	}
	want := "80>10.0.0.2:80 Route 80>10.0.0.3:443 Route 443>10.0.0.2:443 Route 443>10.0.0.3:443 Route"
	if strings.Join(got, " ") != want {
		t.Errorf("got %s, want %s", strings.Join(got, " "), want)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].String(), "k.conf:10: virtual_server 10.0.0.1:80 and real_server 10.0.0.3:443 ports don't match, as keepalived warns") {
		t.Errorf("warnings %v", cfg.Warnings)
	}
}

// What keepalived reports as a configuration error in a method line is
// refused with its words, naming the line; so is a tunnelled real server
// of the other family, which keepalived allows and tunvs does not tunnel.
func TestForwardingRefused(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"lb_kind nat", `k.conf:3: keepalived.conf: lb_kind "nat": unknown routing method for virtual server`},
		{"lb_kind FNAT", `lb_kind "FNAT": unknown routing method`},
		{"lvs_method TUN type", "lvs_method: missing tunnel type for virtual server"},
		{"lvs_method TUN type vxlan", "lvs_method: unknown tunnel type vxlan"},
		{"lvs_method TUN type gue port", "lvs_method: missing port for virtual server gue tunnel"},
		{"lvs_method TUN type gue port 0", "lvs_method: invalid gue tunnel port 0"},
		{"lvs_method TUN type gue port 65536", "lvs_method: invalid gue tunnel port 65536"},
		{"lvs_method TUN mtu 1400", "lvs_method: invalid tunnel option mtu"},
		{"lvs_method TUN type gue", "lvs_method: gue tunnels require port, otherwise cannot have port"},
		{"lvs_method TUN port 6080", "lvs_method: gue tunnels require port, otherwise cannot have port"},
		{"lvs_method TUN csum", "lvs_method: ipip tunnels do not support checksum option"},
		{"lvs_method TUN type gre remcsum", "lvs_method: gre tunnels do not support remote checksum option"},
		{"real_server 10.0.0.2 80 {\nlvs_method DR type\n}", "k.conf:4: keepalived.conf: lvs_method: missing tunnel type for real server"},
		{"sorry_server 10.0.0.9 80\nsorry_server_lvs_method XX", `k.conf:4: keepalived.conf: sorry_server_lvs_method "XX": unknown routing method for sorry server`},
		{"real_server fd00::2 80 {\nlvs_method TUN\n}", "real server fd00::2 is not of the service's address family (tunvs tunnels IPv4 in IPv4 and IPv6 in IPv6 only)"},
	} {
		p := filepath.Join(t.TempDir(), "k.conf")
		os.WriteFile(p, []byte("virtual_server 10.0.0.1 80 {\nprotocol TCP\n"+c.line+"\n}\n"), 0o644)
		_, err := Load(p, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrConfig) {
			t.Errorf("%q: got %v, want %q", c.line, err, c.want)
		}
	}
}

// The sorry server's method reaches the real server health checking adds
// while the service is below quorum, and is validated with the rules.
func TestSorryMethodValidated(t *testing.T) {
	r := rules.Rules{Services: []rules.Service{{ServiceKey: rules.ServiceKey{Proto: rules.ProtoTCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}}}}
	r.Checks.Services = []rules.CheckService{{Proto: rules.ProtoTCP, VIP: r.Services[0].AddrPort(), Sorry: netip.MustParseAddrPort("10.0.0.9:80"),
		SorryMethod: rules.Tunnel, SorryTun: rules.Encap{Type: rules.TunGUE}}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "sorry server: ") || !strings.Contains(err.Error(), "tunnel port is zero") {
		t.Errorf("gue sorry server without a port: %v", err)
	}
	r.Checks.Services[0].SorryTun.Port = 6080
	if err := r.Validate(); err != nil {
		t.Error(err)
	}
}
