package netstack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

// Config configures a Host.
type Config struct {
	// NAT, if set, makes the host a director: every IP packet read from a
	// device goes through it before the stack sees it.
	NAT *nat.Table
	// Forwarding makes the host route packets that are not its own.
	Forwarding bool
	// Bypass lets packets of established connections go from device to
	// device without entering the stack: TUN to TUN, TAP to TUN, and to
	// a TAP (the same one included) once the stack's neighbour table
	// knows the next hop's MAC.
	Bypass bool
	// NoGSO makes the host read offloaded super-packets from devices
	// that can hand them up (tun.GSODevice) cut into ordinary packets,
	// as any device's Read does, instead of NATing them whole. For
	// comparison: whole is the fast way.
	NoGSO bool
	// StandbyRate is the rate read, in bytes a second, above which a
	// device's queue on standby is attached (tun.Config.Standby); 0
	// means DefaultStandbyRate. It is detached again after a second
	// below 40% of it (standby.go).
	StandbyRate int
	// Now is the clock, in Unix nanoseconds (tests inject their own).
	Now func() int64
	// Log receives events; the zero Logger discards them.
	Log zerolog.Logger

	// Capture, if set, sees every frame read from or written to a device
	// (packet capture: see PcapWriter).
	Capture Capture
	// Trace, if set, receives each packet's walk through the director,
	// step by step, at most TraceRate packets a second (default 50;
	// a summary line counts the others).
	Trace     io.Writer
	TraceRate int

	// OnLinkLost, if set, is told once when a NIC's device is gone (its
	// namespace deleted, say) and the NIC closed, with how many NICs
	// remain; without it the host logs the loss.
	OnLinkLost func(nic string, err error, remaining int)
}

// Counters are the host's own per-packet counters.
type Counters struct {
	FastPath         atomic.Uint64 // NATed packets that skipped the stack
	Delivered        atomic.Uint64 // packets handed to the stack
	TooBigSent       atomic.Uint64 // ICMP frag-needed / packet-too-big sent
	UnreachSent      atomic.Uint64 // ICMP port unreachable sent (no real server)
	TimeExceededSent atomic.Uint64 // ICMP time exceeded sent (TTL ran out here)
	ICMPLimited      atomic.Uint64 // ICMP errors not sent: rate limit (see icmpLimiter)
	LinkDrops        atomic.Uint64 // frames too short or of unknown type
	// OtherHost are frames read from a TAP addressed to another host's
	// MAC (a bridge floods those it has not learned), dropped.
	OtherHost atomic.Uint64
	// RouteDrops are packets of direct-routing (-g) connections that
	// could not be sent: the real server not on a directly connected TAP
	// segment, or its Ethernet address not yet resolved (the resolution
	// is started; the client's retransmission goes).
	RouteDrops atomic.Uint64
	// Replies are packets the NAT answered in place and the host sent
	// back out of the link they came by (the SYN proxy's cookie
	// SYN-ACKs).
	Replies atomic.Uint64
	// TunnelSent are packets of tunnel (-i) connections sent
	// encapsulated (each piece of a super-packet, each fragment);
	// TunnelDrops those that could not be: no route to the real
	// server, its MAC not yet resolved on a TAP segment.
	TunnelSent  atomic.Uint64
	TunnelDrops atomic.Uint64
	GSOPackets  atomic.Uint64 // super-packets read whole (tun.GSODevice)
	GSOSplit    atomic.Uint64 // ... of those, cut into packets in software (towards the stack, or a device without offloads)
	ReadErrors  atomic.Uint64
	WriteErrors atomic.Uint64

	// TunnelICMPRelayed are ICMP errors from routers about tunnel
	// packets relayed to the client (nat.Table.TunnelError);
	// TunnelICMPDrops those not: a wrong checksum, "fragmentation
	// needed" for a client without DF (the path MTU still learnt), the
	// rate limit, no route to the client.
	TunnelICMPRelayed atomic.Uint64
	TunnelICMPDrops   atomic.Uint64
}

