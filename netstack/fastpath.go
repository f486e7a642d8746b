package netstack

import (
	"math"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

// noBypass marks a connection direction whose egress cannot skip the stack.
const noBypass = math.MaxUint32

// fastPath collects the packets of one read batch that skip the stack and
// writes them per egress NIC when the batch is done. It belongs to one
// reader goroutine.
type fastPath struct {
	pend []pending
	bufs [][]byte
}

type pending struct {
	out *NIC
	buf []byte
}

// try sends an already rewritten packet of an established connection
// straight to its egress device. The route is looked up once per
// connection and direction and cached in the connection. It returns false
// where the stack must handle the packet: a TAP egress (needs a neighbour
// lookup), a TTL about to expire (needs an ICMP error), no route.
func (f *fastPath) try(in *NIC, res nat.Result, p *nat.Packet, whole []byte, frameLen int) bool {
	h := in.h
	slot := &res.Conn.Egress[res.Dir]
	eg := slot.Load()
	if eg == 0 {
		eg = h.resolveEgress(p)
		slot.Store(eg)
	}
	if eg == noBypass {
		return false
	}
	out := h.nicByID(tcpip.NICID(eg - 1))
	if out == nil || out.kind != tun.KindTUN {
		return false
	}
	if !p.DecTTL() {
		return false
	}
	f.pend = append(f.pend, pending{out: out, buf: whole[:bufOffset+frameLen]})
	h.Counters.FastPath.Add(1)
	return true
}

// resolveEgress finds the NIC (id+1) the packet's destination is routed to,
// or noBypass.
func (h *Host) resolveEgress(p *nat.Packet) uint32 {
	dst := p.Dst()
	r, e := h.s.FindRoute(0, tcpip.Address{}, toTCPIP(dst), protoOf(dst), false)
	if e != nil {
		return noBypass
	}
	defer r.Release()
	if fromTCPIP(r.LocalAddress()) == dst || r.NICID() == 0 {
		return noBypass
	}
	return uint32(r.NICID()) + 1
}

// flush writes the collected packets, one Write per egress NIC.
func (f *fastPath) flush(h *Host) {
	for len(f.pend) > 0 {
		out := f.pend[0].out
		f.bufs = f.bufs[:0]
		rest := f.pend[:0]
		for _, pd := range f.pend {
			if pd.out == out {
				f.bufs = append(f.bufs, pd.buf)
			} else {
				rest = append(rest, pd)
			}
		}
		if hk := h.hooks; hk != nil && hk.capture != nil {
			for _, b := range f.bufs {
				hk.capture.Frame(out.name, out.kind, true, b[bufOffset:])
			}
		}
		out.writeMu.Lock()
		_, err := out.dev.Write(f.bufs, bufOffset)
		out.writeMu.Unlock()
		if err != nil {
			h.Counters.WriteErrors.Add(1)
		}
		f.pend = rest
	}
	clear(f.bufs)
	f.bufs = f.bufs[:0]
}
