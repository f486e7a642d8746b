package nat

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/internal/csum"
)

// Sequence adjustment: when the director changes the length of one
// direction's byte stream (the PROXY protocol header inserted in front of
// the client's first data, a SYN proxy's own ISN), the sequence numbers of
// that direction are shifted for the rest of the connection, and the
// acknowledgements (and SACK blocks) coming back the other way shifted
// back. This is IPVS's application helper bookkeeping
// (net/netfilter/ipvs/ip_vs_app.c: struct ip_vs_seq, vs_fix_seq,
// vs_fix_ack_seq, vs_seq_update), with netfilter's handling of SACK
// blocks (nf_conntrack_seqadj.c, nf_ct_sack_block_adjust) and of
// acknowledgements that fall inside inserted bytes (see SeqAdj.Ack).
//
// A SeqAdj knows nothing of connections or packets; Packet.AdjustSeq and
// Packet.AdjustAck apply one to a TCP segment in place. See
// /work/wt/_notes/seqadj.md for how to use it.

// SeqAdj is the shift of one direction's sequence numbers: the kernel's
// struct ip_vs_seq. Bytes the sender numbered at or before InitSeq are
// shifted by PrevDelta, those after it by Delta. The zero value shifts
// nothing.
//
// A SeqAdj is a plain value, not safe for concurrent use: the caller
// serialises updates against reads (tunvs's PROXY protocol does it under
// the connection's lock), or sets it once before the connection is
// published (Init).
type SeqAdj struct {
	// InitSeq is the sender's sequence number of the segment most
	// recently resized (init_seq).
	InitSeq uint32
	// Delta is the shift of bytes after InitSeq (delta).
	Delta int32
	// PrevDelta is the shift of bytes at and before InitSeq
	// (previous_delta).
	PrevDelta int32
}

// Active reports whether a shifts anything (the kernel tests "delta ||
// previous_delta" before touching a segment).
func (a *SeqAdj) Active() bool { return a.Delta != 0 || a.PrevDelta != 0 }

// Init makes a a constant shift by off for the whole connection, as
// netfilter's nf_ct_seqadj_init does for its SYN proxy (the sender's ISN
// becomes ISN+off).
func (a *SeqAdj) Init(off int32) {
	*a = SeqAdj{Delta: off, PrevDelta: off}
}

// Update records that the segment the sender numbered seq grew by diff
// bytes (shrank if negative): vs_seq_update. A retransmission of a segment
// already counted (seq not after InitSeq) changes nothing, so resizing it
// again the same way is safe.
func (a *SeqAdj) Update(seq uint32, diff int32) {
	if !a.Active() || seqAfter(seq, a.InitSeq) {
		a.PrevDelta = a.Delta
		a.Delta += diff
		a.InitSeq = seq
	}
}

// Seq is the sender's sequence number seq as the receiver sees it:
// vs_fix_seq.
func (a *SeqAdj) Seq(seq uint32) uint32 {
	if seqAfter(seq, a.InitSeq) {
		return seq + uint32(a.Delta)
	}
	return seq + uint32(a.PrevDelta)
}

// Ack is the receiver's acknowledgement (or SACK edge) ack as the sender
// numbered it: vs_fix_ack_seq. An ack after InitSeq+Delta is shifted by
// Delta and one at or before InitSeq+PrevDelta by PrevDelta, as the
// kernel does. One in between acknowledges part of the bytes the director
// inserted and nothing of the sender's own after InitSeq: it becomes
// InitSeq. (The kernel shifts it by PrevDelta, which acknowledges sender
// bytes the receiver has not got; netfilter's nf_ct_seq_adjust shifts it
// by Delta, below InitSeq. Either can stall the sender.)
func (a *SeqAdj) Ack(ack uint32) uint32 {
	switch {
	case seqAfter(ack, a.InitSeq+uint32(a.Delta)):
		return ack - uint32(a.Delta)
	case seqAfter(ack, a.InitSeq+uint32(a.PrevDelta)):
		return a.InitSeq
	}
	return ack - uint32(a.PrevDelta)
}

// seqAfter is the kernel's after(a, b): a is later than b in sequence
// space.
func seqAfter(a, b uint32) bool { return int32(b-a) < 0 }

// TCP header offsets and options used here.
const (
	tcpSeqOff  = 4
	tcpAckOff  = 8
	tcpCsumOff = 16

	tcpOptEOL  = 0
	tcpOptNOP  = 1
	tcpOptMSS  = 2
	tcpOptSACK = 5
)

// tcpHeader is the packet's whole TCP header, nil unless p is an unfragmented
// TCP segment whose header Parse validated.
func (p *Packet) tcpHeader() []byte {
	if p.Proto != ipProtoTCP || p.Frag || !p.l4csum || p.L4 < 0 || p.L4+tcpMinHeader > len(p.B) {
		return nil
	}
	th := p.B[p.L4:]
	doff := int(th[12]>>4) * 4
	if doff < tcpMinHeader || doff > len(th) {
		return nil
	}
	return th[:doff]
}

// Seq is the TCP sequence number; 0 if p is not a TCP segment.
func (p *Packet) Seq() uint32 {
	if th := p.tcpHeader(); th != nil {
		return binary.BigEndian.Uint32(th[tcpSeqOff:])
	}
	return 0
}

// Ack is the TCP acknowledgement number; 0 if p is not a TCP segment.
func (p *Packet) Ack() uint32 {
	if th := p.tcpHeader(); th != nil {
		return binary.BigEndian.Uint32(th[tcpAckOff:])
	}
	return 0
}

