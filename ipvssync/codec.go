// Package ipvssync is IPVS connection synchronisation: the wire format of
// the kernel's sync daemon (net/netfilter/ipvs/ip_vs_sync.c) and the master
// and backup daemons that speak it, so a tunvs director and a Linux IPVS
// director can be each other's standby.
//
// The codec (this file) encodes version 1 messages, as kernels send them
// by default, and version 0 messages (sync_version=0), and decodes both.
// The decoder checks a whole message before it reports any connection in
// it: a malformed message is refused whole, with a Reason, where the
// kernel applies the records before the bad one and then drops the rest.
// Records that are well formed but unusable (an unknown mandatory option,
// flags a backup may not take, a protocol or state it does not know) are
// skipped one by one, with a Reason each, as the kernel skips them.
package ipvssync

import (
	"encoding/binary"
	"net/netip"
)

// Sizes of the wire structures (ip_vs_sync.c).
const (
	// HeaderLen is struct ip_vs_sync_mesg, version 1's header.
	HeaderLen = 8
	// HeaderLenV0 is struct ip_vs_sync_mesg_v0.
	HeaderLenV0 = 4
	// ConnLenV4 and ConnLenV6 are struct ip_vs_sync_v4 and ip_vs_sync_v6.
	ConnLenV4 = 36
	ConnLenV6 = 72
	// ConnLenV0 is SIMPLE_CONN_SIZE, struct ip_vs_sync_conn_v0.
	ConnLenV0 = 24
	// SeqLen is struct ip_vs_sync_conn_options: two struct ip_vs_seq.
	SeqLen = 24
	// MaxConns is how many records a header's 8-bit count can say.
	MaxConns = 255
	// MaxPEData and MaxPEName are IP_VS_PEDATA_MAXLEN, IP_VS_PENAME_MAXLEN.
	MaxPEData = 255
	MaxPEName = 16
)

// Connection flags (IP_VS_CONN_F_* of include/uapi/linux/ip_vs.h).
const (
	FlagFwdMask   = 0x0007
	FlagSync      = 0x0020
	FlagHashed    = 0x0040
	FlagNoOutput  = 0x0080
	FlagInactive  = 0x0100
	FlagOutSeq    = 0x0200
	FlagInSeq     = 0x0400
	FlagSeqMask   = 0x0600
	FlagNoCPort   = 0x0800
	FlagTemplate  = 0x1000
	FlagOnePacket = 0x2000

	// BackupMask is IP_VS_CONN_F_BACKUP_MASK: the flags a backup takes
	// from a message; the rest are cleared.
	BackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask | FlagNoCPort | FlagTemplate
	// BackupUpdMask is IP_VS_CONN_F_BACKUP_UPD_MASK: the flags a message
	// may change on a connection the backup already has.
	BackupUpdMask = FlagInactive | FlagSeqMask
)

// Template states (IP_VS_CTPL_S_*) on the wire.
const (
	TemplateNone    = 0
	TemplateAssured = 1
	templateLast    = 2
)

// Protocol numbers and the kernel's count of states for each
// (IP_VS_TCP_S_LAST, IP_VS_UDP_S_LAST).
const (
	ProtoTCP      = 6
	ProtoUDP      = 17
	tcpNumStates  = 11
	udpNumStates  = 1
	optSeq        = 1
	optPEData     = 2
	optPEName     = 3
	optOptional   = 0x40 // IPVS_OPT_F_PARAM
	typeInet6     = 0x01 // STYPE_F_INET6
	verShift      = 12   // SVER_SHIFT
	sizeMask      = 0x0fff
	protoVersion1 = 1 // SYNC_PROTO_VER
)

// optSynProxy is tunvs's own record option (synproxy.go). The kernel
// reads an option's type without IPVS_OPT_F_PARAM and skips an unknown
// one that has the flag, so a kernel backup passes over it; 0x3e is far
// from the kernel's 1..3 (and IPVS_OPT_PARAM, 7).
const optSynProxy = optOptional | 0x3e

// Seq is struct ip_vs_seq: TCP sequence adjustment of application helpers
// (the kernel's FTP), and of tunvs's SYN proxy (synproxy.go).
type Seq struct {
	InitSeq, Delta, PreviousDelta uint32
}

