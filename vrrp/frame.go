package vrrp

import (
	"encoding/binary"
	"net/netip"

	"github.com/tunvs/tunvs/internal/csum"
)

// The Ethernet frames a virtual router sends: adverts, and on takeover
// the announcements that move its addresses (RFC 5798 6.4.1, 8.1.2,
// 8.2.2).

// MAC is an Ethernet address.
type MAC [6]byte

func (m MAC) String() string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, x := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[x>>4], hex[x&0xf])
	}
	return string(b)
}

// VirtualMAC is the router's virtual MAC address: 00-00-5E-00-01-{VRID}
// for IPv4, 00-00-5E-00-02-{VRID} for IPv6 (RFC 5798 7.3).
func VirtualMAC(vrid uint8, v6 bool) MAC {
	if v6 {
		return MAC{0, 0, 0x5e, 0, 2, vrid}
	}
	return MAC{0, 0, 0x5e, 0, 1, vrid}
}

var broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// multicastMAC is the Ethernet group an IP multicast address maps to
// (RFC 1112 6.4, RFC 2464 7).
func multicastMAC(g netip.Addr) MAC {
	if g.Is4() {
		a := g.As4()
		return MAC{0x01, 0x00, 0x5e, a[1] & 0x7f, a[2], a[3]}
	}
	a := g.As16()
	return MAC{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86dd
	etherARP  = 0x0806
	ethLen    = 14
)

func appendEth(b []byte, dst, src MAC, typ uint16) []byte {
	b = append(b, dst[:]...)
	b = append(b, src[:]...)
	return binary.BigEndian.AppendUint16(b, typ)
}

// appendIP appends an IPv4 or IPv6 header for a payload of n bytes of
// protocol proto with TTL (hop limit) ttl. IPv4's is as the kernel's raw
// socket fills it for keepalived: TOS 0xc0 (IPTOS_PREC_INTERNETCONTROL,
// which keepalived sets), DF clear, id 0.
func appendIP(b []byte, src, dst netip.Addr, proto uint8, ttl uint8, n int) []byte {
	if src.Is4() {
		h := len(b)
		b = append(b, 0x45, 0xc0)
		b = binary.BigEndian.AppendUint16(b, uint16(20+n))
		b = append(b, 0, 0, 0, 0, ttl, proto, 0, 0)
		b = append(b, src.AsSlice()...)
		b = append(b, dst.AsSlice()...)
		binary.BigEndian.PutUint16(b[h+10:], ^uint16(csum.Sum(b[h:h+20], 0)))
		return b
	}
	b = append(b, 0x6c, 0, 0, 0) // traffic class 0xc0, as IPv4's TOS
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = append(b, proto, ttl)
	b = append(b, src.AsSlice()...)
	return append(b, dst.AsSlice()...)
}

// AppendAdvertFrame appends an advert from src (the link's primary
// address: IPv6's must be link-local) and the virtual MAC, to the VRRP
// group, as an Ethernet frame.
func AppendAdvertFrame(b []byte, a *Advert, src MAC, from netip.Addr) []byte {
	g := Group4
	typ := uint16(etherIPv4)
	if from.Is6() {
		g, typ = Group6, etherIPv6
	}
	b = appendEth(b, multicastMAC(g), src, typ)
	b = appendIP(b, from, g, Proto, TTL, hdrLen+len(a.Addrs)*len(from.AsSlice()))
	return a.Append(b, from, g)
}

// AppendGratuitousARP appends an ARP request for addr from addr, with
// mac as the sender's hardware address, broadcast: what a new master
// sends for each IPv4 address it takes over (RFC 5798 6.4.1 (225), as
// the kernel's arp_send(ARPOP_REQUEST, ...) that keepalived's
// send_gratuitous_arp builds).
func AppendGratuitousARP(b []byte, mac MAC, addr netip.Addr) []byte {
	b = appendEth(b, broadcast, mac, etherARP)
	b = append(b, 0, 1, 8, 0, 6, 4, 0, 1) // Ethernet, IPv4, request
	b = append(b, mac[:]...)
	b = append(b, addr.AsSlice()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, addr.AsSlice()...)
}

// allNodes is ff02::1, where unsolicited Neighbor Advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// AppendUnsolicitedNA appends an unsolicited Neighbor Advertisement for
// addr with mac as its target link-layer address, override set, router
// set, to all nodes, from src (RFC 4861 7.2.6; RFC 5798 6.4.1 (230)).
func AppendUnsolicitedNA(b []byte, mac MAC, src, addr netip.Addr) []byte {
	const naLen = 24 + 8
	b = appendEth(b, multicastMAC(allNodes), mac, etherIPv6)
	b = appendIP(b, src, allNodes, 58, 255, naLen)
	m := len(b)
	b = append(b, 136, 0, 0, 0)  // Neighbor Advertisement, code 0, checksum
	b = append(b, 0xa0, 0, 0, 0) // router, override
	b = append(b, addr.AsSlice()...)
	b = append(b, 2, 1) // target link-layer address, 8 bytes
	b = append(b, mac[:]...)
	s := csum.Sum(src.AsSlice(), 0)
	s = csum.Sum(allNodes.AsSlice(), s)
	var t [8]byte
	binary.BigEndian.PutUint32(t[0:], naLen)
	t[7] = 58
	s = csum.Sum(t[:], s)
	binary.BigEndian.PutUint16(b[m+2:], fold(csum.Sum(b[m:], s)))
	return b
}

// LinkLocal is the EUI-64 IPv6 link-local address of mac (RFC 4291
// 2.5.1, RFC 2464 5): the source of a router's IPv6 adverts when its
// link has none configured.
func LinkLocal(mac MAC) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
}
