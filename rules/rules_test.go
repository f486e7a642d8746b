package rules

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

var (
	vip  = netip.MustParseAddr("10.0.0.1")
	vip6 = netip.MustParseAddr("fd00::1")
	rs1  = netip.MustParseAddrPort("192.168.1.1:80")
	rs2  = netip.MustParseAddrPort("192.168.1.2:80")
	rs3  = netip.MustParseAddrPort("192.168.1.3:80")
	web  = ServiceKey{Proto: ProtoTCP, Addr: vip, Port: 80}
	dns  = ServiceKey{Proto: ProtoUDP, Addr: vip, Port: 53}
)

func sample() Rules {
	return Rules{
		Services: []Service{
			{ServiceKey: web, Scheduler: "rr", Servers: []Server{{Addr: rs1, Weight: 1}, {Addr: rs2, Weight: 2}}},
			{ServiceKey: dns, Persistent: true, PersistTimeout: time.Minute, Servers: []Server{{Addr: rs1, Weight: 1}}},
		},
		Sysctls:  map[string]int{"expire_nodest_conn": 1},
		Timeouts: Timeouts{TimeoutTCP: time.Hour},
		Checks: Checks{Services: []CheckService{{Proto: ProtoTCP, VIP: web.AddrPort(),
			Default: &Check{Kind: KindTCP}}}},
	}
}

