package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/tun"
)

// forwardProxy sends on a client's first data segment of a connection
// with the PROXY protocol (Result.Proxy): the packet grows by the header,
// which the read buffers have no room for (they are packed, or sized to
// the MTU), so it is copied with the header in (nat.InsertProxy) into the
// reader's own buffer, with the frame's link header in front, and leaves
// from there by the bypass or the stack. What the bypass collected is
// written at once, before the buffer serves again. A copy it cannot make
// is counted as a link drop; the client retransmits.
func (n *NIC) forwardProxy(frame []byte, g tun.GSO, p *nat.Packet, res nat.Result, f *fastPath, tr *pktTrace, proto tcpip.NetworkProtocolNumber) {
	h := n.h
	l2 := n.l2()
	if f.proxyBuf == nil {
		f.proxyBuf = make([]byte, bufOffset+ethHdrLen+tun.MaxGSOPacket+nat.ProxyMaxLen)
	}
	buf := f.proxyBuf
	copy(buf[bufOffset:], frame[:l2])
	m := nat.InsertProxy(buf[bufOffset+l2:], p, res.Conn)
	if m == 0 {
		h.Counters.LinkDrops.Add(1)
		return
	}
	whole := buf[:bufOffset+l2+m]
	frame = whole[bufOffset:]
	if h.cfg.Bypass && f.try(n, res, p, whole, g) {
		if tr != nil {
			tr.traceBypass(h, res)
		}
		f.flush(h)
		return
	}
	if tr != nil {
		tr.traceEgress(h, frame[l2:])
	}
	if g.Pending() {
		f.in.split(h, whole, g, l2, func(seg []byte) { n.deliver(proto, seg[bufOffset:]) })
		return
	}
	n.deliver(proto, frame)
}
