package nat

// Synchronising a SYN-proxied connection (synproxy.go) to a backup
// director: without its translation a backup forwards the real server's
// sequence numbers to a client that knows the cookie's, and the
// connection breaks at the failover. A sync record carries the shift of
// the server's numbers as the kernel's application helpers do, in
// struct ip_vs_seq out_seq with IP_VS_CONN_F_OUT_SEQ (ip_vs_sync.c:
// ip_vs_sync_conn_v1, ip_vs_proc_conn), and the timestamp offset and
// window scales in an option of tunvs's own that a kernel backup skips
// (package ipvssync).
//
// A backup takes out_seq from any master, a kernel's too: tunvs applies
// it to every packet of the connection, where a kernel applies it only
// through the application helper bound to the connection (FTP). in_seq,
// the shift of the client's numbers, is not applied: on a tunvs master
// only the PROXY protocol shifts them, and only full NAT carries it,
// whose connections are not synchronised (syncIn); a kernel master's
// FTP PORT rewriting is the only other source.

// SyncSeq is a connection's sequence translation as a sync record
// carries it.
type SyncSeq struct {
	// OutSet is IP_VS_CONN_F_OUT_SEQ: Out shifts the real server's
	// sequence numbers to the client (the kernel's out_seq).
	OutSet bool
	Out    SeqAdj
	// InSet is IP_VS_CONN_F_IN_SEQ with In, the kernel's in_seq: read
	// from a record, not applied (see above).
	InSet bool
	In    SeqAdj
	// SynProxy says the record had tunvs's SYN proxy option: the
	// fields below are set.
	SynProxy bool
	// TS: timestamps are translated, by TSDelta (the director's clock
	// less the server's).
	TS      bool
	TSDelta uint32
	// Rescale: the server's windows are rescaled to the client, from
	// RSWScale to the scale the director offered; ToServer: the shift
	// of the client's windows to a server without window scaling.
	Rescale  bool
	RSWScale int8
	ToServer int8
	// ECNStrip: the client's packets are taken out of ECN (synecn.go).
	ECNStrip bool
}

// syncSeq fills s with c's translation, once it is fixed: a SYN-proxied
// connection whose real server has answered.
func (c *Conn) syncSeq(s *SyncSeq) {
	if !c.hasFlag(flagSynProxy) {
		return
	}
	sp := c.syn()
	if sp.phase.Load() != spEstablished {
		return
	}
	*s = SyncSeq{
		OutSet: true, Out: sp.out,
		SynProxy: true,
		TS:       sp.rsTS, TSDelta: sp.tsDelta,
		Rescale: sp.rescale, RSWScale: sp.rsWS, ToServer: sp.toServer,
		ECNStrip: sp.ecnStrip,
	}
}

// applySyncSeq gives a synced connection, not yet published, the
// translation of its record: an established SYN proxy state with the
// master's offsets and nothing of the handshake.
func (c *Conn) applySyncSeq(s *SyncSeq) {
	if !s.OutSet {
		return
	}
	sp := &synState{synced: true, out: s.Out}
	if s.SynProxy {
		sp.rsTS, sp.tsDelta = s.TS, s.TSDelta
		sp.rescale, sp.rsWS, sp.toServer = s.Rescale, s.RSWScale, s.ToServer
		sp.ecnStrip = s.ECNStrip
	}
	sp.phase.Store(spEstablished)
	c.ext().sp = sp
	c.setFlag(flagSynProxy)
}

// syncSeqMatches reports whether c already translates as the record s
// says (in_seq aside, which is not applied).
func (c *Conn) syncSeqMatches(s *SyncSeq) bool {
	var have SyncSeq
	c.syncSeq(&have)
	want := SyncSeq{}
	if s.OutSet {
		want = *s
		want.InSet, want.In = false, SeqAdj{}
		if !want.SynProxy {
			// Without the option: the sequence shift alone.
			want.SynProxy = have.SynProxy
			want.TS, want.TSDelta = have.TS, have.TSDelta
			want.Rescale, want.RSWScale, want.ToServer = have.Rescale, have.RSWScale, have.ToServer
			want.ECNStrip = have.ECNStrip
		}
	}
	return have == want
}
