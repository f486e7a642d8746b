package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync"

	"github.com/tunvs/tunvs/internal/csum"
	"github.com/tunvs/tunvs/rules"
)

// The PROXY protocol (haproxy's doc/proxy-protocol.txt) for full-NAT real
// servers, as DPVS sends it (src/ipvs/ip_vs_proxy_proto.c,
// ip_vs_proto_tcp.c tcp_fnat_in_handler): the real server sees only the
// director's local address, so the director puts a header with the
// client's address and port and the virtual service's in front of the
// first data the client sends. Every later client sequence number is
// shifted by the header's length and every acknowledgement (and SACK
// edge) of the real server shifted back (SeqAdj, seqadj.go). A
// retransmission of the first segment gets the same header again, as
// DPVS inserts it whenever the segment starts at the client's ISN+1.
//
// Room: the header must fit in the real server's segments. tunvs lowers
// the MSS the real server announces in its SYN-ACK by the header's length
// (DPVS sends the header alone in its own segment when the first one is
// full, proxy_proto_send_standalone; tunvs rewrites one packet at a time
// and makes the client's first segment small enough instead). A first
// segment that would still exceed the egress MTU is answered with
// "fragmentation needed" for the MTU less the header, and a super-packet
// that would exceed an IP packet's length is dropped (DropProxyNoRoom);
// the client's first flight is bounded by its initial window, far below
// that.
//
// The header is put in by the caller, which owns the buffers: Process
// rewrites the segment as usual and sets Result.Proxy; the caller copies
// it with the header in (InsertProxy) into a buffer with room.

// Header lengths of the PROXY protocol.
const (
	// ProxyV1MaxLen is the longest v1 header ("PROXY TCP6" with two
	// full IPv6 addresses, ports and CRLF: 104 bytes; the spec's bound
	// is 107).
	ProxyV1MaxLen = 107
	proxyV2Fixed  = 16 // signature, version/command, family, length
	// ProxyMaxLen bounds any header tunvs sends.
	ProxyMaxLen = ProxyV1MaxLen
)

