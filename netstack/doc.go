// Package netstack is the director's host and router, built on gVisor's
// userspace TCP/IP stack: its NICs sit on tun.Devices (TUN, TAP or in
// memory), it owns the director's addresses (the DIP and the VIPs), answers
// ping, ARP and NDP, routes by a static table and forwards what is not its
// own like a router (TTL, ICMP errors).
//
// When a Host is given a nat.Table, every IP packet read from a device goes
// through the NAT first, in place, before the stack decides between local
// delivery and forwarding: the point where IPVS hooks in. Packets of
// established connections may then skip the stack altogether (the bypass)
// and go straight to the egress device.
//
// The same Host, without a NAT, is the client and the real servers of the
// in-process lab. gVisor's tcpip.Error values are converted to Go errors at
// this package's edge.
package netstack
