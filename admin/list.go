package admin

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/tunvs/tunvs/nat"
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
		return fmt.Sprintf("[%s]:%d", a, port)
	}
	return fmt.Sprintf("%s:%d", a, port)
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
	case f&FmtRule == 0:
		fmt.Fprintf(w, "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

func svcName(s *nat.Service, f Format) string {
	v := addrPortString(s.Addr, s.Port)
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

func printService(w io.Writer, s *nat.Service, f Format) {
	name := svcName(s, f)
	st := s.Stats.Snapshot()
	switch {
	case f&FmtRule != 0:
		fmt.Fprintf(w, "-A %s -s %s\n", name, s.SchedulerName())
	case f&FmtStats != 0:
		fmt.Fprintf(w, "%-33s%s%s%s%s%s\n", name, largeNum(st.Conns, f), largeNum(st.InPkts, f),
			largeNum(st.OutPkts, f), largeNum(st.InBytes, f), largeNum(st.OutBytes, f))
	default:
		fmt.Fprintf(w, "%s %s\n", name, s.SchedulerName())
	}
	dests := s.Dests()
	if f&FmtNoSort == 0 {
		sortDests(dests)
	}
	for _, d := range dests {
		dn := addrPortString(d.Addr, d.Port)
		if f&FmtRule == 0 && d.Addr.Is4() && len(dn) > 28 {
			dn = dn[:28]
		}
		ds := d.Stats.Snapshot()
		switch {
		case f&FmtRule != 0:
			fmt.Fprintf(w, "-a %s -r %s -m -w %d\n", name, dn, d.Weight())
		case f&FmtStats != 0:
			fmt.Fprintf(w, "  -> %-28s%s%s%s%s%s\n", dn, largeNum(ds.Conns, f), largeNum(ds.InPkts, f),
				largeNum(ds.OutPkts, f), largeNum(ds.InBytes, f), largeNum(ds.OutBytes, f))
		default:
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", dn, "Masq", d.Weight(), d.ActiveConns(), d.InactConns())
		}
	}
}

// List prints the services as `ipvsadm -L` with the format's options.
func List(w io.Writer, t *nat.Table, f Format) {
	if f&FmtRule == 0 {
		fmt.Fprintf(w, "IP Virtual Server version %s (size=%d)\n", ipvsVersion, ipvsConnSize)
	}
	svcs := t.Services()
	if f&FmtNoSort == 0 {
		sortServices(svcs)
	}
	printTitle(w, f)
	for _, s := range svcs {
		printService(w, s, f)
	}
}

// ListService prints one service, as `ipvsadm -L -t VIP:port`.
func ListService(w io.Writer, s *nat.Service, f Format) {
	printTitle(w, f)
	printService(w, s, f)
}

// ListTimeout prints `ipvsadm -L --timeout`.
func ListTimeout(w io.Writer, t *nat.Table) {
	to := t.Timeouts()
	fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n",
		int(to[nat.StateEstablished]/time.Second), int(to[nat.StateFinWait]/time.Second), int(to[nat.StateUDP]/time.Second))
}

// ListConns prints `ipvsadm -L -c -n`. The kernel prints its hash table's
// order; tunvs prints the connections that expire last first.
func ListConns(w io.Writer, t *nat.Table, now time.Time) {
	fmt.Fprintf(w, "IPVS connection entries\n")
	fmt.Fprintf(w, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	var cs []nat.ConnInfo
	t.Conns(func(c *nat.Conn) { cs = append(cs, c.Info()) })
	sort.SliceStable(cs, func(i, j int) bool {
		if !cs[i].Expires.Equal(cs[j].Expires) {
			return cs[i].Expires.After(cs[j].Expires)
		}
		return cs[i].Client.String() < cs[j].Client.String()
	})
	for _, c := range cs {
		left := max(c.Expires.Sub(now), 0)
		secs := int(left / time.Second)
		exp := fmt.Sprintf("%02d:%02d", secs/60, secs%60)
		fmt.Fprintf(w, "%-3s %-6s %-11s %-18s %-18s %s\n", nat.ProtoName(c.Proto), exp, c.State,
			addrPortString(c.Client.Addr(), c.Client.Port()),
			addrPortString(c.Virtual.Addr(), c.Virtual.Port()),
			addrPortString(c.Dest.Addr(), c.Dest.Port()))
	}
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
