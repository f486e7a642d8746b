package netstack

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

// Capture receives every frame that crosses a NIC, both ways: what a TUN
// device carries is an IP packet, what a TAP carries an Ethernet frame.
// It is called from the NICs' reader goroutines and from writers, at the
// same time; the frame is only valid during the call.
type Capture interface {
	Frame(nic string, kind tun.Kind, out bool, frame []byte)
}

// hooks are the optional observers of the packet path. A host without
// any keeps a nil *hooks, and the packet path pays one nil check.
type hooks struct {
	capture Capture
	trace   *tracer
}

// traceWords are how the trace names a packet's steps, in the words of the
// classic LVS-NAT packet walk.
type tracer struct {
	w        io.Writer
	perSec   int
	mu       sync.Mutex
	second   int64
	lines    int
	dropped  int
	seq      uint64
	now      func() int64
	h        *Host
	lineBuff []byte
}

func newTracer(w io.Writer, perSec int, h *Host) *tracer {
	if perSec <= 0 {
		perSec = 50
	}
	return &tracer{w: w, perSec: perSec, h: h, now: h.cfg.Now}
}

// pktTrace collects the steps of one packet; it is written in one go when
// the packet's walk ends, so that steps of packets read by different NICs
// do not interleave.
type pktTrace struct {
	t      *tracer
	steps  []string
	seq    uint64
	f      flow
	before *nat.Conn
}

// begin starts the trace of a packet, or returns nil when the rate limit
// has been reached this second (the suppressed packets are counted and
// reported in a summary line).
func (t *tracer) begin() *pktTrace {
	t.mu.Lock()
	defer t.mu.Unlock()
	sec := t.now() / int64(time.Second)
	if sec != t.second {
		if t.dropped > 0 {
			fmt.Fprintf(t.w, "trace: %d packets not traced in the last second (limit %d/s)\n", t.dropped, t.perSec)
		}
		t.second, t.lines, t.dropped = sec, 0, 0
	}
	if t.lines >= t.perSec {
		t.dropped++
		return nil
	}
	t.lines++
	t.seq++
	return &pktTrace{t: t, seq: t.seq}
}

func (p *pktTrace) step(format string, a ...any) {
	p.steps = append(p.steps, fmt.Sprintf(format, a...))
}

func (p *pktTrace) end() {
	t := p.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, s := range p.steps {
		fmt.Fprintf(t.w, "#%d.%d %s\n", p.seq, i+1, s)
	}
}

// flow is what the trace reads of an IP packet before the NAT rewrites it.
type flow struct {
	ok       bool
	proto    uint8
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	tcpFlags uint8
	hasPorts bool
	length   int
	v6       bool
}

func parseFlow(b []byte) flow {
	var f flow
	if len(b) < 1 {
		return f
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return f
		}
		ihl := int(b[0]&0xf) * 4
		f.proto = b[9]
		f.src = netip.AddrFrom4([4]byte(b[12:16]))
		f.dst = netip.AddrFrom4([4]byte(b[16:20]))
		f.length = int(binary.BigEndian.Uint16(b[2:4]))
		if ihl >= 20 && len(b) >= ihl && binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
			l4 = b[ihl:]
		}
	case 6:
		if len(b) < 40 {
			return f
		}
		f.v6 = true
		f.proto = b[6]
		f.src = netip.AddrFrom16([16]byte(b[8:24]))
		f.dst = netip.AddrFrom16([16]byte(b[24:40]))
		f.length = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		l4 = b[40:]
	default:
		return f
	}
	f.ok = true
	if (f.proto == 6 || f.proto == 17) && len(l4) >= 4 {
		f.sport = binary.BigEndian.Uint16(l4[0:2])
		f.dport = binary.BigEndian.Uint16(l4[2:4])
		f.hasPorts = true
		if f.proto == 6 && len(l4) >= 14 {
			f.tcpFlags = l4[13]
		}
	}
	return f
}

func (f flow) String() string {
	if !f.ok {
		return "not an IP packet"
	}
	name := map[uint8]string{1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}[f.proto]
	if name == "" {
		name = fmt.Sprintf("proto %d", f.proto)
	}
	if !f.hasPorts {
		return fmt.Sprintf("%s %v -> %v, %d bytes", name, f.src, f.dst, f.length)
	}
	s := fmt.Sprintf("%s %v -> %v", name, netip.AddrPortFrom(f.src, f.sport), netip.AddrPortFrom(f.dst, f.dport))
	if f.proto == 6 {
		s += " [" + tcpFlagString(f.tcpFlags) + "]"
	}
	return fmt.Sprintf("%s, %d bytes", s, f.length)
}