// Payload is the TCP segment's data; nil if p is not a TCP segment.
func (p *Packet) Payload() []byte {
	if th := p.tcpHeader(); th != nil {
		return p.B[p.L4+len(th):]
	}
	return nil
}

// AdjustSeq shifts the segment's sequence number by a (vs_fix_seq),
// keeping the checksum right. It reports whether p is a TCP segment.
func (p *Packet) AdjustSeq(a *SeqAdj) bool {
	th := p.tcpHeader()
	if th == nil {
		return false
	}
	if a.Active() {
		p.put32(th, tcpSeqOff, a.Seq(binary.BigEndian.Uint32(th[tcpSeqOff:])))
	}
	return true
}

// AdjustAck shifts the acknowledgement number of a segment with ACK set,
// and the edges of its SACK blocks, back by a, the other direction's
// shift (vs_fix_ack_seq, nf_ct_sack_adjust), keeping the checksum right.
// Timestamps are left alone: they count time, not bytes. It reports
// whether p is a TCP segment.
func (p *Packet) AdjustAck(a *SeqAdj) bool {
	th := p.tcpHeader()
	if th == nil {
		return false
	}
	if !a.Active() {
		return true
	}
	if th[13]&tcpACK != 0 {
		p.put32(th, tcpAckOff, a.Ack(binary.BigEndian.Uint32(th[tcpAckOff:])))
	}
	forOptions(th, func(kind uint8, o int, n int) bool {
		if kind == tcpOptSACK && n >= 10 && (n-2)%8 == 0 {
			for e := o + 2; e < o+n; e += 4 {
				p.put32(th, e, a.Ack(binary.BigEndian.Uint32(th[e:])))
			}
			return false
		}
		return true
	})
	return true
}

// ReduceMSS lowers the segment's MSS option by n bytes (not below 0
// bytes of data), keeping the checksum right, and reports whether it
// found one: a SYN's maximum segment size for the other side, so that
// bytes the director inserts still fit.
func (p *Packet) ReduceMSS(n int) bool {
	th := p.tcpHeader()
	if th == nil {
		return false
	}
	found := false
	forOptions(th, func(kind uint8, o int, l int) bool {
		if kind == tcpOptMSS && l == 4 {
			old := binary.BigEndian.Uint16(th[o+2:])
			p.put16(th, o+2, uint16(max(int(old)-n, 0)))
			found = true
			return false
		}
		return true
	})
	return found
}

// forOptions calls f with the kind, offset and length of every TCP option
// of th until f returns false, as tcp_parse_options walks them: EOL ends
// the list, NOP is one byte, a length below 2 or past the header ends the
// walk.
func forOptions(th []byte, f func(kind uint8, off, n int) bool) {
	for o := tcpMinHeader; o < len(th); {
		switch k := th[o]; k {
		case tcpOptEOL:
			return
		case tcpOptNOP:
			o++
		default:
			if o+2 > len(th) {
				return
			}
			n := int(th[o+1])
			if n < 2 || o+n > len(th) {
				return
			}
			if !f(k, o, n) {
				return
			}
			o += n
		}
	}
}

// put32 writes v at th[off:] and updates the TCP checksum for it (a
// partial checksum holds only the pseudo-header, which this is not in).
func (p *Packet) put32(th []byte, off int, v uint32) {
	p.put16(th, off, uint16(v>>16))
	p.put16(th, off+2, uint16(v))
}

func (p *Packet) put16(th []byte, off int, v uint16) {
	old := binary.BigEndian.Uint16(th[off:])
	if old == v {
		return
	}
	put16(th[off:], v)
	if off&1 != 0 {
		// A word at an odd offset (an option after an odd number of
		// NOPs) straddles two checksum words: swap its bytes in the
		// sum, RFC 1071's byte-order independence.
		old, v = old>>8|old<<8, v>>8|v<<8
	}
	if !p.partial {
		c := th[tcpCsumOff:]
		put16(c, csum.Update(binary.BigEndian.Uint16(c), old, v))
	}
}

// AdjustInnerSeq maps the sequence number of the TCP segment an ICMP
// error quotes from the receiver's numbering back to the sender's, with
// a the sender's direction's shift (a.Ack), so that the sender finds the
// segment it sent (Linux ignores an error quoting a number outside its
// window, tcp_v4_err). The quoted TCP checksum, when quoted, and the ICMP
// checksum are kept right. It reports whether p quotes a TCP segment.
func (p *Packet) AdjustInnerSeq(a *SeqAdj) bool {
	in := &p.Inner
	b := p.B
	if !p.ICMPError || in.Proto != ipProtoTCP || p.innerLater || in.L4 < 0 || in.L4+8 > len(b) || p.L4+icmpHeader > len(b) {
		return false
	}
	if !a.Active() {
		return true
	}
	o := in.L4 + tcpSeqOff
	old := binary.BigEndian.Uint32(b[o:])
	nw := a.Ack(old)
	if nw == old {
		return true
	}
	d := csum.WordDelta(uint16(old>>16), uint16(nw>>16)) + csum.WordDelta(uint16(old), uint16(nw))
	binary.BigEndian.PutUint32(b[o:], nw)
	outer := d
	if c := in.L4 + tcpCsumOff; c+2 <= len(b) {
		oc := binary.BigEndian.Uint16(b[c:])
		nc := csum.ApplyDelta(oc, d)
		put16(b[c:], nc)
		outer += csum.WordDelta(oc, nc)
	}
	c := b[p.L4+2 : p.L4+4]
	put16(c, csum.ApplyDelta(binary.BigEndian.Uint16(c), outer))
	return true
}
