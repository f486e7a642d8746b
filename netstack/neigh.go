package netstack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/tun"
)

// maxHops bounds the bypass's table of next hops. A director has a few
// (the real servers, a router); a flat segment of directly attached
// clients has one per client. Past the bound new connections go through
// the stack.
const maxHops = 1 << 16

// hop is where the bypass sends a connection direction: an egress NIC
// and, on a TAP, the next hop on its segment and that hop's Ethernet
// address as the stack's neighbour table (ARP, NDP) knows it. The
// connection's Egress slot holds the hop's index + 1, so the packet path
// reaches the MAC with two loads and no lock.
type hop struct {
	nic   *NIC
	addr  tcpip.Address // next hop: the route's gateway, or the destination itself
	local tcpip.Address // the route's source address, for the stack's probes
	proto tcpip.NetworkProtocolNumber

	// mac is the next hop's MAC in the low 48 bits with macKnown set,
	// or 0 while the stack has no usable entry: the bypass then leaves
	// the packet to the stack, which resolves the address.
	mac atomic.Uint64
	// stale is set while the stack's entry is STALE (not confirmed for
	// a reachable time); used, that the bypass has sent by it since.
	// The sweep turns the pair into a confirmation (see revalidate).
	stale, used atomic.Bool
}

const macKnown = 1 << 48

// hopKey identifies a hop: a TUN has one, with no address.
type hopKey struct {
	nic  tcpip.NICID
	addr tcpip.Address
}

// hopTable holds the hops, published copy-on-write for the packet path.
// It is the stack's NUD dispatcher: every change of a neighbour entry
// reaches the hop it belongs to, so a hop never outlives what the stack
// knows.
type hopTable struct {
	mu    sync.Mutex
	index map[hopKey]uint32 // index + 1 into list
	list  atomic.Pointer[[]*hop]
}

var _ stack.NUDDispatcher = (*hopTable)(nil)

func newHopTable() *hopTable {
	t := &hopTable{index: map[hopKey]uint32{}}
	empty := []*hop{}
	t.list.Store(&empty)
	return t
}

// at is the hop of an Egress value (index + 1), which must be valid.
func (t *hopTable) at(eg uint32) *hop { return (*t.list.Load())[eg-1] }

// get returns the Egress value of the hop with key k, made if new, or
// noBypass when the table is full. It reports whether the hop is new.
func (t *hopTable) get(k hopKey, mk func() *hop) (uint32, *hop) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.index[k]; ok {
		return i, nil
	}
	old := *t.list.Load()
	if len(old) >= maxHops {
		return noBypass, nil
	}
	hp := mk()
	list := append(old[:len(old):len(old)], hp)
	t.list.Store(&list)
	i := uint32(len(list))
	t.index[k] = i
	return i, hp
}

// OnNeighborAdded, OnNeighborChanged and OnNeighborRemoved are called by
// the stack, with the entry locked, on every change of a neighbour entry.
func (t *hopTable) OnNeighborAdded(nic tcpip.NICID, e stack.NeighborEntry) { t.update(nic, e) }

func (t *hopTable) OnNeighborChanged(nic tcpip.NICID, e stack.NeighborEntry) { t.update(nic, e) }

func (t *hopTable) OnNeighborRemoved(nic tcpip.NICID, e stack.NeighborEntry) {
	if hp := t.lookup(nic, e.Addr); hp != nil {
		hp.mac.Store(0)
		hp.stale.Store(false)
	}
}

func (t *hopTable) lookup(nic tcpip.NICID, addr tcpip.Address) *hop {
	t.mu.Lock()
	i, ok := t.index[hopKey{nic, addr}]
	t.mu.Unlock()
	if !ok {
		return nil
	}
	return t.at(i)
}

// update follows the entry's state as the kernel's neighbour code does
// for its fast output (net/core/neighbour.c): REACHABLE, DELAY, PROBE
// and permanent entries are used as they are; a STALE one is used too
// (RFC 4861 7.3.3: packets keep flowing while reachability is
// reasserted) but its use asks for a confirmation; INCOMPLETE,
// UNREACHABLE and FAILED ones are not used, and their packets go to the
// stack, which resolves the address again.
func (t *hopTable) update(nic tcpip.NICID, e stack.NeighborEntry) {
	hp := t.lookup(nic, e.Addr)
	if hp == nil {
		return
	}
	switch e.State {
	case stack.Reachable, stack.Static, stack.Delay, stack.Probe, stack.Stale:
		hp.setMAC(e.LinkAddr)
		hp.stale.Store(e.State == stack.Stale)
	default:
		hp.mac.Store(0)
		hp.stale.Store(false)
	}
}

// setMAC stores a link address, or forgets the MAC if it is not an
// Ethernet address.
func (hp *hop) setMAC(a tcpip.LinkAddress) {
	if len(a) != 6 {
		hp.mac.Store(0)
		return
	}
	var v uint64
	for i := range 6 {
		v = v<<8 | uint64(a[i])
	}
	hp.mac.Store(v | macKnown)
}

// putMAC writes the 48-bit address of a mac value into b[0:6].
func putMAC(b []byte, mac uint64) {
	_ = b[5]
	b[0], b[1], b[2] = byte(mac>>40), byte(mac>>32), byte(mac>>24)
	b[3], b[4], b[5] = byte(mac>>16), byte(mac>>8), byte(mac)
}

// egressHop finds or makes the hop for the NIC nic and next hop next (the
// address is ignored on a TUN) and returns its Egress value. A new TAP
// hop asks the stack for the address: known, it is taken at once (a
// STALE entry then also starts its confirmation); unknown, the stack
// resolves it and the NUD events fill the hop in.
func (h *Host) egressHop(nic *NIC, next, local tcpip.Address, proto tcpip.NetworkProtocolNumber) uint32 {
	k := hopKey{nic: nic.id}
	if nic.kind == tun.KindTAP {
		k.addr = next
	}
	eg, hp := h.hops.get(k, func() *hop {
		return &hop{nic: nic, addr: k.addr, local: local, proto: proto}
	})
	if hp != nil && nic.kind == tun.KindTAP {
		_ = h.s.GetLinkAddress(nic.id, next, local, proto, func(r stack.LinkResolutionResult) {
			if r.Err == nil {
				hp.setMAC(r.LinkAddress)
			}
		})
	}
	return eg
}

// revalidate asks the stack to confirm the STALE neighbours the bypass
// has sent to since the last sweep. Asking for a STALE entry's address
// moves it to DELAY and then PROBE (unicast probes), as a kernel
// forwarding through a stale neighbour does (__neigh_event_send in
// net/core/neighbour.c): answered, the entry is REACHABLE again; not,
// it becomes UNREACHABLE and the hop forgets the MAC, so a neighbour
// whose address changed without telling is found again by the stack's
// broadcast resolution. Without this the bypass, which keeps the
// stack from ever sending to the neighbour, would keep a stale MAC for
// good.
func (h *Host) revalidate() {
	for _, hp := range *h.hops.list.Load() {
		if hp.stale.Load() && hp.used.Swap(false) {
			_ = h.s.GetLinkAddress(hp.nic.id, hp.addr, hp.local, hp.proto, nil)
		}
	}
}