// Conn is one connection record.
type Conn struct {
	Proto uint8
	// Flags are the connection's IP_VS_CONN_F_* as sent (a v0 record has
	// 16 of them). The encoder sends the sequence option when
	// Flags&FlagSeqMask is set, as the kernel does.
	Flags uint32
	// State is the wire state: IP_VS_TCP_S_* for TCP, 0 for UDP,
	// TemplateNone or TemplateAssured for a template.
	State               uint16
	CAddr, VAddr, DAddr netip.Addr
	CPort, VPort, DPort uint16
	Fwmark              uint32
	// Timeout in seconds; version 0 has none (0: the backup uses its
	// own timeout of the state).
	Timeout uint32
	InSeq   Seq
	OutSeq  Seq
	// PEData and PEName are the persistence engine's options (SIP's
	// Call-ID). Decoded, they point into the message.
	PEData []byte
	PEName []byte
	// SynProxy is the rest of a SYN-proxied connection's translation,
	// in tunvs's own option (synproxy.go); sent when Present.
	SynProxy SynProxyOpt

	// Skip, when decoded, says why the backup must leave this record
	// out (ReasonNone: use it).
	Skip Reason
}

// V6 reports whether the record is IPv6.
func (c *Conn) V6() bool { return c.CAddr.Is6() }

// Reason says why a message or a record was refused.
type Reason uint8

const (
	ReasonNone Reason = iota
	// Whole messages.
	ReasonShort         // shorter than a header
	ReasonSize          // header's size is not the datagram's
	ReasonSyncID        // another sync id (the daemon checks)
	ReasonTruncated     // a record's fixed part past the end
	ReasonRecordSize    // a record's size past the end or below its fixed part
	ReasonRecordVersion // a record of an unknown version
	ReasonRecordType    // a record type neither IPv4 nor IPv6
	ReasonOptionTrunc   // an option's type and length past the record
	ReasonOptionLen     // an option of length 0 or past the record
	ReasonSeqOption     // sequence option of the wrong length or twice
	ReasonPEDataOption  // PE data too long or twice
	ReasonPENameOption  // PE name too long or twice
	ReasonPadding       // padding that is not zero
	ReasonTrailing      // bytes after the last record
	ReasonV0Truncated   // version 0: a record or its options past the end
	firstSkipReason     // records, below
	ReasonUnknownOption // an unknown mandatory option
	ReasonFlags         // flags a backup may not take (one-packet, template without client port)
	ReasonProto         // a protocol tunvs does not synchronise
	ReasonState         // a state the protocol does not have
	ReasonPE            // persistence engine data (tunvs has no engines)
	ReasonSynProxyOpt   // tunvs's SYN proxy option of the wrong length or twice
	numReasons
)

var reasonNames = [numReasons]string{
	"none", "short header", "bogus message size", "other syncid",
	"record truncated", "record size", "record version", "record type",
	"option truncated", "option length", "sequence option", "pe data option",
	"pe name option", "padding", "trailing bytes", "v0 record truncated", "",
	"unknown mandatory option", "invalid flags",
	"unsupported protocol", "invalid state", "persistence engine",
	"synproxy option",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Record reports whether r is about one record (skipped) rather than the
// whole message (refused).
func (r Reason) Record() bool { return r > firstSkipReason }

// Reasons lists every reason, for counters.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons)
	for r := ReasonShort; r < numReasons; r++ {
		if r != firstSkipReason {
			rs = append(rs, r)
		}
	}
	return rs
}

// Message is a decoded datagram. Decode reuses Conns' storage.
type Message struct {
	Version int // 0 or 1
	SyncID  uint8
	Conns   []Conn
}

// Decode parses a datagram (ip_vs_process_message). On a Reason other
// than ReasonNone the message is refused whole and m.Conns is empty.
func (m *Message) Decode(b []byte) Reason {
	m.Conns = m.Conns[:0]
	if len(b) < HeaderLenV0 {
		return ReasonShort
	}
	if int(binary.BigEndian.Uint16(b[2:])) != len(b) {
		return ReasonSize
	}
	m.SyncID = b[1]
	// Version 1 has a zero where version 0 counts its records, version
	// 1 in byte 5 and zero spare bytes; anything else is version 0.
	if len(b) >= HeaderLen && b[0] == 0 && b[5] == protoVersion1 && b[6] == 0 && b[7] == 0 {
		m.Version = 1
		r := m.decode1(b, int(b[4]))
		if r != ReasonNone {
			m.Conns = m.Conns[:0]
		}
		return r
	}
	m.Version = 0
	r := m.decode0(b, int(b[0]))
	if r != ReasonNone {
		m.Conns = m.Conns[:0]
	}
	return r
}

