package admin

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// The version and connection-table size ipvsadm prints in its first line.
// tunvs's table is not a fixed-size hash, but scripts parse this line, so
// it says what a kernel with default settings says.
const (
	ipvsVersion  = "1.2.1"
	ipvsConnSize = 4096
)

// addrPortString is ipvsadm's numeric addrport_to_anyname: a:p, [a]:p.
func addrPortString(a netip.Addr, port uint16) string {
	if a.Is6() {
		return fmt.Sprintf("[%s]:%d", ntop(a), port)
	}
	return fmt.Sprintf("%s:%d", a, port)
}

// ntop is glibc's inet_ntop: as netip prints, except that an
// IPv4-compatible IPv6 address (the first 96 bits zero, the next 16 not)
// is written ::a.b.c.d, as glibc's inet_ntop6 does.
func ntop(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() && a.Zone() == "" {
		b := a.As16()
		var zero [12]byte
		if [12]byte(b[:12]) == zero && (b[12] != 0 || b[13] != 0) {
			return "::" + netip.AddrFrom4([4]byte(b[12:])).String()
		}
	}
	return a.String()
}

// ntohlDiff reproduces libipvs's comparison of addresses, a subtraction of
// host-order words cast to int, overflow and all, so that the order of a
// listing is the one ipvsadm prints.
func ntohlDiff(a, b netip.Addr) int32 {
	if a.Is4() != b.Is4() {
		if a.Is4() {
			return -1
		}
		return 1
	}
	x, y := a.As16(), b.As16()
	start := 12
	if a.Is6() {
		start = 0
	}
	for i := start; i < 16; i += 4 {
		u := uint32(x[i])<<24 | uint32(x[i+1])<<16 | uint32(x[i+2])<<8 | uint32(x[i+3])
		v := uint32(y[i])<<24 | uint32(y[i+1])<<16 | uint32(y[i+2])<<8 | uint32(y[i+3])
		if r := int32(u - v); r != 0 {
			return r
		}
	}
	return 0
}

// sortServices orders as ipvs_cmp_services: family, protocol, address, port.
func sortServices(s []*nat.Service) {
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if a.Addr.Is4() != b.Addr.Is4() {
			return a.Addr.Is4()
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if r := ntohlDiff(a.Addr, b.Addr); r != 0 {
			return r < 0
		}
		return a.Port < b.Port
	})
}

// sortDests orders as ipvs_cmp_dests: address, then port.
func sortDests(d []*nat.Dest) {
	sort.SliceStable(d, func(i, j int) bool {
		if r := ntohlDiff(d[i].Addr, d[j].Addr); r != 0 {
			return r < 0
		}
		return d[i].Port < d[j].Port
	})
}

// largeNum is ipvsadm's print_largenum.
func largeNum(i uint64, f Format) string {
	if f&FmtExact != 0 {
		s := fmt.Sprintf("%d", i)
		w := len(s) + 1
		if len(s) <= 8 {
			w = 9
		}
		return fmt.Sprintf("%*d", w, i)
	}
	switch {
	case i < 100000000:
		return fmt.Sprintf("%9d", i)
	case i < 1000000000:
		return fmt.Sprintf("%8dK", i/1000)
	case i < 100000000000:
		return fmt.Sprintf("%8dM", i/1000000)
	case i < 100000000000000:
		return fmt.Sprintf("%8dG", i/1000000000)
	}
	return fmt.Sprintf("%8dT", i/1000000000000)
}