// Host is a gVisor stack with NICs on tun.Devices.
type Host struct {
	cfg Config
	s   *stack.Stack
	nat *nat.Table
	// hooks is nil unless capture or trace is on: the packet path checks
	// it once per packet.
	hooks *hooks

	Counters Counters

	mu     sync.Mutex
	nics   map[string]*NIC
	byID   []*NIC // by NICID; published copy-on-write through nicsByID
	txqs   int    // how many txQueues there are (the next one's id)
	closed bool

	nicsByID atomic.Pointer[[]*NIC]

	// icmp rate-limits the ICMP errors the host sends on its own.
	icmp *icmpLimiter
	// hops are the bypass's egresses (see hop).
	hops *hopTable
	// routes caches the stack's route lookups of new connections.
	routes routeCache
	// vrrp, if set, is handed the VRRP packets read on TAP links
	// (SetVRRP).
	vrrp atomic.Pointer[func(link string, l3 []byte)]
	// tuns are the tunnel (-i) real servers' routes (see tunnel.go).
	tuns tunTable

	wg   sync.WaitGroup
	done chan struct{}
}

// New makes a host with no NICs.
func New(cfg Config) *Host {
	if cfg.Now == nil {
		cfg.Now = func() int64 { return time.Now().UnixNano() }
	}
	hops := newHopTable()
	s := stack.New(stack.Options{
		// The bypass follows the neighbour table through its events.
		NUDDisp: hops,
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			ipv6.NewProtocolWithOptions(ipv6.Options{
				// Addresses are configured, not autoconfigured, and
				// must be usable at once: no DAD, no SLAAC.
				DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: 0},
			}),
			arp.NewProtocol,
		},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
		// A director sees replies whose source, after SNAT, is its own
		// VIP; gVisor drops those as martians unless local handling is
		// off. Hosts of the lab never talk to themselves through a NIC.
		HandleLocal: cfg.NAT == nil,
	})
	h := &Host{cfg: cfg, s: s, nat: cfg.NAT, hops: hops, nics: map[string]*NIC{}, done: make(chan struct{}),
		icmp: newICMPLimiter()}
	if cfg.Capture != nil || cfg.Trace != nil {
		h.hooks = &hooks{capture: cfg.Capture}
		if cfg.Trace != nil {
			h.hooks.trace = newTracer(cfg.Trace, cfg.TraceRate, h)
		}
	}
	empty := []*NIC{}
	h.nicsByID.Store(&empty)
	if cfg.Forwarding {
		_ = s.SetForwardingDefaultAndAllNICs(ipv4.ProtocolNumber, true)
		_ = s.SetForwardingDefaultAndAllNICs(ipv6.ProtocolNumber, true)
	}
	if cfg.NAT != nil {
		h.wg.Add(1)
		go h.sweepLoop()
	}
	return h
}

// Stack is the underlying gVisor stack (for gonet listeners and dialers).
// Routes, addresses and NICs are changed through the Host's methods,
// which the route cache of the bypass follows (routeCache): a change made
// on the stack directly would not be seen by new connections.
func (h *Host) Stack() *stack.Stack { return h.s }

// NAT is the host's NAT table, nil for a plain host.
func (h *Host) NAT() *nat.Table { return h.nat }

// NIC is one interface of the host.
type NIC struct {
	h    *Host
	id   tcpip.NICID
	name string
	dev  tun.Device
	kind tun.Kind
	mac  tcpip.LinkAddress // its own (burned-in) address
	// hw is the address it uses now: mac, or a VRRP master's virtual
	// MAC (SetLinkMAC). Nil on a TUN.
	hw atomic.Pointer[tcpip.LinkAddress]
	// also are more addresses it receives on (the virtual MACs of the
	// other VRRP routers master on the link), nil if none.
	also atomic.Pointer[[]tcpip.LinkAddress]
	ep   *linkEP

	// txq are the device's queues (one unless it has several, see
	// tun.OffloadDevice.Queues), each written under its own lock: the
	// stack's output goes to the first, the bypass of the reader of
	// queue i to queue i (modulo their number).
	txq []*txQueue
	// sb is the policy of the device's queues on standby, nil if it has
	// none (see standby.go).
	sb *standby
	// gone is set once the device is found gone (see lost).
	gone atomic.Bool
	// icmpMu guards icmpBuf and icmpBufs, where the ICMP errors the NIC
	// sends are built and written from, so that sending one allocates
	// nothing.
	icmpMu   sync.Mutex
	icmpBuf  []byte
	icmpBufs [1][]byte
}