func TestValidateAccepts(t *testing.T) {
	r := sample()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	// Full NAT: a server of each method, and local addresses.
	r.Services[0].Servers[0].Method = FullNAT
	r.Services[0].LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.1.250"), netip.MustParseAddr("192.168.1.251")}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A local address added is its own change, which keeps the service and
// its servers; a method change is an edit of the server. -E keeps the
// local addresses; deleting one not there is refused.
func TestDiffFullNAT(t *testing.T) {
	a := sample()
	b := a.Clone()
	b.Services[0].LocalAddrs = []netip.Addr{netip.MustParseAddr("192.168.1.250")}
	b.Services[0].Servers[1].Method = FullNAT
	d := a.Diff(b)
	if len(d) != 2 || d[0].Kind != AddLocalAddr || d[1].Kind != EditServer {
		t.Fatalf("diff %+v", d)
	}
	if next, err := a.Next(d); err != nil || !reflect.DeepEqual(next.Services[0], b.Services[0]) {
		t.Fatalf("next %+v, %v", next.Services[0], err)
	}
	next, _ := a.Next(d)
	e := Diff{{Kind: EditService, Service: Service{ServiceKey: web, Scheduler: "wlc"}}}
	if n2, err := next.Next(e); err != nil || len(n2.Services[0].LocalAddrs) != 1 {
		t.Fatalf("-E: %+v, %v", n2.Services[0], err)
	}
	for _, c := range []struct {
		ch   Change
		want error
	}{
		{Change{Kind: DelLocalAddr, Service: Service{ServiceKey: web}, LocalAddr: vip6}, ErrNoLocalAddr},
		{Change{Kind: AddLocalAddr, Service: Service{ServiceKey: web}, LocalAddr: netip.MustParseAddr("192.168.1.250")}, ErrLocalAddrExists},
		{Change{Kind: AddLocalAddr, Service: Service{ServiceKey: web}, LocalAddr: vip6}, ErrInvalid},
		{Change{Kind: AddLocalAddr, Service: Service{ServiceKey: dns}, LocalAddr: vip}, ErrInvalid},
	} {
		if _, err := next.Next(Diff{c.ch}); !errors.Is(err, c.want) {
			t.Errorf("%v %v: %v, want %v", c.ch.Kind, c.ch.LocalAddr, err, c.want)
		}
	}
}

// Every refusal Validate knows, each naming the line it came from.
func TestValidateRefuses(t *testing.T) {
	cases := []struct {
		name string
		edit func(r *Rules)
		want error
	}{
		{"proto", func(r *Rules) { r.Services[0].Proto = 1 }, ErrInvalid},
		{"scheduler", func(r *Rules) { r.Services[0].Scheduler = "nope" }, nil},
		{"zone", func(r *Rules) { r.Services[0].Addr = netip.MustParseAddr("fe80::1%eth0") }, ErrInvalid},
		{"mask", func(r *Rules) { r.Services[0].PersistMaskBits = 33 }, ErrInvalid},
		{"persist", func(r *Rules) { r.Services[0].PersistTimeout = -1 }, ErrInvalid},
		{"laddr is the vip", func(r *Rules) { r.Services[0].LocalAddrs = []netip.Addr{vip} }, ErrInvalid},
		{"laddr family", func(r *Rules) { r.Services[0].LocalAddrs = []netip.Addr{vip6} }, ErrInvalid},
		{"laddr multicast", func(r *Rules) { r.Services[0].LocalAddrs = []netip.Addr{netip.MustParseAddr("224.0.0.1")} }, ErrInvalid},
		{"laddr mapped", func(r *Rules) {
			r.Services[0].Addr = vip6
			r.Services[0].Servers = nil
			r.Services[0].LocalAddrs = []netip.Addr{netip.MustParseAddr("::ffff:10.9.9.9")}
		}, ErrInvalid},
		{"laddr twice", func(r *Rules) { r.Services[0].LocalAddrs = []netip.Addr{rs3.Addr(), rs3.Addr()} }, ErrLocalAddrExists},
		{"method", func(r *Rules) { r.Services[0].Servers[0].Method = Tunnel + 1 }, ErrInvalid},
		{"gue without a port", func(r *Rules) {
			r.Services[0].Servers[0].Method, r.Services[0].Servers[0].Tun = Tunnel, Encap{Type: TunGUE}
		}, ErrInvalid},
		{"ipip with a checksum", func(r *Rules) {
			r.Services[0].Servers[0].Method, r.Services[0].Servers[0].Tun = Tunnel, Encap{Flags: TunCsum}
		}, ErrInvalid},
		{"gre with remcsum", func(r *Rules) {
			r.Services[0].Servers[0].Method, r.Services[0].Servers[0].Tun = Tunnel, Encap{Type: TunGRE, Flags: TunRemCsum}
		}, ErrInvalid},
		{"encap without -i", func(r *Rules) { r.Services[0].Servers[0].Tun = Encap{Type: TunGRE} }, ErrInvalid},
		{"twice", func(r *Rules) { r.Services[1].ServiceKey = web }, ErrServiceExists},
		{"family", func(r *Rules) { r.Services[0].Addr = vip6 }, ErrInvalid},
		{"weight", func(r *Rules) { r.Services[0].Servers[1].Weight = MaxWeight + 1 }, ErrInvalid},
		{"thresholds", func(r *Rules) { r.Services[0].Servers[1].LThreshold = 5 }, ErrRange},
		{"server twice", func(r *Rules) { r.Services[0].Servers[1].Addr = rs1 }, ErrDestExists},
		{"sysctl name", func(r *Rules) { r.Sysctls["nope"] = 1 }, ErrInvalid},
		{"sysctl range", func(r *Rules) { r.Sysctls["conn_reuse_mode"] = 4 }, ErrInvalid},
		{"timeout state", func(r *Rules) { r.Timeouts["NOPE"] = time.Second }, ErrInvalid},
		{"timeout value", func(r *Rules) { r.Timeouts[TimeoutUDP] = 0 }, ErrInvalid},
		{"mapped service", func(r *Rules) { r.Services[0].Addr = netip.MustParseAddr("::ffff:10.0.0.1") }, ErrInvalid},
		{"mapped server", func(r *Rules) {
			r.Services[0].Addr = vip6
			r.Services[0].Servers[1].Addr = netip.MustParseAddrPort("[::ffff:192.168.1.2]:80")
		}, ErrInvalid},
		// ip_vs_new_dest refuses what is not unicast.
		{"server 0.0.0.0", func(r *Rules) { r.Services[0].Servers[1].Addr = netip.MustParseAddrPort("0.0.0.0:80") }, ErrInvalid},
		{"server broadcast", func(r *Rules) {
			r.Services[0].Servers[1].Addr = netip.MustParseAddrPort("255.255.255.255:80")
		}, ErrInvalid},
		{"server multicast", func(r *Rules) { r.Services[0].Servers[1].Addr = netip.MustParseAddrPort("224.0.0.1:80") }, ErrInvalid},
		{"server ff02::1", func(r *Rules) {
			r.Services[0].Addr = vip6
			r.Services[0].Servers = []Server{{Addr: netip.MustParseAddrPort("[ff02::1]:80"), Weight: 1}}
		}, ErrInvalid},
		{"server ::", func(r *Rules) {
			r.Services[0].Addr = vip6
			r.Services[0].Servers = []Server{{Addr: netip.MustParseAddrPort("[::]:80"), Weight: 1}}
		}, ErrInvalid},
		{"check service", func(r *Rules) { r.Checks.Services[0].VIP = netip.MustParseAddrPort("10.0.0.9:80") }, ErrCheck},
		{"check server", func(r *Rules) {
			r.Checks.Services[0].Servers = []CheckServer{{Addr: rs3, Check: &Check{Kind: KindTCP}}}
		}, ErrCheck},
		{"check sorry", func(r *Rules) { r.Checks.Services[0].Sorry = rs1 }, ErrCheck},
		{"check kind", func(r *Rules) { r.Checks.Services[0].Default = &Check{Kind: "nope"} }, ErrCheck},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := sample()
			for i := range r.Services {
				r.Services[i].Line = 10 + i
				for j := range r.Services[i].Servers {
					r.Services[i].Servers[j].Line = 20 + 10*i + j
				}
			}
			c.edit(&r)
			err := r.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("%v: not %v", err, c.want)
			}
			var le *LineError
			if c.name == "thresholds" && (!errors.As(err, &le) || le.Line != 21) {
				t.Fatalf("%v: want line 21", err)
			}
		})
	}
	// A check of kind none on a server the service lacks checks nothing
	// and is no error (health.New's rule).
	r := sample()
	r.Checks.Services[0].Servers = []CheckServer{{Addr: rs3, Check: &Check{Kind: KindNone}}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Next applies a Diff to a value; Diff's output, applied, gives the
// target, whatever the start; Diff of equal rules is empty.
func TestDiffNext(t *testing.T) {
	a := sample()
	b := sample()
	b.Services[0].Scheduler = "wlc"
	b.Services[0].Servers = []Server{{Addr: rs2, Weight: 5}, {Addr: rs3, Weight: 1}}
	b.Services = append(b.Services[:1], Service{ServiceKey: ServiceKey{Proto: ProtoTCP, Addr: vip, Port: 443},
		Servers: []Server{{Addr: rs1}}})
	b.Sysctls = map[string]int{"conn_reuse_mode": 0}
	b.Timeouts = Timeouts{TimeoutUDP: time.Second}

	d := a.Diff(b)
	kinds := []ChangeKind{}
	for _, c := range d {
		kinds = append(kinds, c.Kind)
	}
	want := []ChangeKind{DelService, EditService, DelServer, EditServer, AddServer, AddService, AddServer, SetSysctl, SetTimeouts}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("diff %v, want %v", kinds, want)
	}
	got, err := a.Next(d)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Services, b.Services) {
		t.Fatalf("services\n%+v\nwant\n%+v", got.Services, b.Services)
	}
	// What the diff did not name stays as it was.
	if got.Sysctls["expire_nodest_conn"] != 1 || got.Sysctls["conn_reuse_mode"] != 0 ||
		got.Timeouts[TimeoutTCP] != time.Hour || got.Timeouts[TimeoutUDP] != time.Second {
		t.Fatalf("sysctls %v timeouts %v", got.Sysctls, got.Timeouts)
	}
	if d := got.Diff(b); len(d) != 0 {
		t.Fatalf("diff of equal rules: %+v", d)
	}
	if !reflect.DeepEqual(a, sample()) {
		t.Fatal("Next changed its receiver")
	}
}