func (m *Message) next() *Conn {
	if len(m.Conns) < cap(m.Conns) {
		m.Conns = m.Conns[:len(m.Conns)+1]
		c := &m.Conns[len(m.Conns)-1]
		*c = Conn{}
		return c
	}
	m.Conns = append(m.Conns, Conn{})
	return &m.Conns[len(m.Conns)-1]
}

func (m *Message) decode1(b []byte, n int) Reason {
	off := HeaderLen
	for i := 0; i < n; i++ {
		if off+ConnLenV4 > len(b) {
			return ReasonTruncated
		}
		vs := binary.BigEndian.Uint16(b[off+2:])
		size := int(vs & sizeMask)
		end := off + size
		if end > len(b) {
			return ReasonRecordSize
		}
		if vs>>verShift != 0 {
			return ReasonRecordVersion
		}
		if r := decodeRecord(b[off:end], m.next()); r != ReasonNone {
			return r
		}
		// Records start 4-aligned; the kernel pads before the next
		// one (ip_vs_sync_conn), never after the last.
		pad := (4 - size&3) & 3
		if i < n-1 || end+pad <= len(b) {
			for j := end; j < end+pad && j < len(b); j++ {
				if b[j] != 0 {
					return ReasonPadding
				}
			}
			end += pad
		}
		off = end
	}
	if off < len(b) {
		return ReasonTrailing
	}
	return ReasonNone
}

// decodeRecord is ip_vs_proc_sync_conn's parsing of one version 1 record.
func decodeRecord(r []byte, c *Conn) Reason {
	if len(r) < ConnLenV4 {
		return ReasonRecordSize
	}
	var fixed int
	switch {
	case r[0]&typeInet6 != 0:
		fixed = ConnLenV6
	case r[0] == 0:
		fixed = ConnLenV4
	default:
		return ReasonRecordType
	}
	if fixed > len(r) {
		return ReasonRecordSize
	}
	c.Proto = r[1]
	c.Flags = binary.BigEndian.Uint32(r[4:])
	c.State = binary.BigEndian.Uint16(r[8:])
	c.CPort = binary.BigEndian.Uint16(r[10:])
	c.VPort = binary.BigEndian.Uint16(r[12:])
	c.DPort = binary.BigEndian.Uint16(r[14:])
	c.Fwmark = binary.BigEndian.Uint32(r[16:])
	c.Timeout = binary.BigEndian.Uint32(r[20:])
	if fixed == ConnLenV6 {
		c.CAddr = netip.AddrFrom16([16]byte(r[24:40]))
		c.VAddr = netip.AddrFrom16([16]byte(r[40:56]))
		c.DAddr = netip.AddrFrom16([16]byte(r[56:72]))
	} else {
		c.CAddr = netip.AddrFrom4([4]byte(r[24:28]))
		c.VAddr = netip.AddrFrom4([4]byte(r[28:32]))
		c.DAddr = netip.AddrFrom4([4]byte(r[32:36]))
	}
	var seen uint8
	hasPEData, hasPEName := false, false
	p := fixed
	for p < len(r) {
		if p+2 > len(r) {
			return ReasonOptionTrunc
		}
		typ, l := r[p], int(r[p+1])
		p += 2
		if l == 0 || p+l > len(r) {
			return ReasonOptionLen
		}
		data := r[p : p+l]
		switch typ &^ optOptional {
		case optSeq:
			if l != SeqLen || seen&1 != 0 {
				return ReasonSeqOption
			}
			seen |= 1
			c.InSeq = getSeq(data[0:], binary.BigEndian)
			c.OutSeq = getSeq(data[12:], binary.BigEndian)
		case optPEData:
			if l > MaxPEData || hasPEData {
				return ReasonPEDataOption
			}
			hasPEData = true
			c.PEData = data
		case optPEName:
			if l > MaxPEName || hasPEName {
				return ReasonPENameOption
			}
			hasPEName = true
			c.PEName = data
		case optSynProxy &^ optOptional:
			switch {
			case typ != optSynProxy:
				// Without the optional flag it is not tunvs's:
				// the kernel's unknown mandatory option.
				if c.Skip == ReasonNone {
					c.Skip = ReasonUnknownOption
				}
			case l != SynProxyLen || c.SynProxy.Present:
				if c.Skip == ReasonNone {
					c.Skip = ReasonSynProxyOpt
				}
			default:
				c.SynProxy.decode(data)
			}
		default:
			if typ&optOptional == 0 && c.Skip == ReasonNone {
				c.Skip = ReasonUnknownOption
			}
		}
		p += l
	}
	if c.Skip == ReasonNone {
		c.Skip = checkRecord(c.Proto, c.Flags, c.State)
	}
	if c.Skip == ReasonNone && len(c.PEData) > 0 {
		// ip_vs_conn_fill_param_sync: PE data needs the engine named;
		// tunvs has no persistence engines, so the kernel's "no engine
		// found" applies to every name.
		c.Skip = ReasonPE
	}
	return ReasonNone
}

