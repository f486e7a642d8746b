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
// Persistent services keep the kernel's connection templates (one per
// client network, listed with the connections), real servers may have
// connection thresholds (-x/-y, the overload flag), UDP services may
// schedule each datagram on its own (--ops), and the sysctls
// expire_nodest_conn, expire_quiescent_template and conn_reuse_mode have
// the kernel's defaults (Config fields at start, rules.SysctlTable's
// knobs later). Removed real servers behave as
// in Linux 6.1: their connections stay until they expire but client
// packets of them are dropped, and adding the server back revives it.
//
// The package neither reads nor writes devices and does not route: netstack
// hands it packets at ingress, before the routing decision (where IPVS
// hooks in), and routes what it returns.
//
// The configuration is a rules.Rules value: Table.Rules reads it, and
// Table.Apply (or Table.Update, for a read and a change in one step)
// changes it by a rules.Diff, checked whole before anything is touched.
// Every writer goes through them: tunvsadm, rules files, reloads, the
// health checks. Table.RunExpiry expires connections on the caller's
// clock.
//
// Lock order: Table.cfgMu (the writer lock of Update and Apply), then
// Service.mu, then table shards of the "in" table, then shards of the
// "out" table, then Table.tplMu (templates), Table.trashMu and a Dest's
// dstMu; a Conn's own mu is taken last and never held while taking
// another lock. The packet path never takes cfgMu.
package nat