// proxyV2Sig is the v2 signature.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// AppendProxyHeader appends the PROXY protocol header of version v (1 or
// 2) for a TCP connection from src to dst. Addresses that are invalid or
// of two families give v1's "UNKNOWN" and v2's AF_UNSPEC, which tell the
// receiver to use the connection's own addresses. It does not allocate
// when b has ProxyMaxLen bytes of room.
func AppendProxyHeader(b []byte, v int, src, dst netip.AddrPort) []byte {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	known := sa.IsValid() && da.IsValid() && sa.Is4() == da.Is4()
	if v == 1 {
		if !known {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		if sa.Is4() {
			b = append(b, "PROXY TCP4 "...)
		} else {
			b = append(b, "PROXY TCP6 "...)
		}
		b = sa.AppendTo(b)
		b = append(b, ' ')
		b = da.AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, '\r', '\n')
	}
	b = append(b, proxyV2Sig[:]...)
	b = append(b, 0x21) // version 2, command PROXY
	switch {
	case !known:
		return append(b, 0x00, 0, 0) // AF_UNSPEC, no addresses
	case sa.Is4():
		b = append(b, 0x11, 0, 12) // AF_INET, STREAM
		s, d := sa.As4(), da.As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	default:
		b = append(b, 0x21, 0, 36) // AF_INET6, STREAM
		s, d := sa.As16(), da.As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// ClientProxyHeaderLen is the length of a complete PROXY protocol header
// at the start of data and its version (1 or 2), 0, 0 if there is none:
// v1 is "PROXY " up to CRLF within ProxyV1MaxLen bytes, v2 the signature
// and the length its fixed part gives (proxy_proto_parse).
func ClientProxyHeaderLen(data []byte) (n, version int) {
	if len(data) >= proxyV2Fixed && [12]byte(data[:12]) == proxyV2Sig && data[12]>>4 == 2 {
		n := proxyV2Fixed + int(binary.BigEndian.Uint16(data[14:16]))
		if n <= len(data) {
			return n, 2
		}
		return 0, 0
	}
	if bytes.HasPrefix(data, []byte("PROXY ")) {
		if i := bytes.Index(data[:min(len(data), ProxyV1MaxLen)], []byte("\r\n")); i >= 0 {
			return i + 2, 1
		}
	}
	return 0, 0
}

// ppExt is a full-NAT connection's PROXY protocol state, out of line
// behind its local tuple (x.fnat.pp, flagProxy), so that connections
// without it carry nothing for it (_notes/memory-layout.md).
type ppExt struct {
	// mu guards seq, the client's byte stream's shift: it changes once
	// (or again for a retransmission, to the same value) while both
	// directions read it.
	mu  sync.Mutex
	seq SeqAdj
	// isn is the client's initial sequence number, from its SYN: its
	// first data is numbered isn+1.
	isn uint32
	// setting is the effective --proxy-protocol; hlen the length of
	// the header for this connection (fixed by its addresses).
	setting rules.ProxyProtocol
	hlen    uint8
}

func (c *Conn) pp() *ppExt { return c.x.fnat.pp }

// ProxyProtocol is the dest's own --proxy-protocol (ProxyUnset: the
// service's).
func (d *Dest) ProxyProtocol() rules.ProxyProtocol {
	return rules.ProxyProtocol(d.proxy.Load())
}

// proxySetting is what a new connection of svc to d gets.
func proxySetting(svc *Service, d *Dest) rules.ProxyProtocol {
	return rules.ProxyProtocol(d.proxy.Load()).Effective(rules.ProxyProtocol(svc.proxy.Load()))
}

// initProxy gives the full-NAT connection c, not yet published and with
// its addresses set, whose client's initial sequence number is isn, the
// PROXY protocol setting s.
func (c *Conn) initProxy(isn uint32, s rules.ProxyProtocol) {
	pp := &ppExt{setting: s, isn: isn}
	var buf [ProxyMaxLen]byte
	pp.hlen = uint8(len(AppendProxyHeader(buf[:0], s.Version(),
		netip.AddrPortFrom(c.CAddr(), c.CPort), netip.AddrPortFrom(c.VAddr(), c.VPort))))
	c.x.fnat.pp = pp
	c.setFlag(flagProxy)
}

// proxyHeader appends c's header.
func (c *Conn) proxyHeader(b []byte) []byte {
	return AppendProxyHeader(b, c.pp().setting.Version(),
		netip.AddrPortFrom(c.CAddr(), c.CPort), netip.AddrPortFrom(c.VAddr(), c.VPort))
}

// proxyGrowth says whether the client's segment p is its first data
// (DPVS: it starts at ISN+1, is not a SYN or RST, and carries data), and
// by how many bytes putting the header in changes it: the header's
// length, less that of a header the client sent itself, which is
// replaced; or passed on unchanged (insert false) with an insecure
// setting of the same version. (DPVS's insecure mode re-encodes a
// header of the other version with the addresses it claims; tunvs
// trusts only the version it was told to and replaces the other.)
func (c *Conn) proxyGrowth(p *Packet) (grow int, insert bool) {
	pc := c.pp()
	data := p.Payload()
	if p.TCPFlags&(tcpSYN|tcpRST) != 0 || len(data) == 0 || p.Seq() != pc.isn+1 {
		return 0, false
	}
	old, v := ClientProxyHeaderLen(data)
	if old > 0 && pc.setting.Insecure() && v == pc.setting.Version() {
		return 0, false
	}
	return int(pc.hlen) - old, true
}

// proxyIn shifts a client segment of a PROXY connection; first marks the
// first data, whose header the caller puts in after (InsertProxy).
func (c *Conn) proxyIn(p *Packet, first bool, grow int) {
	pc := c.pp()
	pc.mu.Lock()
	if first {
		pc.seq.Update(p.Seq(), int32(grow))
	}
	a := pc.seq
	pc.mu.Unlock()
	p.AdjustSeq(&a)
}

// proxyOut shifts a real server segment's acknowledgements back, and
// makes room for the header in the client's segments: its SYN-ACK's MSS
// is lowered by the header's length.
func (c *Conn) proxyOut(p *Packet) {
	pc := c.pp()
	a := pc.shift()
	p.AdjustAck(&a)
	if p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK {
		p.ReduceMSS(int(pc.hlen))
	}
}

// proxyQuote maps the sequence number an ICMP error quotes, of a client
// segment as the real server's side saw it, back to the client's.
func (c *Conn) proxyQuote(p *Packet) {
	a := c.pp().shift()
	p.AdjustInnerSeq(&a)
}

// shift is a copy of the client stream's shift as it is now.
func (pc *ppExt) shift() SeqAdj {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.seq
}

// maxIPLen is the largest IP packet (IPv4 total length, IPv6 header and
// payload length).
func maxIPLen(v6 bool) int {
	if v6 {
		return ipv6Header + 0xffff
	}
	return 0xffff
}

// InsertProxy writes into dst the client segment p (as Process rewrote
// it, with Result.Proxy set for connection c) with c's PROXY protocol
// header in front of its data, replacing one the client sent itself,
// and parses it into p. It returns the new packet's length, or 0 (p
// unchanged) if dst is too short or c has no header. The IP length, the
// IPv4 header checksum and the TCP checksum are made right; a partial
// checksum (Offload.PartialCsum) stays partial, for the new length.
func InsertProxy(dst []byte, p *Packet, c *Conn) int {
	if c == nil || !c.hasFlag(flagProxy) {
		return 0
	}
	th := p.tcpHeader()
	if th == nil {
		return 0
	}
	hl := p.L4 + len(th) // IP and TCP headers
	data := p.B[hl:]
	old, _ := ClientProxyHeaderLen(data)
	if len(dst) < hl+int(c.pp().hlen) {
		return 0
	}
	copy(dst, p.B[:hl])
	b := c.proxyHeader(dst[hl:hl])
	n := hl + len(b) + len(data) - old
	if n > len(dst) || n > maxIPLen(p.V6) {
		return 0
	}
	copy(dst[hl+len(b):n], data[old:])
	out := dst[:n]
	if p.V6 {
		put16(out[4:], uint16(n-ipv6Header))
	} else {
		put16(out[2:], uint16(n))
		put16(out[10:], 0)
		csum.SetIPv4Header(out[:p.L4])
	}
	l4 := out[p.L4:]
	ps := csum.PseudoIP(out, p.V6, ipProtoTCP, len(l4))
	partial, segLen := p.partial, p.segLen
	if partial {
		put16(l4[tcpCsumOff:], csum.Fold(ps))
	} else {
		put16(l4[tcpCsumOff:], 0)
		put16(l4[tcpCsumOff:], ^csum.Fold(csum.Sum(l4, ps)))
	}
	if Parse(out, p) != DropNone {
		return 0
	}
	p.partial, p.segLen = partial, segLen
	return n
}

// ProxyHeaders is the number of PROXY protocol headers sent, those in
// retransmitted first segments included.
func (t *Table) ProxyHeaders() uint64 { return t.proxyHeaders.Load() }