// checkRecord is the kernel's per-record checks after parsing
// (ip_vs_sync_validate_flags, then protocol and state).
func checkRecord(proto uint8, flags uint32, state uint16) Reason {
	if flags&FlagOnePacket != 0 || flags&(FlagNoCPort|FlagTemplate) == FlagNoCPort|FlagTemplate {
		return ReasonFlags
	}
	if flags&FlagTemplate != 0 {
		if state >= templateLast {
			return ReasonState
		}
		return ReasonNone
	}
	switch proto {
	case ProtoTCP:
		if state >= tcpNumStates {
			return ReasonState
		}
	case ProtoUDP:
		if state >= udpNumStates {
			return ReasonState
		}
	default:
		// The kernel knows SCTP, AH and ESP too; tunvs serves TCP
		// and UDP only and treats the rest as an unloaded protocol.
		return ReasonProto
	}
	return ReasonNone
}

func getSeq(b []byte, o binary.ByteOrder) Seq {
	return Seq{o.Uint32(b), o.Uint32(b[4:]), o.Uint32(b[8:])}
}

func putSeq(b []byte, o binary.ByteOrder, s Seq) {
	o.PutUint32(b, s.InitSeq)
	o.PutUint32(b[4:], s.Delta)
	o.PutUint32(b[8:], s.PreviousDelta)
}

// decode0 is ip_vs_process_message_v0.
func (m *Message) decode0(b []byte, n int) Reason {
	off := HeaderLenV0
	for i := 0; i < n; i++ {
		if off+ConnLenV0 > len(b) {
			return ReasonV0Truncated
		}
		r := b[off:]
		c := m.next()
		c.Proto = r[1]
		c.CPort = binary.BigEndian.Uint16(r[2:])
		c.VPort = binary.BigEndian.Uint16(r[4:])
		c.DPort = binary.BigEndian.Uint16(r[6:])
		c.CAddr = netip.AddrFrom4([4]byte(r[8:12]))
		c.VAddr = netip.AddrFrom4([4]byte(r[12:16]))
		c.DAddr = netip.AddrFrom4([4]byte(r[16:20]))
		c.Flags = uint32(binary.BigEndian.Uint16(r[20:]))
		c.State = binary.BigEndian.Uint16(r[22:])
		off += ConnLenV0
		if c.Flags&FlagSeqMask != 0 {
			if off+SeqLen > len(b) {
				return ReasonV0Truncated
			}
			// Version 0 copies struct ip_vs_seq as it is in memory
			// (memcpy of cp->sync_conn_opt): host order, which is
			// little-endian on the machines that run IPVS.
			c.InSeq = getSeq(b[off:], binary.LittleEndian)
			c.OutSeq = getSeq(b[off+12:], binary.LittleEndian)
			off += SeqLen
		}
		c.Skip = checkRecord(c.Proto, c.Flags, c.State)
	}
	if off < len(b) {
		return ReasonTrailing
	}
	return ReasonNone
}

// DefaultMaxLen is a master's message size when --sync-maxlen is not
// given: 1500 bytes less the IP and UDP headers, whatever the link's MTU
// (start_sync_thread: mtu = 1500 for a master, sync_maxlen = mtu - hlen).
func DefaultMaxLen(v6group bool) int {
	if v6group {
		return 1500 - 40 - 8
	}
	return 1500 - 20 - 8
}

