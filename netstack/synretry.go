package netstack

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/tun"
)

// synRetransmit runs the SYN proxy's retransmission timer
// (nat.Table.SynRetransmit, nat/synretry.go) with the host's other
// quarter-second timers.
func (h *Host) synRetransmit() {
	h.nat.SynRetransmit(h.cfg.Now(), h.injectForward)
}

// injectForward hands the stack an IP packet the director made itself
// (a SYN resent to a real server, a reset to a client) to be routed, as
// if it had arrived on the NIC that the route to its destination leaves
// by: the stack forwards it, as it does the packets the NAT passes on. On
// a TAP NIC it comes in an Ethernet frame addressed to the NIC. Rare (a
// few per unanswered connection), so it may allocate.
func (h *Host) injectForward(l3 []byte) {
	f := parseFlow(l3)
	if !f.ok {
		return
	}
	e := h.route(f.dst)
	if !e.ok {
		return // lost as the stack loses an unroutable packet
	}
	n := h.nicByID(e.nic)
	if n == nil {
		return
	}
	frame := l3
	if n.kind == tun.KindTAP {
		frame = make([]byte, ethHdrLen+len(l3))
		hw := n.mac
		if p := n.hw.Load(); p != nil {
			hw = *p
		}
		copy(frame[0:6], hw)
		copy(frame[6:12], n.mac)
		binary.BigEndian.PutUint16(frame[12:], etherTypeOf(f.dst.Is6()))
		copy(frame[ethHdrLen:], l3)
	}
	n.deliver(protoOf(f.dst), frame)
}