// txQueue is one queue of a device that packets leave by.
type txQueue struct {
	mu  sync.Mutex
	dev tun.Device
	gso tun.GSODevice // dev, when it takes super-packets and partial checksums
	// arena is what the queue's reader reads into, when gso is set.
	arena *rxArena
	// src, when gso can give each reader a writer of its own, and id,
	// the queue's number in the host (the index of those writers, see
	// fastPath.writer).
	src tun.WriterSource
	id  int
}

func (q *txQueue) write(bufs [][]byte, offset int) (int, error) {
	q.mu.Lock()
	n, err := q.dev.Write(bufs, offset)
	q.mu.Unlock()
	return n, err
}

// multiQueue is a device with several queues, each a Device of its own
// with its own Read and Write; queue 0 is the device's own.
type multiQueue interface {
	Queues() []tun.Device
}

// queuesOf lists dev's queues: its own, or each of a multi-queue device's.
func queuesOf(dev tun.Device) []tun.Device {
	if mq, ok := dev.(multiQueue); ok {
		if qs := mq.Queues(); len(qs) > 0 {
			return qs
		}
	}
	return []tun.Device{dev}
}

// Name is the NIC's name.
func (n *NIC) Name() string { return n.name }

// MTU is the device's MTU (the largest IP packet).
func (n *NIC) MTU() int { return n.dev.MTU() }

// MAC is the NIC's Ethernet address now (TAP only).
func (n *NIC) MAC() tcpip.LinkAddress { return n.curMAC() }

// curMAC is the Ethernet address the NIC sends from and receives on.
func (n *NIC) curMAC() tcpip.LinkAddress {
	if p := n.hw.Load(); p != nil {
		return *p
	}
	return ""
}

// AddNIC attaches a device to the host and starts reading from it.
func (h *Host) AddNIC(name string, dev tun.Device) (*NIC, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("host closed")
	}
	if _, ok := h.nics[name]; ok {
		return nil, fmt.Errorf("nic %q exists", name)
	}
	defer h.routesChanged()
	n := &NIC{h: h, id: tcpip.NICID(len(h.byID) + 1), name: name, dev: dev, kind: dev.Kind()}
	n.ep = newLinkEP(n)
	var ep stack.LinkEndpoint = n.ep
	if n.kind == tun.KindTAP {
		n.mac = randomMAC()
		n.hw.Store(&n.mac)
		ep = ethernet.New(n.ep)
	}
	if err := h.s.CreateNICWithOptions(n.id, ep, stack.NICOptions{Name: name}); err != nil {
		return nil, convErr("create nic "+name, err)
	}
	if h.cfg.Forwarding {
		_, _ = h.s.SetNICForwarding(n.id, ipv4.ProtocolNumber, true)
		_, _ = h.s.SetNICForwarding(n.id, ipv6.ProtocolNumber, true)
	}
	h.nics[name] = n
	h.byID = append(h.byID, n)
	ids := append([]*NIC{nil}, h.byID...) // index = NICID
	h.nicsByID.Store(&ids)
	qs := queuesOf(dev)
	n.sb = newStandby(n, qs)
	for i, q := range qs {
		tq := &txQueue{dev: q, id: h.txqs}
		h.txqs++
		if g, ok := q.(tun.GSODevice); ok && !h.cfg.NoGSO {
			tq.gso = g
			tq.src, _ = q.(tun.WriterSource)
		}
		n.txq = append(n.txq, tq)
		h.wg.Add(1)
		if tq.gso != nil {
			tq.arena = newRxArena()
			go n.readLoopGSO(i, tq.gso, tq.arena)
		} else {
			go n.readLoop(i, q)
		}
	}
	return n, nil
}

func (h *Host) nicByID(id tcpip.NICID) *NIC {
	ids := *h.nicsByID.Load()
	if int(id) < len(ids) {
		return ids[id]
	}
	return nil
}

// NICByName finds a NIC.
func (h *Host) NICByName(name string) (*NIC, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, ok := h.nics[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownNIC, name)
	}
	return n, nil
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func toTCPIP(a netip.Addr) tcpip.Address {
	if a.Is4() {
		b := a.As4()
		return tcpip.AddrFrom4(b)
	}
	b := a.As16()
	return tcpip.AddrFrom16(b)
}

func fromTCPIP(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}