func tcpFlagString(fl uint8) string {
	names := []struct {
		bit  uint8
		name string
	}{{0x02, "SYN"}, {0x10, "ACK"}, {0x01, "FIN"}, {0x04, "RST"}, {0x08, "PSH"}}
	s := ""
	for _, n := range names {
		if fl&n.bit != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	if s == "" {
		s = "none"
	}
	return s
}

// traceArrival starts a packet's trace: the NIC it arrived on, what it is,
// and whether a connection already exists for it (looked up before the
// NAT, so that the trace can tell a new connection from an old one).
func (n *NIC) traceArrival(l3 []byte) *pktTrace {
	tr := n.h.hooks.trace.begin()
	if tr == nil {
		return nil
	}
	tr.f = parseFlow(l3)
	tr.step("arrived on %s: %v", n.name, tr.f)
	if tr.f.ok && tr.f.hasPorts && n.h.nat != nil {
		tr.before, _ = n.h.nat.Lookup(tr.f.proto, netip.AddrPortFrom(tr.f.src, tr.f.sport), netip.AddrPortFrom(tr.f.dst, tr.f.dport))
	}
	return tr
}

// traceBypass says that the packet skipped the stack.
func (tr *pktTrace) traceBypass(h *Host, res nat.Result) {
	name := "?"
	if eg := heldEgress(&res.Conn.Egress[res.Dir]); eg != 0 {
		name = h.hops.at(eg).nic.name
	}
	tr.step("bypass: written straight out of %s (TTL decremented, the stack skipped)", name)
}

// traceNAT says what the NAT did.
func (tr *pktTrace) traceNAT(res nat.Result) {
	f, before := tr.f, tr.before
	switch res.Verdict {
	case nat.Forward:
		c := res.Conn
		svc := ""
		if s := c.Service(); s != nil {
			svc = fmt.Sprintf("%s %v (%s)", nat.ProtoName(s.Proto), s.AddrPort(), s.SchedulerName())
		}
		if res.Dir == nat.DirIn {
			if before == nil && f.hasPorts {
				tr.step("no connection: matched virtual service %s", svc)
				tr.step("scheduled to real server %v, connection recorded (both directions)", netip.AddrPortFrom(c.DAddr(), c.DPort))
			} else {
				tr.step("connection found (client -> real server, %s)", c.State())
			}
			tr.step("DNAT: destination %v -> %v", netip.AddrPortFrom(c.VAddr(), c.VPort), netip.AddrPortFrom(c.DAddr(), c.DPort))
		} else {
			tr.step("connection found (real server -> client reply, %s)", c.State())
			tr.step("SNAT: source %v -> %v", netip.AddrPortFrom(c.DAddr(), c.DPort), netip.AddrPortFrom(c.VAddr(), c.VPort))
		}
	case nat.Drop:
		if res.Unreachable {
			tr.step("no real server available: dropped, ICMP port unreachable to the client")
		} else {
			tr.step("dropped: %v", res.Reason)
		}
	case nat.TooBig:
		tr.step("too big for the egress MTU %d: dropped, ICMP fragmentation needed sent back", res.MTU)
	case nat.TimeExceeded:
		tr.step("TTL expired: ICMP time exceeded sent back")
	case nat.Reply:
		tr.step("SYN proxy: answered with a SYN cookie SYN-ACK, no connection recorded")
	case nat.Pass:
		tr.step("not virtual-service traffic: left to the stack")
	}
}

// traceEgress says where the stack will send a packet to dst.
func (tr *pktTrace) traceEgress(h *Host, l3 []byte) {
	f := parseFlow(l3)
	if !f.ok {
		tr.step("to the stack")
		return
	}
	if h.isLocal(f.dst) {
		tr.step("to the stack: local delivery (%v is the director's)", f.dst)
		return
	}
	r := h.route(f.dst)
	if !r.ok {
		tr.step("to the stack: no route to %v", f.dst)
		return
	}
	name := "?"
	if n := h.nicByID(r.nic); n != nil {
		name = n.name
	}
	tr.step("routed by the stack: out %s to %v", name, f.dst)
}
