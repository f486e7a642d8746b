// Package nat is the director's NAT: the virtual services and their real
// servers, the connection table, and the in-place rewrite of each packet,
// with the semantics of Linux IPVS in masquerading (NAT) mode.
//
// A packet from a client to a virtual service (VIP:port) opens a connection:
// the service's scheduler picks a real server and the packet's destination
// is rewritten to it (DNAT). Later packets of either direction find the
// connection by a packed flow key; replies from the real server get the
// VIP:port back as their source (SNAT). ICMP errors about a connection are
// translated inside and out, so path-MTU discovery works through the
// director. TCP connections walk IPVS's state table and expire on its
// timeouts, measured on a clock the caller passes in.
//
// The package neither reads nor writes devices and does not route: netstack
// hands it packets at ingress, before the routing decision (where IPVS
// hooks in), and routes what it returns.
//
// Lock order: Service.mu, then table shards of the "in" table, then shards
// of the "out" table; a Conn's own mu is taken last and never held while
// taking another lock.
package nat
