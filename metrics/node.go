package metrics

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"

	"github.com/tunvs/tunvs/nat"
)

// node_exporter's IPVS collector (collector/ipvs_linux.go, node_exporter
// 1.x) exports these series from /proc/net/ip_vs_stats and /proc/net/ip_vs.
// tunvs exports them too, under the same names, HELP texts, types and
// labels, so that dashboards and alerts written for a kernel director work
// unchanged. The text is what client_golang writes for them: families in
// name order, label pairs in name order, samples in order of their label
// values, numbers as strconv's shortest 'g' form.
var nodeTotals = []struct {
	name, help string
	get        func(nat.StatsSnapshot) uint64
}{
	{"node_ipvs_connections_total", "The total number of connections made.", func(s nat.StatsSnapshot) uint64 { return s.Conns }},
	{"node_ipvs_incoming_bytes_total", "The total amount of incoming data.", func(s nat.StatsSnapshot) uint64 { return s.InBytes }},
	{"node_ipvs_incoming_packets_total", "The total number of incoming packets.", func(s nat.StatsSnapshot) uint64 { return s.InPkts }},
	{"node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.", func(s nat.StatsSnapshot) uint64 { return s.OutBytes }},
	{"node_ipvs_outgoing_packets_total", "The total number of outgoing packets.", func(s nat.StatsSnapshot) uint64 { return s.OutPkts }},
}

var nodeBackend = []struct {
	name, help string
	get        func(*nat.Dest) int
}{
	{"node_ipvs_backend_connections_active", "The current active connections by local and remote address.", (*nat.Dest).ActiveConns},
	{"node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", (*nat.Dest).InactConns},
	{"node_ipvs_backend_weight", "The current backend weight by local and remote address.", (*nat.Dest).Weight},
}

// nodeFloat is client_golang's writeFloat for the values here.
func nodeFloat(v uint64) string {
	f := float64(v)
	switch {
	case f == 0:
		return "0"
	case f == 1:
		return "1"
	case math.IsInf(f, 1):
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// backendKey is one real server's label values, in the order of their
// names (local_address, local_mark, local_port, proto, remote_address,
// remote_port): the order client_golang prints and sorts them in.
type backendKey [6]string

// WriteNodeIPVS writes node_exporter's IPVS series for t.
//
// The totals are the sums over the services that exist now: the kernel's
// (ipvs->tot_stats, /proc/net/ip_vs_stats) also keep what deleted services
// counted, so after a service is deleted tunvs's totals go down (a counter
// reset to Prometheus) where the kernel's do not.
func WriteNodeIPVS(w io.Writer, t *nat.Table) {
	svcs := t.Services()
	type backend struct {
		key backendKey
		d   *nat.Dest
	}
	var bs []backend
	for _, s := range svcs {
		for _, d := range s.Dests() {
			bs = append(bs, backend{backendKey{
				s.Addr.String(),
				"", // no firewall-mark services in tunvs
				strconv.Itoa(int(s.Port)),
				nat.ProtoName(s.Proto),
				d.Addr.String(),
				strconv.Itoa(int(d.Port)),
			}, d})
		}
	}
	sort.SliceStable(bs, func(i, j int) bool {
		for k := range bs[i].key {
			if bs[i].key[k] != bs[j].key[k] {
				return bs[i].key[k] < bs[j].key[k]
			}
		}
		return false
	})
	for _, g := range nodeBackend {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", g.name, g.help, g.name)
		for _, b := range bs {
			k := b.key
			fmt.Fprintf(w, "%s{local_address=\"%s\",local_mark=\"%s\",local_port=\"%s\",proto=\"%s\",remote_address=\"%s\",remote_port=\"%s\"} %s\n",
				g.name, escape(k[0]), escape(k[1]), k[2], k[3], escape(k[4]), k[5], nodeFloat(uint64(max(g.get(b.d), 0))))
		}
	}
	var tot nat.StatsSnapshot
	for _, s := range svcs {
		st := s.Stats.Snapshot()
		tot.Conns += st.Conns
		tot.InPkts += st.InPkts
		tot.OutPkts += st.OutPkts
		tot.InBytes += st.InBytes
		tot.OutBytes += st.OutBytes
	}
	for _, c := range nodeTotals {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %s\n", c.name, c.help, c.name, c.name, nodeFloat(c.get(tot)))
	}
}
