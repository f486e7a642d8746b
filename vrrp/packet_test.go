package vrrp

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunvs/tunvs/internal/csum"
)

func TestAdvertRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		src   string
		addrs []string
	}{
		{"10.0.0.2", []string{"10.0.0.100", "10.0.0.1"}},
		{"fe80::1", []string{"2001:db8::100"}},
	} {
		src := netip.MustParseAddr(tc.src)
		a := Advert{VRID: 51, Priority: 150, Interval: 100}
		for _, s := range tc.addrs {
			a.Addrs = append(a.Addrs, netip.MustParseAddr(s))
		}
		f := AppendAdvertFrame(nil, &a, VirtualMAC(51, src.Is6()), src)
		l3 := f[ethLen:]
		ip, err := ParseIP(l3)
		if err != nil {
			t.Fatal(err)
		}
		g := Group4
		if src.Is6() {
			g = Group6
		}
		if ip.Src != src || ip.Dst != g {
			t.Fatalf("ip %v -> %v", ip.Src, ip.Dst)
		}
		if src.Is4() && fold(csum.Sum(l3[:20], 0)) != 0 {
			t.Fatal("ipv4 header checksum")
		}
		var b Advert
		if err := b.Decode(ip.Payload, ip.Src, ip.Dst); err != nil {
			t.Fatal(err)
		}
		if b.VRID != 51 || b.Priority != 150 || b.Interval != 100 || !sameAddrs(b.Addrs, a.Addrs) {
			t.Fatalf("decoded %+v, want %+v", b, a)
		}
		// Every discard reason of 7.1 that the bytes can show.
		bad := func(name string, want Reason, mut func(l3 []byte)) {
			t.Helper()
			c := append([]byte(nil), l3...)
			mut(c)
			ip, err := ParseIP(c)
			if err == nil {
				err = new(Advert).Decode(ip.Payload, ip.Src, ip.Dst)
			}
			if ReasonOf(err) != want {
				t.Errorf("%s %s: got %v, want %v", tc.src, name, err, want)
			}
		}
		off := 20
		ttl := 8
		if src.Is6() {
			off, ttl = 40, 7
		}
		bad("ttl 254", ReasonTTL, func(c []byte) {
			c[ttl] = 254
			if src.Is4() {
				binary.BigEndian.PutUint16(c[10:], 0)
				binary.BigEndian.PutUint16(c[10:], fold(csum.Sum(c[:20], 0)))
			}
		})
		bad("checksum", ReasonChecksum, func(c []byte) { c[off+6] ^= 1 })
		bad("priority changed", ReasonChecksum, func(c []byte) { c[off+2]++ })
		bad("version 2", ReasonVersion, func(c []byte) { c[off] = 2<<4 | 1 })
		bad("type 2", ReasonType, func(c []byte) { c[off] = 3<<4 | 2 })
		bad("count", ReasonShort, func(c []byte) { c[off+3] = 9 })
		bad("truncated", ReasonShort, func(c []byte) {
			if src.Is4() {
				binary.BigEndian.PutUint16(c[2:], 200)
			} else {
				binary.BigEndian.PutUint16(c[4:], 200)
			}
		})
	}
}

