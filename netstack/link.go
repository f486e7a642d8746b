package netstack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

const (
	ethHdrLen = 14
	// bufOffset is the room left in front of every packet buffer, for a
	// device header (a virtio-net header is 10 or 12 bytes) so that a
	// packet read from one device can be written to another in place,
	// and, from a TUN to a TAP, an Ethernet header in front of that;
	// for a tunnel (-i) connection the outer headers (nat.MaxEncapLen,
	// 52 bytes) go in front of the packet too: 12 + 14 + 52 = 78.
	bufOffset = 96
	// maxPacket bounds one packet: the largest IP packet plus a link
	// header.
	maxPacket = 65535 + ethHdrLen
)

// linkEP is the gVisor link endpoint of a NIC: the stack writes to the
// device through it, and the NIC's reader delivers to its dispatcher.
type linkEP struct {
	nic *NIC

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher

	// wbufs are the write buffers, used under the lock of nic.txq[0].
	wbufs [][]byte
	wpkt  nat.Packet
}

var _ stack.LinkEndpoint = (*linkEP)(nil)

func newLinkEP(n *NIC) *linkEP {
	return &linkEP{nic: n}
}

// frameSize is the buffer size for one packet of dev: devices that batch
// get MTU-sized buffers (they are in-memory links that enforce their MTU),
// single-packet kernel devices get room for anything the kernel may send
// if the MTU is raised behind tunvs's back.
func frameSize(dev tun.Device) int {
	if dev.BatchSize() > 1 {
		return dev.MTU() + ethHdrLen
	}
	return maxPacket
}

func (e *linkEP) MTU() uint32 {
	if e.nic.kind == tun.KindTAP {
		// The ethernet wrapper subtracts its header again.
		return uint32(e.nic.dev.MTU() + ethHdrLen)
	}
	return uint32(e.nic.dev.MTU())
}
func (e *linkEP) SetMTU(uint32)                                {}
func (e *linkEP) MaxHeaderLength() uint16                      { return 0 }
func (e *linkEP) LinkAddress() tcpip.LinkAddress               { return e.nic.curMAC() }
func (e *linkEP) SetLinkAddress(a tcpip.LinkAddress)           { e.nic.hw.Store(&a) }
func (e *linkEP) Capabilities() stack.LinkEndpointCapabilities { return 0 }
func (e *linkEP) Wait()                                        {}
func (e *linkEP) AddHeader(*stack.PacketBuffer)                {}
func (e *linkEP) ParseHeader(*stack.PacketBuffer) bool         { return true }
func (e *linkEP) Close()                                       {}
func (e *linkEP) SetOnCloseAction(func())                      {}

func (e *linkEP) ARPHardwareType() header.ARPHardwareType {
	if e.nic.kind == tun.KindTAP {
		return header.ARPHardwareEther
	}
	return header.ARPHardwareNone
}

func (e *linkEP) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

func (e *linkEP) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// WritePackets sends what the stack emits. ICMP errors the stack makes
// about a NATed packet (a TTL expired on the way to a real server, say)
// quote the rewritten packet; they go through the NAT here so that the
// client sees what it sent.
func (e *linkEP) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := e.nic
	q := n.txq[0]
	q.mu.Lock()
	defer q.mu.Unlock()
	list := pkts.AsSlice()
	for len(e.wbufs) < len(list) {
		e.wbufs = append(e.wbufs, make([]byte, bufOffset+frameSize(n.dev)))
	}
	bufs := e.wbufs[:len(list)]
	var now int64
	if n.h.nat != nil {
		now = n.h.cfg.Now()
	}
	for i, pkt := range list {
		b := bufs[i][:cap(bufs[i])]
		size := copyPacket(b[bufOffset:], pkt)
		bufs[i] = b[:bufOffset+size]
		if n.h.nat != nil {
			l3 := bufs[i][bufOffset:]
			if n.kind == tun.KindTAP {
				if len(l3) < ethHdrLen {
					continue
				}
				l3 = l3[ethHdrLen:]
			}
			if isICMP(l3) {
				n.h.nat.ProcessLocalICMP(l3, &e.wpkt, now)
			}
		}
	}
	if hk := n.h.hooks; hk != nil && hk.capture != nil {
		for _, b := range bufs {
			hk.capture.Frame(n.name, n.kind, true, b[bufOffset:])
		}
	}
	written, err := q.dev.Write(bufs, bufOffset)
	for i := range bufs {
		bufs[i] = bufs[i][:cap(bufs[i])]
	}
	// What the device wrote is what is reported: a partial write is not a
	// whole one (the stack counts the rest as not sent).
	if err != nil {
		n.h.Counters.WriteErrors.Add(1)
		if errors.Is(err, tun.ErrClosed) {
			return written, &tcpip.ErrClosedForSend{}
		}
		return written, &tcpip.ErrAborted{}
	}
	return written, nil
}