// A refused change anywhere in a diff refuses the diff and leaves the
// value as it was; the error names the change and its line.
func TestNextRefuses(t *testing.T) {
	a := sample()
	cases := []struct {
		c    Change
		want error
	}{
		{Change{Kind: AddService, Service: Service{ServiceKey: web}}, ErrServiceExists},
		{Change{Kind: EditService, Service: Service{ServiceKey: ServiceKey{Proto: ProtoTCP, Addr: vip, Port: 1}}}, ErrNoService},
		{Change{Kind: DelService, Service: Service{ServiceKey: ServiceKey{Proto: ProtoTCP, Addr: vip, Port: 1}}}, ErrNoService},
		{Change{Kind: AddServer, Service: Service{ServiceKey: web}, Server: Server{Addr: rs1}}, ErrDestExists},
		{Change{Kind: EditServer, Service: Service{ServiceKey: dns}, Server: Server{Addr: rs3}}, ErrNoDest},
		{Change{Kind: DelServer, Service: Service{ServiceKey: dns}, Server: Server{Addr: rs3}}, ErrNoDest},
		{Change{Kind: AddServer, Service: Service{ServiceKey: dns}, Server: Server{Addr: rs3, UThreshold: 1, LThreshold: 2}}, ErrRange},
		{Change{Kind: SetSysctl, Sysctl: "expire_nodest_conn", Value: 2}, ErrInvalid},
		{Change{Kind: Zero, Service: Service{ServiceKey: ServiceKey{Proto: ProtoTCP, Addr: vip, Port: 1}}}, ErrNoService},
	}
	for i, c := range cases {
		c.c.Line = 7
		d := Diff{{Kind: AddServer, Service: Service{ServiceKey: web}, Server: Server{Addr: rs3}}, c.c}
		_, err := a.Next(d)
		var ce *ChangeError
		if !errors.As(err, &ce) || ce.Index != 1 || ce.Line != 7 || !errors.Is(err, c.want) {
			t.Errorf("case %d: %v, want change 2 line 7: %v", i, err, c.want)
		}
	}
	if !reflect.DeepEqual(a, sample()) {
		t.Fatal("a refused Next changed its receiver")
	}
}