// ClampMaxLen is start_sync_thread's clamp of a given --sync-maxlen: at
// least 1 for a master and 1024 for a backup, at most 65535 less the
// headers. 0 means the default (DefaultMaxLen for a master; a backup's
// receive buffer is the link's MTU, at least 1500, less the headers).
func ClampMaxLen(n int, backup, v6group bool, mtu int) int {
	hlen := 28
	if v6group {
		hlen = 48
	}
	if n == 0 {
		if backup {
			return min(max(mtu, 1500), 65535) - hlen
		}
		return 1500 - hlen
	}
	lo := 1
	if backup {
		lo = 1024
	}
	return min(max(n, lo), 65535-hlen)
}

// RecordLen is the size of c's record without padding, as the version
// (0 or 1) encodes it.
func RecordLen(version int, c *Conn) int {
	if version == 0 {
		if c.Flags&FlagSeqMask != 0 {
			return ConnLenV0 + SeqLen
		}
		return ConnLenV0
	}
	n := ConnLenV4
	if c.V6() {
		n = ConnLenV6
	}
	if c.Flags&FlagSeqMask != 0 {
		n += SeqLen + 2
	}
	if len(c.PEData) > 0 {
		n += len(c.PEData) + 2
		if len(c.PEName) > 0 {
			n += len(c.PEName) + 2
		}
	}
	if c.SynProxy.Present {
		n += SynProxyLen + 2
	}
	return n
}

// Encoder builds messages the way the kernel's master fills its sync
// buffers (ip_vs_sync_conn, ip_vs_sync_conn_v0): records are added while
// they fit in MaxLen; the caller sends the message when Add says it is
// complete. It allocates nothing once its buffer has grown to MaxLen.
type Encoder struct {
	Version int   // 0 or 1
	SyncID  uint8 // the master's --syncid
	MaxLen  int   // message size bound (sync_maxlen)

	b []byte
	n int
}

// Reset drops the message under construction and takes buf (len 0) as
// the storage for the next one.
func (e *Encoder) Reset(buf []byte) {
	e.b = buf[:0]
	e.n = 0
}

// Len is the number of records in the message under construction.
func (e *Encoder) Len() int { return e.n }

// Bytes is the message under construction; nil when it has no record.
// The caller owns it once it calls Reset with other storage.
func (e *Encoder) Bytes() []byte {
	if e.n == 0 {
		return nil
	}
	return e.b
}

// Fits reports whether c can join the message under construction; when
// not, the caller sends Bytes and Resets first. An empty message takes any
// record, however long (ip_vs_sync_buff_create makes room for it).
func (e *Encoder) Fits(c *Conn) bool {
	if e.n == 0 {
		return true
	}
	if e.n >= MaxConns {
		// The kernel's version 1 has no such check: past 255 records
		// (possible only with a --sync-maxlen above 9 KB) its count
		// wraps. Stopping at 255 keeps the count right.
		return false
	}
	l := RecordLen(e.Version, c)
	if e.Version == 0 {
		return len(e.b)+l <= e.MaxLen
	}
	pad := (4 - len(e.b)&3) & 3
	return len(e.b)+pad+l <= e.MaxLen
}

// Put adds c (check Fits first) and reports whether the message is now
// complete: version 0 sends a buffer as soon as a record with options
// would not fit after it, as ip_vs_sync_conn_v0 does; version 1 only when
// the next record does not fit (see Fits).
func (e *Encoder) Put(c *Conn) (complete bool) {
	if e.n == 0 {
		e.start()
	}
	if e.Version == 0 {
		e.put0(c)
		return len(e.b)+ConnLenV0+SeqLen > e.MaxLen || e.n >= MaxConns
	}
	e.put1(c)
	return e.n >= MaxConns
}

func (e *Encoder) grow(n int) []byte {
	l := len(e.b)
	if cap(e.b)-l < n {
		nb := make([]byte, l, max(2*cap(e.b), l+n, e.MaxLen))
		copy(nb, e.b)
		e.b = nb
	}
	e.b = e.b[:l+n]
	clear(e.b[l:])
	return e.b[l:]
}

func (e *Encoder) start() {
	e.b = e.b[:0]
	if e.Version == 0 {
		h := e.grow(HeaderLenV0)
		h[1] = e.SyncID
		return
	}
	h := e.grow(HeaderLen)
	h[1] = e.SyncID
	h[5] = protoVersion1
}