// copyPacket flattens pkt into b without allocating.
func copyPacket(b []byte, pkt *stack.PacketBuffer) int {
	vl, off := pkt.AsViewList()
	n := 0
	for v := vl.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(b[n:], s[off:])
		off = 0
	}
	return n
}

// isICMP reports whether an IP packet carries ICMP or ICMPv6 (without
// extension headers, which the stack does not put on its errors).
func isICMP(b []byte) bool {
	if len(b) < 1 {
		return false
	}
	switch b[0] >> 4 {
	case 4:
		return len(b) >= 20 && b[9] == 1
	case 6:
		return len(b) >= 40 && b[6] == 58
	}
	return false
}

// readLoop reads batches from dev, queue qi of the NIC's device, and
// handles each packet.
func (n *NIC) readLoop(qi int, dev tun.Device) {
	h := n.h
	defer h.wg.Done()
	bs := max(dev.BatchSize(), 1)
	size := frameSize(dev)
	bufs := make([][]byte, bs)
	for i := range bufs {
		bufs[i] = make([]byte, bufOffset+size)
	}
	sizes := make([]int, bs)
	f := &fastPath{qi: qi}
	var p nat.Packet
	var fails int
	for {
		cnt, err := dev.Read(bufs, sizes, bufOffset)
		if err != nil {
			if n.readFailed(err, &fails) {
				return
			}
			continue
		}
		fails = 0
		now := n.clock()
		for i := 0; i < cnt; i++ {
			n.input(bufs[i][:bufOffset+sizes[i]], tun.GSO{}, &p, now, f)
		}
		f.flush(h)
	}
}

// readLoopGSO is readLoop for a device that hands super-packets up whole:
// they are NATed as one packet and leave whole by the bypass. It reads
// into a, its share of which follows the batches (rxArena.next).
func (n *NIC) readLoopGSO(qi int, dev tun.GSODevice, a *rxArena) {
	h := n.h
	defer h.wg.Done()
	defer a.free()
	arena := a.buf[:a.lim]
	pkts := make([]tun.GSOPacket, 128)
	f := &fastPath{qi: qi, self: dev}
	var p nat.Packet
	l2 := n.l2()
	var fails int
	for {
		cnt, err := dev.ReadGSO(arena, bufOffset, pkts)
		if err != nil {
			if n.readFailed(err, &fails) {
				return
			}
			continue
		}
		fails = 0
		now := n.clock()
		if n.sb != nil {
			n.sb.read(arena, pkts[:cnt], l2, qi)
		}
		for _, pk := range pkts[:cnt] {
			// Capped at the packet's slot: the NAT may lengthen a
			// small packet in place (the SYN proxy), never into the
			// next one's.
			whole := arena[pk.Off-bufOffset : pk.Off+pk.Len : min(pk.Off+max(pk.Len, tun.SmallSlot), len(arena))]
			g := pk.GSO
			if g.Type != tun.GSONone {
				h.Counters.GSOPackets.Add(1)
			}
			// A pending frame on a TAP is always an IP frame.
			if !g.Pending() || g.InPlace(whole[bufOffset+l2:]) {
				n.input(whole, g, &p, now, f)
				continue
			}
			// A layout the NAT does not rewrite whole (an IPv6
			// extension header, say): cut it up first. Each piece
			// lives in f's scratch space until the next, so what is
			// pending goes out before and each piece at once.
			f.flush(h)
			f.in.split(h, whole, g, l2, func(seg []byte) {
				n.input(seg, tun.GSO{}, &p, now, f)
				f.flush(h)
			})
		}
		f.flush(h)
		if cnt > 0 {
			last := pkts[cnt-1]
			arena = a.next(cnt, len(pkts), (last.Off+max(last.Len, tun.SmallSlot)+7)&^7)
		}
	}
}

