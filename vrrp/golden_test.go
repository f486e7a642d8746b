package vrrp

import (
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// Adverts of Debian's keepalived 2.2.7 (vrrp_version 3), captured once on
// a veth in a fresh network namespace (tcpdump -w): the IP packets, the
// Ethernet header left off. VRID 51 (IPv4, advert_int 1, two addresses)
// and 52 (IPv6, advert_int 0.5), priority 150 while master and 0 as it
// stopped. Each must decode to what keepalived was told, and tunvs's
// encoder must produce the same VRRP message, checksum included.
func TestKeepalivedAdverts(t *testing.T) {
	for _, tc := range []struct {
		file     string
		vrid     uint8
		prio     uint8
		interval uint16
		addrs    []string
	}{
		{"ipv4-prio150", 51, 150, 100, []string{"172.16.1.100", "172.16.1.254"}},
		{"ipv4-prio0", 51, 0, 100, []string{"172.16.1.100", "172.16.1.254"}},
		{"ipv6-prio150", 52, 150, 50, []string{"fd00:100::100"}},
		{"ipv6-prio0", 52, 0, 50, []string{"fd00:100::100"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/keepalived/" + tc.file + ".hex")
			if err != nil {
				t.Fatal(err)
			}
			l3, err := hex.DecodeString(strings.TrimSpace(string(raw)))
			if err != nil {
				t.Fatal(err)
			}
			if !IsVRRP(l3) {
				t.Fatal("not seen as VRRP")
			}
			ip, err := ParseIP(l3)
			if err != nil {
				t.Fatal(err)
			}
			var a Advert
			if err := a.Decode(ip.Payload, ip.Src, ip.Dst); err != nil {
				t.Fatal(err)
			}
			want := Advert{VRID: tc.vrid, Priority: tc.prio, Interval: tc.interval}
			for _, s := range tc.addrs {
				want.Addrs = append(want.Addrs, netip.MustParseAddr(s))
			}
			if a.VRID != want.VRID || a.Priority != want.Priority || a.Interval != want.Interval || !sameAddrs(a.Addrs, want.Addrs) {
				t.Fatalf("decoded %+v, want %+v", a, want)
			}
			if got := want.Append(nil, ip.Src, ip.Dst); string(got) != string(ip.Payload) {
				t.Fatalf("encoded % x\nkeepalived % x", got, ip.Payload)
			}
		})
	}
}
