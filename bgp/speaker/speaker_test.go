package speaker

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/bgp"
)

// TestNoNextHopNoAnnounce: a VIP of a family without a next hop is not
// announced (it would carry no usable next hop). The speaker runs in
// this process; its neighbor, a relay address where nothing listens,
// never answers.
func TestNoNextHopNoAnnounce(t *testing.T) {
	cfg := bgp.SpeakerConfig{AS: 1, RouterID: netip.MustParseAddr("10.1.0.11"), NextHop: netip.MustParseAddr("10.1.0.11"),
		Hold: 3e9, Peers: []bgp.SpeakerPeer{{Router: netip.MustParseAddr("10.1.0.1"), AS: 2, Relay: netip.MustParseAddrPort("127.0.0.1:9")}}}
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	enc.Encode(cfg)
	enc.Encode(bgp.Command{Op: "set", VIPs: []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.0.0.1")}})
	enc.Encode(bgp.Command{Op: "close"})
	var out bytes.Buffer
	if err := Run(&in, &out); err != nil {
		t.Fatal(err)
	}
	var set, announced []bgp.Report
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r bgp.Report
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		switch r.Event {
		case "set":
			set = append(set, r)
		case "announce":
			announced = append(announced, r)
		}
	}
	if len(set) != 1 || len(set[0].Announced) != 1 || set[0].Announced[0] != netip.MustParseAddr("10.0.0.1") || set[0].Err != "" {
		t.Fatalf("set answered %+v\n%s", set, out.String())
	}
	if len(announced) != 1 || announced[0].NextHop != cfg.NextHop {
		t.Fatalf("announce reports %+v", announced)
	}
}

// TestRefusesBadConfig: the answer to a configuration GoBGP cannot run is
// an error report, and Run returns.
func TestRefusesBadConfig(t *testing.T) {
	for in, want := range map[string]string{
		"{nonsense\n":                            "read the configuration",
		`{"as":1,"router_id":"10.0.0.1"}` + "\n": "at least one peer",
		`{"as":1,"peers":[{"router":"10.0.0.1","as":2,"relay":"127.0.0.1:9"}]}` + "\n": "no router-id",
	} {
		var out bytes.Buffer
		err := Run(strings.NewReader(in), &out)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(out.String(), `"event":"error"`) {
			t.Errorf("%s: %v, %s; want %q", in, err, out.String(), want)
		}
	}
}