// readFailed deals with a read error and reports whether the reader is to
// stop: the device is closed, or gone (see lost). Other errors are
// counted, logged at the first of a run (*fails counts the run; the
// reader zeroes it after a good read) and retried after a backoff.
func (n *NIC) readFailed(err error, fails *int) bool {
	h := n.h
	if errors.Is(err, tun.ErrClosed) {
		return true
	}
	select {
	case <-h.done:
		return true
	default:
	}
	h.Counters.ReadErrors.Add(1)
	if deviceGone(err) {
		n.lost(err)
		return true
	}
	if *fails == 0 {
		h.cfg.Log.Warn().Err(err).Str("nic", n.name).Msg("device read failed; retrying with backoff")
	}
	d := min(readBackoffMin<<min(*fails, 8), readBackoffMax)
	*fails++
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-h.done:
		t.Stop()
	}
	return false
}

// clock reads the time once per batch; only the NAT needs it.
func (n *NIC) clock() int64 {
	if n.h.nat != nil {
		return n.h.cfg.Now()
	}
	return 0
}

// input handles one frame read from the device: whole is its buffer with
// bufOffset bytes of headroom in front, g its offload state.
func (n *NIC) input(whole []byte, g tun.GSO, p *nat.Packet, now int64, f *fastPath) {
	frame := whole[bufOffset:]
	var tr *pktTrace
	if hk := n.h.hooks; hk != nil {
		tr = n.observeIn(hk, frame)
	}
	n.handle(frame, whole, g, p, now, f, tr)
	if tr != nil {
		tr.end()
	}
}

// observeIn shows an arriving frame to the capture and starts its trace
// (nil when tracing is off or rate-limited).
func (n *NIC) observeIn(hk *hooks, frame []byte) *pktTrace {
	if hk.capture != nil {
		hk.capture.Frame(n.name, n.kind, false, frame)
	}
	if hk.trace == nil {
		return nil
	}
	l3 := frame
	if n.kind == tun.KindTAP {
		if len(frame) < ethHdrLen {
			return nil
		}
		switch binary.BigEndian.Uint16(frame[12:14]) {
		case uint16(ipv4.ProtocolNumber), uint16(ipv6.ProtocolNumber):
		default:
			return nil // ARP and the like: not part of the walk
		}
		l3 = frame[ethHdrLen:]
	}
	return n.traceArrival(l3)
}

