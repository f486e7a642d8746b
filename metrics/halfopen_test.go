package metrics_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/metrics"
	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/nat/nattest"
	"github.com/tunvs/tunvs/rules"
)

// A service's half-open connections (its SYN queue, which starts the SYN
// proxy at synproxy_backlog) are a gauge per service, with the backlog.
func TestHalfOpenGauge(t *testing.T) {
	tb := nat.New(nat.Config{})
	vip := nattest.AP("172.16.1.100:80")
	if _, err := tb.AddService(nat.ServiceConfig{Proto: 6, Addr: vip.Addr(), Port: vip.Port(), Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddDest(nat.ServiceKey{Proto: 6, Addr: vip.Addr(), Port: vip.Port()}, nat.DestConfig{Addr: netip.MustParseAddr("172.16.1.5"), Port: 80, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Apply(rules.Diff{{Kind: rules.SetSysctl, Sysctl: "synproxy_backlog", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	var p nat.Packet
	for port := range uint16(3) {
		src := netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), 1024+port)
		tb.Process(nattest.TCP(src, vip, nattest.SYN, 0), &p, 1)
	}
	var out bytes.Buffer
	metrics.Write(&out, metrics.Source{NAT: tb})
	for _, want := range []string{
		"# TYPE tunvs_service_half_open_connections gauge\n",
		// The third SYN found the queue full: a cookie, no entry.
		`tunvs_service_half_open_connections{protocol="tcp",service="172.16.1.100:80"} 2` + "\n",
		"tunvs_synproxy_backlog 2\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
}
