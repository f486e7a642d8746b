package netstack

import (
	"errors"
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/tun"
)

// What a VRRP router (package vrrp) needs of the host: its protocol's
// packets, raw frames out, a virtual MAC on a TAP NIC and addresses that
// come and go.

// vrrpProto is VRRP's IP protocol number (RFC 5798 5.2).
const vrrpProto = 112

// isVRRP reports whether an IPv4 or IPv6 packet carries VRRP.
func isVRRP(l3 []byte) bool {
	if len(l3) < 20 {
		return false
	}
	switch l3[0] >> 4 {
	case 4:
		return l3[9] == vrrpProto
	case 6:
		return len(l3) >= 40 && l3[6] == vrrpProto
	}
	return false
}

// SetVRRP hands every VRRP packet read on a TAP link (the IP packet, valid
// only during the call) to fn, on the link's reader goroutine, instead of
// the stack; nil gives them back to the stack (which drops them).
func (h *Host) SetVRRP(fn func(link string, l3 []byte)) {
	if fn == nil {
		h.vrrp.Store(nil)
		return
	}
	h.vrrp.Store(&fn)
}

// ErrNotTAP is an Ethernet operation on a TUN link.
var ErrNotTAP = errors.New("not a TAP link")

func (h *Host) tapNIC(name string) (*NIC, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return nil, err
	}
	if n.kind != tun.KindTAP {
		return nil, fmt.Errorf("%s: %w", name, ErrNotTAP)
	}
	return n, nil
}

// WriteFrame sends one Ethernet frame, built whole by the caller, out of
// the TAP link named name.
func (h *Host) WriteFrame(name string, frame []byte) error {
	n, err := h.tapNIC(name)
	if err != nil {
		return err
	}
	b := make([]byte, bufOffset+len(frame))
	copy(b[bufOffset:], frame)
	if hk := h.hooks; hk != nil && hk.capture != nil {
		hk.capture.Frame(n.name, n.kind, true, b[bufOffset:])
	}
	if _, err := n.txq[0].write([][]byte{b}, bufOffset); err != nil {
		h.Counters.WriteErrors.Add(1)
		return fmt.Errorf("write to %s: %w", name, err)
	}
	return nil
}

// SetLinkMAC makes mac the Ethernet address the TAP link named name sends
// from and answers ARP and Neighbor Solicitations with (a VRRP master's
// virtual MAC); nil gives it back its own. Frames to its own address and
// to the addresses also are received as well.
func (h *Host) SetLinkMAC(name string, mac []byte, also [][]byte) error {
	n, err := h.tapNIC(name)
	if err != nil {
		return err
	}
	for _, m := range append([][]byte{mac}, also...) {
		if m != nil && len(m) != 6 {
			return fmt.Errorf("%s: mac of %d bytes", name, len(m))
		}
	}
	var extra []tcpip.LinkAddress
	for _, m := range also {
		extra = append(extra, tcpip.LinkAddress(m))
	}
	if len(extra) == 0 {
		n.also.Store(nil)
	} else {
		n.also.Store(&extra)
	}
	if mac == nil {
		n.hw.Store(&n.mac)
		return nil
	}
	a := tcpip.LinkAddress(mac)
	n.hw.Store(&a)
	return nil
}

// forMe reports whether a frame to the Ethernet address dst is the NIC's
// to take: its own address, the one it uses now, or one of also.
func (n *NIC) forMe(dst []byte) bool {
	if string(dst) == string(n.curMAC()) || string(dst) == string(n.mac) {
		return true
	}
	if p := n.also.Load(); p != nil {
		for _, a := range *p {
			if string(dst) == string(a) {
				return true
			}
		}
	}
	return false
}

// OwnMAC is the TAP link's own Ethernet address (not a virtual one).
func (h *Host) OwnMAC(name string) ([]byte, error) {
	n, err := h.tapNIC(name)
	if err != nil {
		return nil, err
	}
	return []byte(n.mac), nil
}

// AddVirtualAddress puts a VRRP virtual address on a NIC, with the
// connected route for its prefix unless the NIC has that route already
// (its own address in the same subnet, as usual): the kernel keeps one
// prefix route per subnet, not one per address.
func (h *Host) AddVirtualAddress(name string, p netip.Prefix) error {
	defer h.routesChanged()
	n, err := h.addProtocolAddress(name, p)
	if err != nil {
		return err
	}
	if p.Bits() == p.Addr().BitLen() {
		return nil
	}
	sn, err := toSubnet(p)
	if err != nil {
		return err
	}
	for _, r := range h.s.GetRouteTable() {
		if r.NIC == n.id && r.Destination == sn && r.Gateway.Len() == 0 {
			return nil
		}
	}
	h.s.AddRoute(tcpip.Route{Destination: sn, NIC: n.id})
	return nil
}

// addProtocolAddress assigns p to the NIC named name, without a route.
func (h *Host) addProtocolAddress(name string, p netip.Prefix) (*NIC, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return nil, err
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          protoOf(p.Addr()),
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(p.Addr()), PrefixLen: p.Bits()},
	}
	if e := h.s.AddProtocolAddress(n.id, pa, stack.AddressProperties{}); e != nil {
		return nil, convErr(fmt.Sprintf("add address %v to %s", p, name), e)
	}
	return n, nil
}

// RemoveVirtualAddress takes a virtual address off a NIC, and the
// connected route for its prefix if no other address of the NIC is in
// it (fib_del_ifaddr's rule).
func (h *Host) RemoveVirtualAddress(name string, p netip.Prefix) error {
	defer h.routesChanged()
	n, err := h.NICByName(name)
	if err != nil {
		return err
	}
	if e := h.s.RemoveAddress(n.id, toTCPIP(p.Addr())); e != nil {
		return convErr(fmt.Sprintf("remove address %v from %s", p, name), e)
	}
	if p.Bits() == p.Addr().BitLen() {
		return nil
	}
	pm := p.Masked()
	for _, a := range h.s.AllAddresses()[n.id] {
		x := fromTCPIP(a.AddressWithPrefix.Address)
		if x.IsValid() && x.Is4() == pm.Addr().Is4() && pm.Contains(x) && a.AddressWithPrefix.PrefixLen < x.BitLen() {
			return nil
		}
	}
	sn, err := toSubnet(p)
	if err != nil {
		return err
	}
	h.s.RemoveRoutes(func(r tcpip.Route) bool { return r.NIC == n.id && r.Destination == sn && r.Gateway.Len() == 0 })
	return nil
}

// PrimaryAddr is the NIC's main address of a family (invalid if none).
func (h *Host) PrimaryAddr(name string, v6 bool) (netip.Addr, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return netip.Addr{}, err
	}
	return n.localAddr(v6), nil
}

// LinkLocal is an IPv6 link-local address of the NIC, the one it has or,
// if none, ll added as /64 (RFC 4291 2.5.6).
func (h *Host) LinkLocal(name string, ll netip.Addr) (netip.Addr, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range h.s.AllAddresses()[n.id] {
		if a.Protocol == ipv6.ProtocolNumber {
			if x := fromTCPIP(a.AddressWithPrefix.Address); x.IsLinkLocalUnicast() {
				return x, nil
			}
		}
	}
	if err := h.AddAddress(name, netip.PrefixFrom(ll, 64)); err != nil {
		return netip.Addr{}, err
	}
	return ll, nil
}