// handle runs one frame through the NAT and on to the stack or the bypass.
// whole is the frame's buffer with its bufOffset headroom, g its offload
// state (a pending one only where g.InPlace, on a TAP for the IP packet
// behind the Ethernet header). tr is the packet's trace, nil unless
// tracing.
func (n *NIC) handle(frame, whole []byte, g tun.GSO, p *nat.Packet, now int64, f *fastPath, tr *pktTrace) {
	h := n.h
	l3 := frame
	var proto tcpip.NetworkProtocolNumber
	if n.kind == tun.KindTAP {
		if len(frame) < ethHdrLen {
			h.Counters.LinkDrops.Add(1)
			return
		}
		proto = tcpip.NetworkProtocolNumber(binary.BigEndian.Uint16(frame[12:14]))
		l3 = frame[ethHdrLen:]
		// A bridge floods frames for addresses it has not learned (or
		// that moved: a VRRP virtual MAC) to every port. The kernel
		// drops those not for its own address (PACKET_OTHERHOST in
		// ip_rcv_core, ip6_rcv_core and arp_rcv); so does the NIC, or
		// a backup director would NAT the master's traffic as well.
		// Its own address stays its own while a virtual MAC is on.
		if frame[0]&1 == 0 && !n.forMe(frame[0:6]) {
			h.Counters.OtherHost.Add(1)
			return
		}
		if (proto == ipv4.ProtocolNumber || proto == ipv6.ProtocolNumber) && isVRRP(l3) {
			if fn := h.vrrp.Load(); fn != nil {
				(*fn)(n.name, l3)
				return
			}
		}
	} else {
		if len(frame) == 0 {
			h.Counters.LinkDrops.Add(1)
			return
		}
		switch frame[0] >> 4 {
		case 4:
			proto = ipv4.ProtocolNumber
		case 6:
			proto = ipv6.ProtocolNumber
		default:
			// Let the NAT count it by reason.
			if h.nat != nil {
				h.nat.Process(l3, p, now)
			}
			return
		}
	}
	if h.nat != nil && (proto == ipv4.ProtocolNumber || proto == ipv6.ProtocolNumber) {
		res := h.nat.ProcessOffload(l3, p, now, nat.Offload{SegLen: g.SegLen(), PartialCsum: g.NeedsCsum, MTU: n.dev.MTU()})
		if tr != nil {
			tr.traceNAT(res)
		}
		if res.Rebuilt {
			// The SYN proxy rebuilt the packet in place, perhaps to
			// another length, with whole checksums.
			g = tun.GSO{}
			end := len(frame) - len(l3) + len(p.B)
			frame, whole = frame[:end], whole[:bufOffset+end]
			l3 = frame[len(frame)-len(p.B):]
		}
		switch res.Verdict {
		case nat.Reply:
			n.reply(frame, whole, f)
			return
		case nat.Drop:
			if res.Unreachable {
				n.sendUnreachable(frame, p)
			}
			return
		case nat.TooBig:
			n.sendTooBig(frame, p, res)
			return
		case nat.TimeExceeded:
			n.sendTimeExceeded(frame, p)
			return
		case nat.Pass:
			if p.ICMPError && f.tunnelError(n, p, now) {
				return
			}
			// gVisor sends "time exceeded" only for packets arriving
			// with TTL 0 and forwards TTL 1 with TTL 0; a router
			// must not (RFC 1812 5.3.1). Catch those here.
			if h.cfg.Forwarding && p.Len() > 0 && p.TTL() <= 1 && routable(p.Dst()) && !h.isLocal(p.Dst()) {
				n.sendTimeExceeded(frame, p)
				return
			}
		case nat.Forward:
			if res.Proxy {
				n.forwardProxy(frame, g, p, res, f, tr, proto)
				return
			}
			if res.Conn.Tunnelled() && res.Dir == nat.DirIn {
				// Tunnelling: encapsulated to the real server,
				// never delivered to the stack that owns the VIP.
				if !f.tunnel(n, res, p, whole, g, now) {
					h.Counters.TunnelDrops.Add(1)
				}
				return
			}
			if res.Conn.Routed() && res.Dir == nat.DirIn {
				// Direct routing: the packet, still addressed to the
				// VIP, must not reach the stack, which owns the VIP.
				if !f.try(n, res, p, whole, g) {
					h.Counters.RouteDrops.Add(1)
				}
				return
			}
			if h.cfg.Bypass && f.try(n, res, p, whole, g) {
				if tr != nil {
					tr.traceBypass(h, res)
				}
				return
			}
		}
	}
	if tr != nil {
		tr.traceEgress(h, l3)
	}
	if g.Pending() {
		// The stack takes ordinary packets only.
		f.in.split(h, whole, g, n.l2(), func(seg []byte) { n.deliver(proto, seg[bufOffset:]) })
		return
	}
	n.deliver(proto, frame)
}

// reply sends frame, which the NAT turned into an answer to its sender (the
// SYN proxy's cookie SYN-ACK), back out of n with the batch: on a TAP to
// the Ethernet address it came from.
func (n *NIC) reply(frame, whole []byte, f *fastPath) {
	if n.kind == tun.KindTAP {
		var src [6]byte
		copy(src[:], frame[6:12])
		copy(frame[0:6], src[:])
		copy(frame[6:12], n.mac)
	}
	q := n.txq[f.qi%n.queues()]
	f.pend = append(f.pend, pending{out: q, nic: n, buf: whole, off: bufOffset})
	n.h.Counters.Replies.Add(1)
}

// l2 is the length of the link header in front of the NIC's packets.
func (n *NIC) l2() int {
	if n.kind == tun.KindTAP {
		return ethHdrLen
	}
	return 0
}