func (e *Encoder) finishHeader() {
	binary.BigEndian.PutUint16(e.b[2:], uint16(len(e.b)))
	if e.Version == 0 {
		e.b[0] = uint8(e.n)
	} else {
		e.b[4] = uint8(e.n)
	}
}

func (e *Encoder) put1(c *Conn) {
	pad := (4 - len(e.b)&3) & 3
	l := RecordLen(1, c)
	r := e.grow(pad + l)[pad:]
	if c.V6() {
		r[0] = typeInet6
	}
	r[1] = c.Proto
	binary.BigEndian.PutUint16(r[2:], uint16(l&sizeMask))
	binary.BigEndian.PutUint32(r[4:], c.Flags&^FlagHashed)
	binary.BigEndian.PutUint16(r[8:], c.State)
	binary.BigEndian.PutUint16(r[10:], c.CPort)
	binary.BigEndian.PutUint16(r[12:], c.VPort)
	binary.BigEndian.PutUint16(r[14:], c.DPort)
	binary.BigEndian.PutUint32(r[16:], c.Fwmark)
	binary.BigEndian.PutUint32(r[20:], c.Timeout)
	p := ConnLenV4
	if c.V6() {
		a := c.CAddr.As16()
		copy(r[24:], a[:])
		a = c.VAddr.As16()
		copy(r[40:], a[:])
		a = c.DAddr.As16()
		copy(r[56:], a[:])
		p = ConnLenV6
	} else {
		a := c.CAddr.As4()
		copy(r[24:], a[:])
		a = c.VAddr.As4()
		copy(r[28:], a[:])
		a = c.DAddr.As4()
		copy(r[32:], a[:])
	}
	if c.Flags&FlagSeqMask != 0 {
		r[p], r[p+1] = optSeq, SeqLen
		putSeq(r[p+2:], binary.BigEndian, c.InSeq)
		putSeq(r[p+14:], binary.BigEndian, c.OutSeq)
		p += 2 + SeqLen
	}
	if len(c.PEData) > 0 {
		r[p], r[p+1] = optPEData, uint8(len(c.PEData))
		p += 2 + copy(r[p+2:], c.PEData)
		if len(c.PEName) > 0 {
			r[p], r[p+1] = optPEName, uint8(len(c.PEName))
			p += 2 + copy(r[p+2:], c.PEName)
		}
	}
	if c.SynProxy.Present {
		r[p], r[p+1] = optSynProxy, SynProxyLen
		c.SynProxy.encode(r[p+2 : p+2+SynProxyLen])
	}
	e.n++
	e.finishHeader()
}

func (e *Encoder) put0(c *Conn) {
	r := e.grow(RecordLen(0, c))
	r[1] = c.Proto
	binary.BigEndian.PutUint16(r[2:], c.CPort)
	binary.BigEndian.PutUint16(r[4:], c.VPort)
	binary.BigEndian.PutUint16(r[6:], c.DPort)
	a := c.CAddr.As4()
	copy(r[8:], a[:])
	a = c.VAddr.As4()
	copy(r[12:], a[:])
	a = c.DAddr.As4()
	copy(r[16:], a[:])
	binary.BigEndian.PutUint16(r[20:], uint16(c.Flags&^FlagHashed))
	binary.BigEndian.PutUint16(r[22:], c.State)
	if c.Flags&FlagSeqMask != 0 {
		putSeq(r[24:], binary.LittleEndian, c.InSeq)
		putSeq(r[36:], binary.LittleEndian, c.OutSeq)
	}
	e.n++
	e.finishHeader()
}

// Encode packs conns into messages of at most maxlen bytes, as a master
// fills its buffers, and returns them. For tests and tools; the daemon
// uses an Encoder on its own buffers. Version 0 leaves IPv6 connections
// out, as ip_vs_sync_conn_v0 does.
func Encode(version int, syncid uint8, maxlen int, conns []Conn) [][]byte {
	var out [][]byte
	e := Encoder{Version: version, SyncID: syncid, MaxLen: maxlen}
	for i := range conns {
		c := &conns[i]
		if version == 0 && c.V6() {
			continue
		}
		if !e.Fits(c) {
			out = append(out, e.Bytes())
			e.Reset(nil)
		}
		if e.Put(c) {
			out = append(out, e.Bytes())
			e.Reset(nil)
		}
	}
	if b := e.Bytes(); b != nil {
		out = append(out, b)
	}
	return out
}
