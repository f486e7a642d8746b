// Package sched chooses the real server for each new connection, with the
// algorithms and the exact choices of the Linux IPVS schedulers.
//
// A Scheduler is a value with its own state; it never touches packets or the
// connection table. It sees the service's real servers through the Dest
// interface, in IPVS list order: the most recently added server first, as
// the kernel's list_add to the head of svc->destinations leaves them.
//
// The schedulers are those of Linux 6.1's net/netfilter/ipvs: rr, wrr,
// wlc, lc, sed, nq, fo, ovf, twos (connection counting or turns), sh, dh,
// mh (hashing of Flow addresses, with the kernel's hash functions and
// table sizes, so that a flow maps to the same server as in the kernel),
// and lblc, lblcr (per destination address caches with the kernel's
// expiry timer, replayed from a clock). twos draws random numbers, so only
// its rule, not its individual choices, can match the kernel's.
package sched

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
)

// Dest is what a scheduler reads of a real server. Implementations must make
// these cheap and safe to call concurrently with the packet path.
type Dest interface {
	// Weight is the configured weight, 0..65535. Weight 0 means quiesced:
	// no new connections.
	Weight() int
	// ActiveConns and InactConns are the counts ipvsadm shows.
	ActiveConns() int
	InactConns() int
	// Overloaded reports IPVS's IP_VS_DEST_F_OVERLOAD (connection
	// thresholds); a scheduler skips an overloaded server.
	Overloaded() bool
	// Addr is the real server's address and port.
	Addr() netip.AddrPort
}

// Flow describes the connection being scheduled, for the hashing
// schedulers, and when: the schedulers that keep time (lblc, lblcr) run on
// the NAT table's clock, not their own.
type Flow struct {
	Proto   uint8
	Src     netip.Addr
	SrcPort uint16
	Dst     netip.Addr
	DstPort uint16
	// Now is the time of the packet being scheduled, in Unix nanoseconds
	// on the clock the table processes packets with; 0: unknown.
	Now int64
}

// Scheduler picks a real server for a new connection.
//
// Update and Pick are never called concurrently for the same Scheduler: the
// caller (the service) serialises them, as the kernel does with the
// service's scheduler lock. Update is called whenever the set of servers,
// their order or a weight changes; the slice is the scheduler's to keep
// until the next Update and must not be modified by the caller.
type Scheduler interface {
	// Name is the ipvsadm name ("rr", "wrr", "wlc", ...).
	Name() string
	// Update gives the scheduler the service's servers in IPVS list
	// order (newest first).
	Update(dests []Dest)
	// Pick returns the index in the last Update's slice of the server for
	// a new connection, or -1 when no server is available (IPVS logs "no
	// destination available" and the packet is dropped or rejected).
	Pick(f *Flow) int
}

// ErrUnknown is returned by New for a name it does not know.
var ErrUnknown = errors.New("unknown scheduler")

// Flags are ipvsadm's scheduler flags (-b), the kernel's
// IP_VS_SVC_F_SCHED1..3: sh-fallback/mh-fallback are FlagSched1,
// sh-port/mh-port FlagSched2. Schedulers that do not use a flag ignore it.
type Flags uint8

// The scheduler flags.
const (
	FlagSched1 Flags = 1 << iota
	FlagSched2
	FlagSched3
)

var registry = map[string]func(Flags) Scheduler{}

func register(name string, f func() Scheduler) {
	registry[name] = func(Flags) Scheduler { return f() }
}

// registerFlags registers a scheduler that reads the -b flags.
func registerFlags(name string, f func(Flags) Scheduler) { registry[name] = f }

// New returns a new scheduler by its ipvsadm name, without flags.
func New(name string) (Scheduler, error) { return NewWithFlags(name, 0) }

// NewWithFlags returns a new scheduler by its ipvsadm name with -b flags.
func NewWithFlags(name string, f Flags) (Scheduler, error) {
	mk, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknown, name, Names())
	}
	return mk(f), nil
}

// Names lists the known scheduler names, sorted.
func Names() []string {
	n := make([]string, 0, len(registry))
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