// routable reports whether a router would forward to a: not multicast,
// broadcast or link-local (those carry hop limit 1 on purpose, MLD say).
func routable(a netip.Addr) bool {
	return !a.IsMulticast() && !a.IsLinkLocalUnicast() && !a.IsUnspecified() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// deliver hands a frame to the stack (which copies it).
func (n *NIC) deliver(proto tcpip.NetworkProtocolNumber, frame []byte) {
	n.ep.mu.RLock()
	d := n.ep.dispatcher
	n.ep.mu.RUnlock()
	if d == nil {
		return
	}
	pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: n.stackPayload(frame)})
	if n.kind == tun.KindTAP {
		proto = 0 // the ethernet endpoint reads the type from the header
	}
	d.DeliverNetworkPacket(proto, pkb)
	pkb.DecRef()
	n.h.Counters.Delivered.Add(1)
}

// icmpBuffer locks the NIC's ICMP buffer and returns it, with room for
// an error quoting as much as IPv6's minimum MTU allows; the caller
// unlocks n.icmpMu.
func (n *NIC) icmpBuffer() []byte {
	n.icmpMu.Lock()
	if n.icmpBuf == nil {
		n.icmpBuf = make([]byte, bufOffset+ethHdrLen+1280)
	}
	return n.icmpBuf
}

// replyFrame sends the IP packet at b[bufOffset+ethHdrLen:][:size] back out
// of n towards whoever sent frame; on a TAP the frame's Ethernet addresses
// are swapped, so the reply goes to the hop it came from. b is the NIC's
// ICMP buffer, n.icmpMu held.
func (n *NIC) replyFrame(frame, b []byte, size int, v6 bool) {
	off := bufOffset + ethHdrLen
	end := off + size
	if n.kind == tun.KindTAP {
		eth := b[bufOffset:off]
		copy(eth[0:6], frame[6:12])
		copy(eth[6:12], n.curMAC())
		et := uint16(header.IPv4ProtocolNumber)
		if v6 {
			et = uint16(header.IPv6ProtocolNumber)
		}
		binary.BigEndian.PutUint16(eth[12:14], et)
		off = bufOffset
	}
	n.writeICMP(b, off, end)
}

// writeICMP writes the frame b[off:end] out of n; b is the NIC's ICMP
// buffer, n.icmpMu held.
func (n *NIC) writeICMP(b []byte, off, end int) {
	if hk := n.h.hooks; hk != nil && hk.capture != nil {
		hk.capture.Frame(n.name, n.kind, true, b[off:end])
	}
	n.icmpBufs[0] = b[:end]
	_, err := n.txq[0].write(n.icmpBufs[:], off)
	n.icmpBufs[0] = nil
	if err != nil {
		n.h.Counters.WriteErrors.Add(1)
	}
}

// sendTooBig is not rate-limited: the kernel never limits "fragmentation
// needed" or "packet too big" (see icmpLimiter).
func (n *NIC) sendTooBig(frame []byte, p *nat.Packet, res nat.Result) {
	b := n.icmpBuffer()
	defer n.icmpMu.Unlock()
	size := nat.BuildTooBig(b[bufOffset+ethHdrLen:], p, res.Conn.VAddr(), res.MTU)
	if size == 0 {
		return
	}
	// Counted before the write, which a reader may see at once.
	n.h.Counters.TooBigSent.Add(1)
	n.replyFrame(frame, b, size, p.V6)
}

func (n *NIC) sendTimeExceeded(frame []byte, p *nat.Packet) {
	if !n.h.icmpAllowed(p.Src()) {
		return
	}
	src := n.localAddr(p.V6)
	if !src.IsValid() {
		return
	}
	b := n.icmpBuffer()
	defer n.icmpMu.Unlock()
	size := nat.BuildTimeExceeded(b[bufOffset+ethHdrLen:], p, src)
	if size == 0 {
		return
	}
	// Counted before the write, which a reader may see at once.
	n.h.Counters.TimeExceededSent.Add(1)
	n.replyFrame(frame, b, size, p.V6)
}

func (n *NIC) sendUnreachable(frame []byte, p *nat.Packet) {
	if !n.h.icmpAllowed(p.Src()) {
		return
	}
	b := n.icmpBuffer()
	defer n.icmpMu.Unlock()
	size := nat.BuildPortUnreachable(b[bufOffset+ethHdrLen:], p, p.Dst())
	if size == 0 {
		return
	}
	// Counted before the write, which a reader may see at once.
	n.h.Counters.UnreachSent.Add(1)
	n.replyFrame(frame, b, size, p.V6)
}
