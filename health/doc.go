// Package health checks the real servers of tunvs's virtual services and
// takes them out of the pool and back on their own, as keepalived does for
// the kernel's IPVS.
//
// Every checked real server has one goroutine that runs its check every
// Interval with a Timeout: a TCP connect, an HTTP(S) GET (status ranges,
// an MD5 digest as keepalived's HTTP_GET, a SHA-256 digest, a substring,
// a virtual host), a UDP request and expected reply, an ICMP echo, or an
// external command (keepalived's MISC_CHECK, misc_dynamic included).
// After Fall failures in a row the server is down: its weight is set to 0
// (OnFail Inhibit, keepalived's inhibit_on_failure: existing connections
// drain) or it is removed from the service (OnFail Remove, keepalived's
// default); after Rise successes in a row it is up again with its weight
// restored, or added back.
//
// The network checks run from the director's own gVisor stack (its DIP,
// its routes: the ones the NAT forwards by), not from the machine's
// network, so they work in the zero-privilege lab. The external command is
// the exception: it is a process on the machine tunvs runs on and sees the
// machine's network, not the director's.
//
// Checks never run on the packet path: they are goroutines of their own,
// each bounded by its timeout, and their only effect on the NAT is the
// configuration calls ipvsadm -e/-a/-d would make.
package health
