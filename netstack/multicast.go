package netstack

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Multicast UDP on one NIC, for the IPVS sync daemons (ipvssync.Transport):
// their datagrams go over the director's own stack on the named link, as
// the kernel's go out of --mcast-interface.

// LinkMTU is the MTU of the NIC named name.
func (h *Host) LinkMTU(name string) (int, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return 0, err
	}
	return n.MTU(), nil
}

// MulticastSender is a UDP socket sending to group out of the NIC named
// name, from its primary address, with the given TTL (hop limit) and no
// copy looped back: the kernel's make_send_sock (bind_mcastif_addr,
// set_mcast_if, set_mcast_ttl, set_mcast_loop off).
func (h *Host) MulticastSender(name string, group netip.AddrPort, ttl uint8) (io.WriteCloser, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return nil, err
	}
	v6 := group.Addr().Is6()
	src := n.localAddr(v6)
	if !src.IsValid() {
		return nil, fmt.Errorf("multicast on %s: the link has no address of the group's family", name)
	}
	var wq waiter.Queue
	ep, terr := h.s.NewEndpoint(udp.ProtocolNumber, protoOf(group.Addr()), &wq)
	if terr != nil {
		return nil, fmt.Errorf("multicast on %s: %s", name, terr)
	}
	fail := func(what string, e tcpip.Error) (io.WriteCloser, error) {
		ep.Close()
		return nil, fmt.Errorf("multicast on %s: %s: %s", name, what, e)
	}
	if e := ep.SetSockOpt(&tcpip.MulticastInterfaceOption{NIC: n.id, InterfaceAddr: toTCPIP(src)}); e != nil {
		return fail("interface", e)
	}
	if e := ep.SetSockOptInt(tcpip.MulticastTTLOption, int(ttl)); e != nil {
		return fail("ttl", e)
	}
	ep.SocketOptions().SetMulticastLoop(false)
	if e := ep.Bind(tcpip.FullAddress{NIC: n.id, Addr: toTCPIP(src)}); e != nil {
		return fail("bind", e)
	}
	if e := ep.Connect(tcpip.FullAddress{NIC: n.id, Addr: toTCPIP(group.Addr()), Port: group.Port()}); e != nil {
		return fail("connect", e)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// MulticastListener is a UDP socket bound to group's port that has joined
// group on the NIC named name (the kernel's make_receive_sock: bound to
// the group and port, a member on the link).
func (h *Host) MulticastListener(name string, group netip.AddrPort) (net.PacketConn, error) {
	n, err := h.NICByName(name)
	if err != nil {
		return nil, err
	}
	var wq waiter.Queue
	ep, terr := h.s.NewEndpoint(udp.ProtocolNumber, protoOf(group.Addr()), &wq)
	if terr != nil {
		return nil, fmt.Errorf("multicast on %s: %s", name, terr)
	}
	fail := func(what string, e tcpip.Error) (net.PacketConn, error) {
		ep.Close()
		return nil, fmt.Errorf("multicast on %s: %s: %s", name, what, e)
	}
	// Several daemons (or a kernel's) may share the port.
	ep.SocketOptions().SetReuseAddress(true)
	ep.SocketOptions().SetReusePort(true)
	if e := ep.Bind(tcpip.FullAddress{NIC: n.id, Addr: toTCPIP(group.Addr()), Port: group.Port()}); e != nil {
		return fail("bind", e)
	}
	if e := ep.SetSockOpt(&tcpip.AddMembershipOption{NIC: n.id, MulticastAddr: toTCPIP(group.Addr())}); e != nil {
		return fail("join", e)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}
