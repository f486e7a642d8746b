package nat

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

// ECN through the SYN proxy. A client asks for ECN with ECE and CWR in its
// SYN (RFC 3168 6.1.1). The director cannot know what the real server
// will say, and keeps nothing, so it answers as Linux's cookies do: yes,
// when the client sends timestamps, whose low bits keep the answer
// (TS_OPT_ECN, cookie_init_timestamp, cookie_ecn_ok); no without them.
// The SYN to the real server asks in turn. A server that agrees (ECE
// without CWR in its SYN-ACK) makes the connection ECN end to end, with
// nothing for the director to do. A server that does not leaves a
// client that believes in ECN talking to one that ignores it: a router's
// congestion mark (CE) on the client's packets would reach a server that
// never echoes it, and the client would not slow down. So for such a
// connection the director takes the client's packets out of ECN: ECT
// becomes not-ECT (routers towards the server then drop instead of
// marking), and a packet a router already marked CE is dropped, as a
// router would have without ECN (RFC 3168 5: "drop ... instead of
// setting the CE codepoint" for non-ECT). The server sends not-ECT, so
// nothing changes the other way.

// TCP header flags for ECN.
const (
	tcpECE = 0x40
	tcpCWR = 0x80
)

// ECN codepoints (the low two bits of the IPv4 TOS, IPv6 traffic class).
const (
	ecnMask = 3
	ecnCE   = 3
)

// ecnSetup reports whether the TCP SYN p asks for ECN (ECE and CWR).
func ecnSetup(p *Packet) bool {
	return p.TCPFlags&(tcpECE|tcpCWR) == tcpECE|tcpCWR
}

// stripECN makes the packet not-ECT and reports true, or reports false
// for one marked CE, to be dropped.
func (p *Packet) stripECN() bool {
	b := p.B
	var ecn uint8
	if p.V6 {
		ecn = b[1] >> 4 & ecnMask
	} else {
		ecn = b[1] & ecnMask
	}
	switch ecn {
	case 0:
		return true
	case ecnCE:
		return false
	}
	if p.V6 {
		b[1] &^= ecnMask << 4 // no header checksum
		return true
	}
	old := binary.BigEndian.Uint16(b[0:])
	b[1] &^= ecnMask
	c := binary.BigEndian.Uint16(b[10:])
	put16(b[10:], csum.ApplyDelta(c, csum.WordDelta(old, binary.BigEndian.Uint16(b[0:]))))
	return true
}