func toSubnet(p netip.Prefix) (tcpip.Subnet, error) {
	p = p.Masked()
	a := toTCPIP(p.Addr())
	bits := p.Addr().BitLen()
	mask := make([]byte, bits/8)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	sn, err := tcpip.NewSubnet(a, tcpip.MaskFromBytes(mask))
	if err != nil {
		return tcpip.Subnet{}, fmt.Errorf("subnet %v: %w", p, err)
	}
	return sn, nil
}

// AddAddress assigns an address with its prefix to a NIC and adds the
// connected route for the prefix (unless it is a host prefix, /32 or /128,
// like an IPVS VIP alias).
func (h *Host) AddAddress(nicName string, p netip.Prefix) error {
	defer h.routesChanged()
	n, err := h.addProtocolAddress(nicName, p)
	if err != nil {
		return err
	}
	if p.Bits() < p.Addr().BitLen() {
		sn, err := toSubnet(p)
		if err != nil {
			return err
		}
		h.s.AddRoute(tcpip.Route{Destination: sn, NIC: n.id})
	}
	return nil
}

// AddRoute adds a static route. With a gateway and no NIC name, the NIC is
// the one whose connected route covers the gateway. An invalid gw makes a
// connected route, which needs the NIC.
func (h *Host) AddRoute(dst netip.Prefix, gw netip.Addr, nicName string) error {
	defer h.routesChanged()
	sn, err := toSubnet(dst)
	if err != nil {
		return err
	}
	r := tcpip.Route{Destination: sn}
	if gw.IsValid() {
		if gw.Is4() != dst.Addr().Is4() {
			return fmt.Errorf("route %v via %v: address families differ", dst, gw)
		}
		r.Gateway = toTCPIP(gw)
	}
	switch {
	case nicName != "":
		n, err := h.NICByName(nicName)
		if err != nil {
			return err
		}
		r.NIC = n.id
	case gw.IsValid():
		rt, e := h.s.FindRoute(0, tcpip.Address{}, r.Gateway, protoOf(gw), false)
		if e != nil {
			return convErr(fmt.Sprintf("route %v: gateway %v unreachable", dst, gw), e)
		}
		r.NIC = rt.NICID()
		rt.Release()
	default:
		return fmt.Errorf("route %v: needs a gateway or a nic", dst)
	}
	h.s.AddRoute(r)
	return nil
}

// isLocal reports whether a is one of the host's addresses.
func (h *Host) isLocal(a netip.Addr) bool {
	return h.s.CheckLocalAddress(0, protoOf(a), toTCPIP(a)) != 0
}

// localAddr is the NIC's main address of a family (the source of the
// ICMP errors it sends, as a router's incoming interface address).
func (n *NIC) localAddr(v6 bool) netip.Addr {
	proto := ipv4.ProtocolNumber
	if v6 {
		proto = ipv6.ProtocolNumber
	}
	a, err := n.h.s.GetMainNICAddress(n.id, proto)
	if err != nil {
		return netip.Addr{}
	}
	return fromTCPIP(a.Address)
}

// EgressMTU is the MTU of the NIC the route to dst leaves by, or 0.
func (h *Host) EgressMTU(dst netip.Addr) int {
	r := h.route(dst)
	if !r.ok {
		return 0
	}
	if n := h.nicByID(r.nic); n != nil {
		return n.dev.MTU()
	}
	return 0
}

// sweepLoop runs the table's expiry (nat.Table.RunExpiry) and, each
// quarter second, the bypass's neighbour revalidation and the SYN proxy's
// retransmission timer, until the host closes.
func (h *Host) sweepLoop() {
	defer h.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	expired := make(chan struct{})
	go func() {
		defer close(expired)
		h.nat.RunExpiry(ctx, h.cfg.Now)
	}()
	defer func() {
		cancel()
		<-expired
	}()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
			h.revalidate()
			h.synRetransmit()
		}
	}
}

// Close closes every device and waits for the readers to stop.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.done)
	var errs []error
	for _, n := range h.byID {
		if err := n.dev.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", n.name, err))
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.s.Close()
	h.s.Wait()
	return errors.Join(errs...)
}

func randomMAC() tcpip.LinkAddress {
	var b [6]byte
	_, _ = rand.Read(b[:])
	b[0] = b[0]&^0x01 | 0x02 // unicast, locally administered
	return tcpip.LinkAddress(b[:])
}