func printTitle(w io.Writer, f Format) {
	switch {
	case f&FmtStats != 0:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case f&FmtRate != 0:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case f&FmtThresholds != 0:
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case f&FmtPersistentConn != 0:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
	case f&FmtTunInfo != 0:
		fmt.Fprintf(w, "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
	case f&FmtRule == 0:
		fmt.Fprintf(w, "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// anyName is ipvsadm's addrport_to_anyname: numeric with -n (and in -S
// with -n), else names from /etc/hosts and /etc/services.
func anyName(a netip.Addr, port uint16, proto uint8, f Format) string {
	if f&FmtNumeric != 0 {
		return addrPortString(a, port)
	}
	h, p := hostName(a), portName(port, proto)
	if a.Is6() {
		return "[" + h + "]:" + p
	}
	return h + ":" + p
}

func svcName(s *nat.Service, f Format) string {
	v := anyName(s.Addr, s.Port, s.Proto, f)
	if f&FmtRule != 0 {
		p := "-t"
		if s.Proto == nat.ProtoUDP {
			p = "-u"
		}
		return p + " " + v
	}
	n := nat.ProtoName(s.Proto) + "  " + v
	if s.Addr.Is4() && len(n) > 33 {
		n = n[:33]
	}
	return n
}

// maskString is how ipvsadm prints a persistence mask: dotted for IPv4
// (inet_ntoa), a prefix length for IPv6; "" for the whole address.
func maskString(c nat.ServiceConfig, v4 bool) string {
	bits := c.PersistMaskBits
	if v4 {
		if bits == 0 || bits >= 32 {
			return ""
		}
		m := ^uint32(0) << (32 - bits)
		return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
	}
	if bits == 0 || bits >= 128 {
		return ""
	}
	return fmt.Sprint(bits)
}

func persistSeconds(d time.Duration) int {
	if d == 0 {
		return defaultPersistTimeout
	}
	return int(d / time.Second)
}

func printService(w io.Writer, s *nat.Service, f Format, est *Estimator) {
	name := svcName(s, f)
	cfg := s.Config()
	var b strings.Builder
	switch {
	case f&FmtRule != 0:
		fmt.Fprintf(&b, "-A %s -s %s", name, cfg.Scheduler)
		if cfg.Persistent {
			fmt.Fprintf(&b, " -p %d", persistSeconds(cfg.PersistTimeout))
			if m := maskString(cfg, s.Addr.Is4()); m != "" {
				fmt.Fprintf(&b, " -M %s", m)
			}
		}
		if cfg.OnePacket {
			b.WriteString(" -o")
		}
		if cfg.SynProxy {
			b.WriteString(" -j enable")
		}
		if cfg.SchedFlags != 0 {
			fmt.Fprintf(&b, " -b %s", schedFlagsString(cfg.Scheduler, cfg.SchedFlags))
		}
		// DPVS's -S saves no --proxy-protocol; tunvsadm does, so
		// that -S | -R round-trips.
		b.WriteString(proxyFlag(cfg.ProxyProtocol))
	case f&FmtStats != 0:
		st := s.Stats.Snapshot()
		fmt.Fprintf(&b, "%-33s%s%s%s%s%s", name, largeNum(st.Conns, f), largeNum(st.InPkts, f),
			largeNum(st.OutPkts, f), largeNum(st.InBytes, f), largeNum(st.OutBytes, f))
	case f&FmtRate != 0:
		r := est.ServiceRates(s)
		fmt.Fprintf(&b, "%-33s%s%s%s%s%s", name, largeNum(r.CPS, f), largeNum(r.InPPS, f),
			largeNum(r.OutPPS, f), largeNum(r.InBPS, f), largeNum(r.OutBPS, f))
	default:
		fmt.Fprintf(&b, "%s %s", name, cfg.Scheduler)
		if cfg.SchedFlags != 0 {
			fmt.Fprintf(&b, " (%s)", schedFlagsString(cfg.Scheduler, cfg.SchedFlags))
		}
		if cfg.Persistent {
			fmt.Fprintf(&b, " persistent %d", persistSeconds(cfg.PersistTimeout))
			if m := maskString(cfg, s.Addr.Is4()); m != "" {
				fmt.Fprintf(&b, " mask %s", m)
			}
		}
		if cfg.OnePacket {
			b.WriteString(" ops")
		}
		if cfg.ProxyProtocol.Version() != 0 {
			b.WriteString(proxyWord(cfg.ProxyProtocol))
		}
		if cfg.SynProxy {
			// DPVS's print_service_entry.
			b.WriteString(" synproxy")
		}
	}
	b.WriteByte('\n')
	if f&FmtRule != 0 {
		// DPVS's -S saves no local addresses; tunvsadm does, after the
		// service and before its servers, so that -S | -R round-trips.
		opt := "-t"
		if s.Proto == nat.ProtoUDP {
			opt = "-u"
		}
		for _, l := range s.LocalAddrs() {
			fmt.Fprintf(&b, "--add-laddr %s %s -z %s\n", opt, addrPortString(s.Addr, s.Port), l.Addr)
		}
	}
	io.WriteString(w, b.String())
	dests := s.Dests()
	if f&FmtNoSort == 0 {
		sortDests(dests)
	}
	for _, d := range dests {
		dn := anyName(d.Addr, d.Port, s.Proto, f)
		if f&FmtRule == 0 && d.Addr.Is4() && len(dn) > 28 {
			dn = dn[:28]
		}
		switch {
		case f&FmtRule != 0:
			// ipvsadm 1.31 saves no -x/-y (print_service_entry), so
			// neither does tunvsadm -S: thresholds do not survive
			// -S | -R, with either.
			fmt.Fprintf(w, "-a %s -r %s %s -w %d%s%s\n", name, dn, methodFlag(d.Method()), d.Weight(), tunnelRule(d), proxyFlag(d.ProxyProtocol()))
		case f&FmtStats != 0:
			ds := d.Stats.Snapshot()
			fmt.Fprintf(w, "  -> %-28s%s%s%s%s%s\n", dn, largeNum(ds.Conns, f), largeNum(ds.InPkts, f),
				largeNum(ds.OutPkts, f), largeNum(ds.InBytes, f), largeNum(ds.OutBytes, f))
		case f&FmtRate != 0:
			r := est.DestRates(d)
			fmt.Fprintf(w, "  -> %-28s %8d %8d %8d%s%s\n", dn, r.CPS, r.InPPS, r.OutPPS,
				largeNum(r.InBPS, f), largeNum(r.OutBPS, f))
		case f&FmtThresholds != 0:
			fmt.Fprintf(w, "  -> %-28s %-10d %-10d %-10d %-10d\n", dn, d.UThreshold(), d.LThreshold(),
				d.ActiveConns(), d.InactConns())
		case f&FmtPersistentConn != 0:
			fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", dn, d.Weight(), d.PersistConns(),
				d.ActiveConns(), d.InactConns())
		case f&FmtTunInfo != 0:
			fmt.Fprintf(w, "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n", dn, d.Method(), tunInfo(d), d.Weight(), d.ActiveConns(), d.InactConns())
		default:
			// A server's own --proxy-protocol follows its line, as
			// DPVS shows the service's after the scheduler.
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d%s\n", dn, d.Method(), d.Weight(), d.ActiveConns(), d.InactConns(),
				proxyWord(d.ProxyProtocol()))
		}
	}
}

// List prints the services as `ipvsadm -L` with the format's options
// (rates are 0: see ListWith).
func List(w io.Writer, t *nat.Table, f Format) { list(w, t, f, nil) }

// ListWith is List with the rates of est.
func ListWith(w io.Writer, t *nat.Table, f Format, est *Estimator) { list(w, t, f, est) }

func list(w io.Writer, t *nat.Table, f Format, est *Estimator) {
	if f&FmtRule == 0 {
		fmt.Fprintf(w, "IP Virtual Server version %s (size=%d)\n", ipvsVersion, ipvsConnSize)
	}
	svcs := t.Services()
	if f&FmtNoSort == 0 {
		sortServices(svcs)
	}
	printTitle(w, f)
	for _, s := range svcs {
		printService(w, s, f, est)
	}
	if f&FmtRule != 0 {
		saveSysctls(w, t)
	}
}

// saveSysctls ends -S with the knobs not at the kernel's default, as
// tunvs's `--sysctl NAME=VALUE` lines (ipvsadm saves none: it has no
// sysctls), so that -S, then -R or a rules file, gives them back.
func saveSysctls(w io.Writer, t *nat.Table) {
	for _, s := range rules.SysctlTable {
		if v, ok := t.Sysctl(s.Name); ok && v != s.Default {
			fmt.Fprintf(w, "--sysctl %s=%d\n", s.Name, v)
		}
	}
}

// ListSysctls prints the knobs as `sysctl net.ipv4.vs` does,
// "net.ipv4.vs.NAME = VALUE", in name order (the order of the kernel's
// /proc/sys directory). The kernel's one sync_threshold ("3 50") is two
// here, sync_threshold and sync_period.
func ListSysctls(w io.Writer, t *nat.Table) {
	names := make([]string, 0, len(rules.SysctlTable))
	for _, s := range rules.SysctlTable {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		v, _ := t.Sysctl(n)
		fmt.Fprintf(w, "%s%s = %d\n", sysctlPrefix, n, v)
	}
}

// ListService prints one service, as `ipvsadm -L -t VIP:port`.
func ListService(w io.Writer, s *nat.Service, f Format) { listService(w, s, f, nil) }

func listService(w io.Writer, s *nat.Service, f Format, est *Estimator) {
	printTitle(w, f)
	printService(w, s, f, est)
}

// ListTimeout prints `ipvsadm -L --timeout`.
func ListTimeout(w io.Writer, t *nat.Table) {
	to := t.Timeouts()
	fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n",
		int(to[nat.StateEstablished]/time.Second), int(to[nat.StateFinWait]/time.Second), int(to[nat.StateUDP]/time.Second))
}

// ListConns prints `ipvsadm -L -c` (list_conn). The kernel prints its hash
// table's order; tunvs prints the connections that expire last first.
// Persistence templates show with client port 0, as in /proc/net/ip_vs_conn.
// With --persistent-conn two more columns (pe name, pe_data) are printed,
// empty: tunvs has no persistence engines.
//
// The order needs every entry before the first line, but not every entry's
// text: what is kept is a connection and its expiry, 16 bytes each (16 MB
// for a million), and each line is made as it is written, so w can send
// the listing on in parts (the control socket streams it). Building the
// lines first took several hundred bytes per entry (issue 14: 730 MB of
// RSS for one -Lnc of 874k entries).
func ListConns(w io.Writer, t *nat.Table, now time.Time, f Format) error {
	var refs []connRef
	local := false
	t.Conns(func(c *nat.Conn) {
		refs = append(refs, connRef{exp: c.Expires().UnixNano(), c: c})
		local = local || c.FullNAT()
	})
	if local {
		f |= fmtLocal
	}
	connTitle(w, f)
	slices.SortStableFunc(refs, func(a, b connRef) int {
		if a.exp != b.exp {
			return cmp.Compare(b.exp, a.exp)
		}
		return compareClients(netip.AddrPortFrom(a.c.CAddr(), a.c.CPort), netip.AddrPortFrom(b.c.CAddr(), b.c.CPort))
	})
	for _, r := range refs {
		ci := r.c.Info()
		// The expiry it was sorted by, not a later one.
		ci.Expires = time.Unix(0, r.exp)
		if err := printConn(w, &ci, now, f); err != nil {
			return err
		}
	}
	return nil
}

// connRef is what ListConns keeps of an entry until it is printed.
type connRef struct {
	exp int64
	c   *nat.Conn
}

// compareClients orders client addresses as their text sorts (the order
// -Lnc has always had among entries expiring together), without making
// the strings.
func compareClients(a, b netip.AddrPort) int {
	var ba, bb [64]byte
	return bytes.Compare(a.AppendTo(ba[:0]), b.AppendTo(bb[:0]))
}

func printConns(w io.Writer, cs []nat.ConnInfo, now time.Time, f Format) {
	for i := range cs {
		if cs[i].Local.IsValid() {
			f |= fmtLocal
		}
	}
	slices.SortStableFunc(cs, func(a, b nat.ConnInfo) int {
		if !a.Expires.Equal(b.Expires) {
			return b.Expires.Compare(a.Expires)
		}
		return compareClients(a.Client, b.Client)
	})
	for i := range cs {
		printConn(w, &cs[i], now, f)
	}
}

// printConn prints one line of -Lc.
func printConn(w io.Writer, c *nat.ConnInfo, now time.Time, f Format) error {
	left := max(c.Expires.Sub(now), 0)
	secs := int(left / time.Second)
	src := anyName(c.Client.Addr(), c.Client.Port(), c.Proto, f)
	vip := anyName(c.Virtual.Addr(), c.Virtual.Port(), c.Proto, f)
	dst := anyName(c.Dest.Addr(), c.Dest.Port(), c.Proto, f)
	if f&fmtLocal != 0 {
		// DPVS's column order: source, virtual, local, destination;
		// a masqueraded connection's local tuple is its client's, as
		// DPVS fills laddr for its other methods.
		l := c.Local
		if !l.IsValid() {
			l = c.Client
		}
		dst = fmt.Sprintf("%-18s %s", anyName(l.Addr(), l.Port(), c.Proto, f), dst)
	}
	var err error
	if f&FmtPersistentConn != 0 {
		_, err = fmt.Fprintf(w, "%-3s %02d:%02d  %-11s %-18s %-18s %-18s %-16s %s\n", nat.ProtoName(c.Proto),
			secs/60, secs%60, c.State, src, vip, dst, "", "")
	} else {
		_, err = fmt.Fprintf(w, "%-3s %02d:%02d  %-11s %-18s %-18s %s\n", nat.ProtoName(c.Proto),
			secs/60, secs%60, c.State, src, vip, dst)
	}
	return err
}

// trimLines removes trailing blanks from every line (for comparing with
// transcripts that lost them).
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// methodFlag is a real server's method as -S and the logs write it: -m,
// -g (ipvsadm's fwd_switch), or DPVS's --fullnat (its -b is ipvsadm
// 1.31's --sched-flags).
func methodFlag(m rules.Method) string {
	switch m {
	case rules.FullNAT:
		return "--fullnat"
	case rules.Route:
		return "-g"
	case rules.Tunnel:
		return "-i"
	}
	return "-m"
}

// tunFlagOpts are ipvsadm's tun_flags_opts: the option of each
// IP_VS_TUNNEL_ENCAP_FLAG_* value.
var tunFlagOpts = [...]string{0: "--tun-nocsum", rules.TunCsum: "--tun-csum", rules.TunRemCsum: "--tun-remcsum"}

// encapOptions is what ipvsadm 1.31's print_tunnel_rule writes after -w
// for a tunnelling server: --tun-type, and --tun-port and the checksum
// option for gue, the checksum option for gre.
func encapOptions(e rules.Encap) string {
	s := " --tun-type " + e.Type.String()
	switch e.Type {
	case rules.TunGUE:
		s += fmt.Sprintf(" --tun-port %d %s", e.Port, tunFlagOpt(e.Flags))
	case rules.TunGRE:
		s += " " + tunFlagOpt(e.Flags)
	}
	return s
}

func tunFlagOpt(f rules.TunFlags) string {
	if int(f) < len(tunFlagOpts) {
		return tunFlagOpts[f]
	}
	return ""
}

// tunnelRule is encapOptions for a tunnelling dest, "" for the others.
func tunnelRule(d *nat.Dest) string {
	if e, ok := d.Encap(); ok {
		return encapOptions(e)
	}
	return ""
}

// tunFlagNames are ipvsadm's tunflags: how --tun-info shows each
// IP_VS_TUNNEL_ENCAP_FLAG_* value.
var tunFlagNames = [...]string{0: "-c", rules.TunCsum: "+c", rules.TunRemCsum: "r+c"}

// tunInfo is ipvsadm 1.31's fwd_tun_info for --tun-info: "ipip",
// "gue:PORT:FLAGS", "gre:FLAGS"; "n/a" for a server that does not tunnel.
func tunInfo(d *nat.Dest) string {
	e, ok := d.Encap()
	var fl string
	if int(e.Flags) < len(tunFlagNames) {
		fl = tunFlagNames[e.Flags]
	}
	switch {
	case !ok:
		return "n/a"
	case e.Type == rules.TunGUE:
		return fmt.Sprintf("gue:%d:%s", e.Port, fl)
	case e.Type == rules.TunGRE:
		return "gre:" + fl
	}
	return e.Type.String()
}

// ListLocalAddrs prints services' local addresses as DPVS's ipvsadm
// --get-laddr does (list_laddrs): a title, then per service its
// address and the number of local addresses, and a line per address
// with the ports found taken while allocating (CONFLICTS) and the
// connections using it (CONNS).
func ListLocalAddrs(w io.Writer, svcs []*nat.Service, title bool) {
	var b strings.Builder
	if title {
		fmt.Fprintf(&b, "%-20s %-8s %-20s %-10s %-10s\n", "VIP:VPORT", "TOTAL", "LADDR", "CONFLICTS", "CONNS")
	}
	for _, s := range svcs {
		ls := s.LocalAddrs()
		fmt.Fprintf(&b, "%-20s %-8d \n", addrPortString(s.Addr, s.Port), len(ls))
		for _, l := range ls {
			fmt.Fprintf(&b, "%-20s %-8s %-20s %-10d %-10d\n", "", "", l.Addr, l.Conflicts, l.Conns)
		}
	}
	io.WriteString(w, b.String())
}

// proxyWord is a --proxy-protocol setting as DPVS's -L shows it after the
// service's scheduler (" pp" and proxy_protocol_str: " ppv2"); nothing
// when unset. DPVS shows nothing for "disable" on a service either; a real
// server's own "disable" is shown, since it differs from its service.
func proxyWord(pp rules.ProxyProtocol) string {
	if pp == rules.ProxyUnset {
		return ""
	}
	return " pp" + pp.String()
}

// proxyFlag is a --proxy-protocol setting as -S writes it.
func proxyFlag(pp rules.ProxyProtocol) string {
	if pp == rules.ProxyUnset {
		return ""
	}
	return " --proxy-protocol " + pp.String()
}

// fmtLocal is an internal format bit: the connection listing has a
// full-NAT connection, so every line gets DPVS's local-address column
// (print_conn_entry's lname) before the destination.
const fmtLocal Format = 1 << 15

// connTitle prints -Lc's header, with the local column under fmtLocal.
func connTitle(w io.Writer, f Format) {
	fmt.Fprintf(w, "IPVS connection entries\n")
	dst := "destination"
	if f&fmtLocal != 0 {
		dst = fmt.Sprintf("%-18s %s", "local", dst)
	}
	if f&FmtPersistentConn != 0 {
		fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n", "state", "source", "virtual", dst, "pe name", "pe_data")
	} else {
		fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", dst)
	}
}