// A large rules file: 10,000 services of 4 servers each, built from
// nothing and then diffed against itself. Next and Diff index what they
// look up, so this grows linearly (compare -benchtime runs of different
// sizes), where a linear search per change would be quadratic.
func BenchmarkNextLarge(b *testing.B) {
	var d Diff
	for i := range 10000 {
		k := ServiceKey{Proto: ProtoTCP, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 80}
		d = append(d, Change{Kind: AddService, Service: Service{ServiceKey: k}})
		for j := range 4 {
			d = append(d, Change{Kind: AddServer, Service: Service{ServiceKey: k},
				Server: Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(j), 1}), 80), Weight: 1}})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := Rules{}.Next(d)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Diff(r)) != 0 {
			b.Fatal("diff of equal rules")
		}
	}
}

// A change of a tunnelling server's encapsulation alone (what a reload
// of a rules file with another --tun-type or --tun-port finds) is an
// edit of the server, and Next carries it.
func TestDiffTunnel(t *testing.T) {
	a := sample()
	a.Services[0].Servers[0].Method = Tunnel
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	b := a.Clone()
	b.Services[0].Servers[0].Tun = Encap{Type: TunGUE, Port: 6080, Flags: TunCsum}
	d := a.Diff(b)
	if len(d) != 1 || d[0].Kind != EditServer || d[0].Server.Tun != b.Services[0].Servers[0].Tun {
		t.Fatalf("diff %+v", d)
	}
	if next, err := a.Next(d); err != nil || !reflect.DeepEqual(next.Services[0], b.Services[0]) {
		t.Fatalf("next %+v, %v", next.Services[0], err)
	}
	if d := b.Diff(b.Clone()); len(d) != 0 {
		t.Errorf("no change, diff %+v", d)
	}
}
