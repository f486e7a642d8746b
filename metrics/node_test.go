package metrics_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
)

// nodeTable: two services of both families and protocols, three real
// servers, one TCP connection held open and one datagram.
func nodeTable(t *testing.T) *nat.Table {
	t.Helper()
	tb := nat.New(nat.Config{Seed: 1})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	a := netip.MustParseAddr
	_, err := tb.AddService(nat.ServiceConfig{Proto: nat.ProtoTCP, Addr: a("10.0.0.100"), Port: 80, Scheduler: "rr"})
	must(err)
	_, err = tb.AddService(nat.ServiceConfig{Proto: nat.ProtoUDP, Addr: a("2001:db8::1"), Port: 53, Scheduler: "rr"})
	must(err)
	_, err = tb.AddDest(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: a("10.0.0.100"), Port: 80}, nat.DestConfig{Addr: a("10.1.0.1"), Port: 8080, Weight: 3})
	must(err)
	_, err = tb.AddDest(nat.ServiceKey{Proto: nat.ProtoTCP, Addr: a("10.0.0.100"), Port: 80}, nat.DestConfig{Addr: a("10.1.0.2"), Port: 80, Weight: 0})
	must(err)
	_, err = tb.AddDest(nat.ServiceKey{Proto: nat.ProtoUDP, Addr: a("2001:db8::1"), Port: 53}, nat.DestConfig{Addr: a("2001:db8:1::5"), Port: 53, Weight: 1})
	must(err)
	var p nat.Packet
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	c, v := nattest.AP("10.2.0.1:40000"), nattest.AP("10.0.0.100:80")
	if r := tb.Process(nattest.TCP(c, v, nattest.SYN, 0), &p, now); r.Verdict != nat.Forward {
		t.Fatalf("SYN: %+v", r)
	}
	if r := tb.Process(nattest.TCP(nattest.AP("10.1.0.1:8080"), c, nattest.SYN|nattest.ACK, 0), &p, now); r.Verdict != nat.Forward {
		t.Fatalf("SYN-ACK: %+v", r)
	}
	if r := tb.Process(nattest.TCP(c, v, nattest.ACK, 100), &p, now); r.Verdict != nat.Forward {
		t.Fatalf("ACK: %+v", r)
	}
	if r := tb.Process(nattest.UDP(nattest.AP("[2001:db8:2::1]:5000"), nattest.AP("[2001:db8::1]:53"), []byte("q")), &p, now); r.Verdict != nat.Forward {
		t.Fatalf("UDP: %+v", r)
	}
	return tb
}

// TestNodeIPVS: node_exporter's IPVS series, read back by the Prometheus
// text parser: the names, HELP texts, types and labels of node_exporter's
// collector/ipvs_linux.go, and the table's values.
func TestNodeIPVS(t *testing.T) {
	tb := nodeTable(t)
	var out bytes.Buffer
	metrics.Write(&out, metrics.Source{NAT: tb})
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, out.String())
	}
	help := map[string]string{
		"node_ipvs_connections_total":            "The total number of connections made.",
		"node_ipvs_incoming_packets_total":       "The total number of incoming packets.",
		"node_ipvs_outgoing_packets_total":       "The total number of outgoing packets.",
		"node_ipvs_incoming_bytes_total":         "The total amount of incoming data.",
		"node_ipvs_outgoing_bytes_total":         "The total amount of outgoing data.",
		"node_ipvs_backend_connections_active":   "The current active connections by local and remote address.",
		"node_ipvs_backend_connections_inactive": "The current inactive connections by local and remote address.",
		"node_ipvs_backend_weight":               "The current backend weight by local and remote address.",
	}
	for name, h := range help {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if f.GetHelp() != h {
			t.Errorf("%s HELP %q, node_exporter's is %q", name, f.GetHelp(), h)
		}
		want := dto.MetricType_GAUGE
		if strings.HasSuffix(name, "_total") {
			want = dto.MetricType_COUNTER
		}
		if f.GetType() != want {
			t.Errorf("%s is a %v, node_exporter's a %v", name, f.GetType(), want)
		}
	}
	total := func(name string) float64 {
		m := fams[name].GetMetric()
		if len(m) != 1 || len(m[0].GetLabel()) != 0 {
			t.Fatalf("%s: %v", name, m)
		}
		return m[0].GetCounter().GetValue()
	}
	// A SYN (40 bytes), an ACK of 100 bytes in all
	// and one datagram (40+8+1 bytes of IPv6) in; the SYN-ACK out.
	if c, in, out, inB, outB := total("node_ipvs_connections_total"), total("node_ipvs_incoming_packets_total"),
		total("node_ipvs_outgoing_packets_total"), total("node_ipvs_incoming_bytes_total"), total("node_ipvs_outgoing_bytes_total"); c != 2 || in != 3 || out != 1 || inB != 40+100+49 || outB != 40 {
		t.Errorf("totals: conns %v in %v out %v inBytes %v outBytes %v", c, in, out, inB, outB)
	}
	type bk struct{ la, lp, ra, rp, proto string }
	got := map[string]map[bk]float64{}
	for _, name := range []string{"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight"} {
		got[name] = map[bk]float64{}
		for _, m := range fams[name].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if len(l) != 6 || l["local_mark"] != "" {
				t.Errorf("%s: labels %v, want node_exporter's six (local_mark empty)", name, l)
			}
			got[name][bk{l["local_address"], l["local_port"], l["remote_address"], l["remote_port"], l["proto"]}] = m.GetGauge().GetValue()
		}
	}
	r1 := bk{"10.0.0.100", "80", "10.1.0.1", "8080", "TCP"}
	r2 := bk{"10.0.0.100", "80", "10.1.0.2", "80", "TCP"}
	r3 := bk{"2001:db8::1", "53", "2001:db8:1::5", "53", "UDP"}
	for name, want := range map[string]map[bk]float64{
		"node_ipvs_backend_connections_active":   {r1: 1, r2: 0, r3: 0},
		"node_ipvs_backend_connections_inactive": {r1: 0, r2: 0, r3: 1},
		"node_ipvs_backend_weight":               {r1: 3, r2: 0, r3: 1},
	} {
		if len(got[name]) != len(want) {
			t.Errorf("%s: %v, want %v", name, got[name], want)
		}
		for k, v := range want {
			if g, ok := got[name][k]; !ok || g != v {
				t.Errorf("%s%v = %v (present %v), want %v", name, k, g, ok, v)
			}
		}
	}

	// The text itself is what client_golang (node_exporter's library)
	// writes for the same families, byte for byte.
	var node bytes.Buffer
	metrics.WriteNodeIPVS(&node, tb)
	var again bytes.Buffer
	for _, name := range []string{
		"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight",
		"node_ipvs_connections_total", "node_ipvs_incoming_bytes_total", "node_ipvs_incoming_packets_total",
		"node_ipvs_outgoing_bytes_total", "node_ipvs_outgoing_packets_total",
	} {
		if _, err := expfmt.MetricFamilyToText(&again, fams[name]); err != nil {
			t.Fatal(err)
		}
	}
	if node.String() != again.String() {
		t.Errorf("not as client_golang writes it:\n--- tunvs\n%s--- expfmt\n%s", node.String(), again.String())
	}
}