// A different pseudo-header (another source) fails the checksum: version
// 3 covers it, as version 2 did not.
func TestChecksumCoversPseudoHeader(t *testing.T) {
	a := Advert{VRID: 1, Priority: 100, Interval: 100, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	src := netip.MustParseAddr("192.0.2.2")
	m := a.Append(nil, src, Group4)
	if err := new(Advert).Decode(m, src, Group4); err != nil {
		t.Fatal(err)
	}
	if err := new(Advert).Decode(m, netip.MustParseAddr("192.0.2.3"), Group4); ReasonOf(err) != ReasonChecksum {
		t.Fatalf("other source: %v", err)
	}
}

func TestAnnouncements(t *testing.T) {
	mac := VirtualMAC(7, false)
	if mac.String() != "00:00:5e:00:01:07" || VirtualMAC(7, true).String() != "00:00:5e:00:02:07" {
		t.Fatal(mac, VirtualMAC(7, true))
	}
	vip := netip.MustParseAddr("10.0.0.100")
	g := AppendGratuitousARP(nil, mac, vip)
	if len(g) != 42 || MAC(g[0:6]) != broadcast || MAC(g[6:12]) != mac || binary.BigEndian.Uint16(g[12:]) != etherARP ||
		binary.BigEndian.Uint16(g[20:]) != 1 || MAC(g[22:28]) != mac || netip.AddrFrom4([4]byte(g[28:32])) != vip || netip.AddrFrom4([4]byte(g[38:42])) != vip {
		t.Fatalf("garp % x", g)
	}
	ll := LinkLocal(MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	if ll.String() != "fe80::5054:ff:fe12:3456" {
		t.Fatal(ll)
	}
	vip6 := netip.MustParseAddr("2001:db8::100")
	mac6 := VirtualMAC(7, true)
	na := AppendUnsolicitedNA(nil, mac6, ll, vip6)
	l3 := na[ethLen:]
	if MAC(na[0:6]) != (MAC{0x33, 0x33, 0, 0, 0, 1}) || l3[6] != 58 || l3[7] != 255 {
		t.Fatalf("na % x", na)
	}
	icmp := l3[40:]
	s := csum.Sum(l3[8:40], 0)
	var ph [8]byte
	binary.BigEndian.PutUint32(ph[:], uint32(len(icmp)))
	ph[7] = 58
	if fold(csum.Sum(icmp, csum.Sum(ph[:], s))) != 0 {
		t.Fatal("icmpv6 checksum")
	}
	if icmp[0] != 136 || icmp[4] != 0xa0 || netip.AddrFrom16([16]byte(icmp[8:24])) != vip6 || MAC(icmp[26:32]) != mac6 {
		t.Fatalf("na body % x", icmp)
	}
}

func TestIsVRRP(t *testing.T) {
	a := Advert{VRID: 1, Priority: 100, Interval: 100, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	f := AppendAdvertFrame(nil, &a, VirtualMAC(1, false), netip.MustParseAddr("192.0.2.2"))
	if !IsVRRP(f[ethLen:]) {
		t.Fatal("v4 advert not seen")
	}
	a.Addrs = []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	f = AppendAdvertFrame(nil, &a, VirtualMAC(1, true), netip.MustParseAddr("fe80::2"))
	if !IsVRRP(f[ethLen:]) {
		t.Fatal("v6 advert not seen")
	}
	if IsVRRP(make([]byte, 60)) || IsVRRP(nil) {
		t.Fatal("zeros seen as vrrp")
	}
}

func FuzzReceive(f *testing.F) {
	a := Advert{VRID: 9, Priority: 100, Interval: 100, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	f.Add(AppendAdvertFrame(nil, &a, VirtualMAC(9, false), netip.MustParseAddr("192.0.2.2"))[ethLen:])
	a.Addrs = []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	f.Add(AppendAdvertFrame(nil, &a, VirtualMAC(9, true), netip.MustParseAddr("fe80::2"))[ethLen:])
	// keepalived's own adverts (golden_test.go).
	files, _ := filepath.Glob("testdata/keepalived/*.hex")
	for _, fn := range files {
		if raw, err := os.ReadFile(fn); err == nil {
			if b, err := hex.DecodeString(strings.TrimSpace(string(raw))); err == nil {
				f.Add(b)
			}
		}
	}
	rc := NewReceiver()
	f.Fuzz(func(t *testing.T, b []byte) {
		ip, err := ParseIP(b)
		if err != nil {
			if ReasonOf(err) == ReasonNone {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		var a Advert
		if err := a.Decode(ip.Payload, ip.Src, ip.Dst); err == nil {
			// What decodes encodes back to the same message. Bytes after
			// the addresses are no part of the advert but are covered by
			// the sender's checksum (over the whole payload, as keepalived
			// sums it), so with them only the checksum may differ.
			m := a.Append(nil, ip.Src, ip.Dst)
			was := ip.Payload[:len(m)]
			same := string(m) == string(was)
			if len(ip.Payload) > len(m) {
				same = string(m[:6]) == string(was[:6]) && string(m[8:]) == string(was[8:])
			}
			if !same && binary.BigEndian.Uint16(ip.Payload[4:])&0xf000 == 0 {
				t.Fatalf("re-encoded % x, was % x", m, ip.Payload)
			}
		}
		rc.Receive("lan", b)
	})
}
