package ipvssync

import (
	"encoding/binary"

	"github.com/tunvs/tunvs/nat"
)

// A SYN-proxied connection (nat/synproxy.go) lives with its real server's
// sequence numbers shifted into the cookie's, and its timestamps and
// windows perhaps too. The shift of the sequence numbers is what the
// kernel's application helpers keep in struct ip_vs_seq, and a record
// carries it as they do: the connection's IP_VS_CONN_F_OUT_SEQ flag and
// the IPVS_OPT_SEQ_DATA option (ip_vs_sync_conn_v1; version 0 appends
// struct ip_vs_sync_conn_options to the record). The rest has no place in
// the kernel's format, so it travels in an option of tunvs's own,
// optSynProxy, marked optional (IPVS_OPT_F_PARAM) so that a kernel backup
// skips it (ip_vs_proc_sync_conn: "Param data mandatory ?").
//
// What a kernel backup does with such a record: it keeps the flag and
// copies in_seq and out_seq into the connection (ip_vs_proc_conn), but
// applies them only through an application helper bound to the
// connection (ip_vs_app_pkt_out and _in return at once when cp->app is
// NULL: in practice the FTP helper, for its ports). A SYN-proxied HTTP
// connection taken over by a kernel backup is therefore forwarded
// untranslated, and breaks; only a tunvs backup keeps it working.

// SynProxyLen is the length of the data of tunvs's SYN proxy option.
const SynProxyLen = 8

// SynProxyOpt is tunvs's SYN proxy option: on the wire, TSDelta (4 bytes,
// network order), a flags byte (1: TS, 2: Rescale, 4: ECNStrip),
// RSWScale, ToServer and a zero byte.
type SynProxyOpt struct {
	// Present: the record carries the option.
	Present bool
	// TS: timestamps are translated; TSDelta is the director's clock
	// less the real server's (added to the server's TSval, taken off
	// the client's TSecr).
	TS      bool
	TSDelta uint32
	// Rescale: the server's windows go to the client shifted left by
	// RSWScale and right by the scale the director offered the client.
	Rescale  bool
	RSWScale uint8
	// ToServer: the shift of the client's windows to a server that does
	// no window scaling (0: none).
	ToServer uint8
	// ECNStrip: the client's packets are taken out of ECN, the server
	// having refused it (nat/synecn.go).
	ECNStrip bool
}

const (
	spFlagTS      = 1
	spFlagRescale = 2
	spFlagECN     = 4
)

func (o *SynProxyOpt) encode(b []byte) {
	binary.BigEndian.PutUint32(b, o.TSDelta)
	var f uint8
	if o.TS {
		f |= spFlagTS
	}
	if o.Rescale {
		f |= spFlagRescale
	}
	if o.ECNStrip {
		f |= spFlagECN
	}
	b[4], b[5], b[6], b[7] = f, o.RSWScale, o.ToServer, 0
}

// decode reads the option; flags it does not know and the last byte are
// ignored, for a later tunvs that adds to them. Scales are clamped to
// TCP's 14, as tcp_parse_options clamps a window scale.
func (o *SynProxyOpt) decode(b []byte) {
	*o = SynProxyOpt{
		Present:  true,
		TSDelta:  binary.BigEndian.Uint32(b),
		TS:       b[4]&spFlagTS != 0,
		Rescale:  b[4]&spFlagRescale != 0,
		ECNStrip: b[4]&spFlagECN != 0,
		RSWScale: min(b[5], 14),
		ToServer: min(b[6], 14),
	}
}

// seqToRecord puts a connection's translation into its record, as
// ip_vs_sync_conn_v1 does when cp->flags has IP_VS_CONN_F_SEQ_MASK.
func seqToRecord(r *Conn, s *nat.SyncSeq) {
	if s.InSet {
		r.Flags |= FlagInSeq
		r.InSeq = toSeq(s.In)
	}
	if s.OutSet {
		r.Flags |= FlagOutSeq
		r.OutSeq = toSeq(s.Out)
	}
	if s.SynProxy {
		r.SynProxy = SynProxyOpt{Present: true, TS: s.TS, TSDelta: s.TSDelta,
			Rescale: s.Rescale, RSWScale: uint8(s.RSWScale), ToServer: uint8(s.ToServer), ECNStrip: s.ECNStrip}
	}
}

// seqFromRecord is ip_vs_proc_conn's "cp->in_seq = opt->in_seq; cp->out_seq
// = opt->out_seq", for the flags the record kept (IP_VS_CONN_F_BACKUP_MASK).
// The SYN proxy option counts only with out_seq.
func seqFromRecord(s *nat.SyncSeq, c *Conn, flags uint32) {
	if flags&FlagInSeq != 0 {
		s.InSet, s.In = true, fromSeq(c.InSeq)
	}
	if flags&FlagOutSeq == 0 {
		return
	}
	s.OutSet, s.Out = true, fromSeq(c.OutSeq)
	if o := &c.SynProxy; o.Present {
		s.SynProxy = true
		s.TS, s.TSDelta = o.TS, o.TSDelta
		s.Rescale, s.RSWScale, s.ToServer = o.Rescale, int8(o.RSWScale), int8(o.ToServer)
		s.ECNStrip = o.ECNStrip
	}
}

// toSeq and fromSeq: struct ip_vs_seq's unsigned deltas are two's
// complement shifts, as the kernel adds them.
func toSeq(a nat.SeqAdj) Seq {
	return Seq{InitSeq: a.InitSeq, Delta: uint32(a.Delta), PreviousDelta: uint32(a.PrevDelta)}
}

func fromSeq(s Seq) nat.SeqAdj {
	return nat.SeqAdj{InitSeq: s.InitSeq, Delta: int32(s.Delta), PrevDelta: int32(s.PreviousDelta)}
}
