package ipvssync

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// The daemons (ip_vs_sync.c's master and backup threads). A master is a
// nat.SyncSender: the table hands it the connections that are due, it
// packs them into messages and a goroutine sends them. A backup reads
// messages and applies them to the table.

// Defaults of the transport (IP_VS_SYNC_GROUP, IP_VS_SYNC_PORT).
var (
	DefaultGroup = netip.MustParseAddr("224.0.0.81")
)

const (
	DefaultPort = 8848
	DefaultTTL  = 1
	// flushTime is IPVS_SYNC_FLUSH_TIME: a buffer is sent at the latest
	// this long after its first record; checkPeriod is
	// IPVS_SYNC_CHECK_PERIOD, how often the master looks.
	flushTime   = 2 * time.Second
	checkPeriod = time.Second
	// qlenMax is IPVS_SYNC_QLEN_MAX, the default sync_qlen_max: full
	// buffers waiting to be sent; past it they are dropped.
	qlenMax = 32
	// maxPorts is IPVS_SYNC_PORTS_MAX.
	maxPorts = 64
)

// Role is the daemon's state (IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP).
type Role uint8

const (
	Master Role = 1
	Backup Role = 2
)

func (r Role) String() string {
	switch r {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return fmt.Sprintf("role %d", r)
}

// ParseRole reads ipvsadm's --start-daemon / --stop-daemon argument.
func ParseRole(s string) (Role, error) {
	switch s {
	case "master":
		return Master, nil
	case "backup":
		return Backup, nil
	}
	return 0, fmt.Errorf("%w: daemon state %q (master or backup)", ErrInvalid, s)
}

// Config is a daemon's configuration: the rules model's (what ipvsadm's
// --start-daemon options set).
type Config = rules.SyncDaemon

// Errors of the daemons' control.
var (
	ErrInvalid = errors.New("invalid argument")
	ErrRunning = errors.New("sync daemon already running")
	ErrStopped = errors.New("no such sync daemon")
)

// withDefaults is start_sync_thread's filling in and checking.
func withDefaults(c Config, role Role, mtu int) (Config, error) {
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	c.MaxLen = ClampMaxLen(c.MaxLen, role == Backup, c.Group.Is6(), mtu)
	return c, nil
}

// Transport opens the daemons' sockets on a named link of the director.
type Transport interface {
	// MTU of the link.
	LinkMTU(ifname string) (int, error)
	// MulticastSender sends datagrams to group, from the link's primary
	// address, with the given TTL, not looped back.
	MulticastSender(ifname string, group netip.AddrPort, ttl uint8) (io.WriteCloser, error)
	// MulticastListener receives datagrams to group on the link.
	MulticastListener(ifname string, group netip.AddrPort) (net.PacketConn, error)
}

// MasterStats count a master's work.
type MasterStats struct {
	Records    atomic.Uint64 // connection records packed
	Messages   atomic.Uint64 // datagrams sent
	QueueDrops atomic.Uint64 // full buffers dropped: more than sync_qlen_max waiting
	SendErrors atomic.Uint64
}

// MasterDaemon is the sync master: a nat.SyncSender.
type MasterDaemon struct {
	tb    *nat.Table
	cfg   Config
	ports int
	out   []io.WriteCloser // per port id
	log   zerolog.Logger
	now   func() int64 // for buffer ages only

	mu    sync.Mutex
	enc   []Encoder
	first []int64

	queue chan queued
	free  chan []byte
	stop  chan struct{}
	done  chan struct{}

	Stats MasterStats

	flush, check time.Duration
}

type queued struct {
	id int
	b  []byte
}

// startMaster opens one sender per sync port and starts sending.
func startMaster(tb *nat.Table, tr Transport, cfg Config, log zerolog.Logger) (*MasterDaemon, error) {
	m := &MasterDaemon{
		tb: tb, cfg: cfg, log: log,
		ports: min(max(tb.SyncPorts(), 1), maxPorts),
		now:   func() int64 { return time.Now().UnixNano() },
		flush: flushTime, check: checkPeriod,
	}
	for id := 0; id < m.ports; id++ {
		w, err := tr.MulticastSender(cfg.Interface, netip.AddrPortFrom(cfg.Group, cfg.Port+uint16(id)), cfg.TTL)
		if err != nil {
			for _, w := range m.out {
				w.Close()
			}
			return nil, err
		}
		m.out = append(m.out, w)
	}
	m.enc = make([]Encoder, m.ports)
	m.first = make([]int64, m.ports)
	m.queue = make(chan queued, qlenMax)
	m.free = make(chan []byte, qlenMax+m.ports+1)
	size := max(cfg.MaxLen, 512)
	for range cap(m.free) {
		m.free <- make([]byte, 0, size)
	}
	for i := range m.enc {
		m.enc[i] = Encoder{SyncID: cfg.SyncID, MaxLen: cfg.MaxLen}
	}
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go m.run()
	return m, nil
}

// Send packs c into the current message of its port (ip_vs_sync_conn's
// buffer filling). It runs on the packet path and allocates nothing.
func (m *MasterDaemon) Send(c *nat.Conn) {
	var r Conn
	fillRecord(&r, c)
	v := m.tb.SyncVersion()
	if v == 0 && r.V6() {
		return
	}
	id := 0
	if m.ports > 1 {
		// select_master_thread_id: by the connection's address.
		id = int(uintptr(unsafe.Pointer(c))>>7) & (m.ports - 1)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := &m.enc[id]
	if e.Len() > 0 && (e.Version != v || !e.Fits(&r)) {
		// Full, or of the other version ("Send buffer if it is for
		// v0"): out it goes.
		m.queueLocked(id)
	}
	if e.Len() == 0 {
		select {
		case b := <-m.free:
			e.Version = v
			e.Reset(b)
			m.first[id] = m.now()
		default:
			m.Stats.QueueDrops.Add(1)
			return
		}
	}
	m.Stats.Records.Add(1)
	if e.Put(&r) {
		m.queueLocked(id)
	}
}

// fillRecord is the copy of a connection's members in ip_vs_sync_conn.
func fillRecord(r *Conn, c *nat.Conn) {
	si := c.SyncInfo()
	r.Proto = c.Proto
	r.CAddr, r.VAddr, r.DAddr = c.CAddr(), c.VAddr(), c.DAddr()
	r.CPort, r.VPort, r.DPort = c.CPort, c.VPort, c.DPort
	if si.Inactive {
		r.Flags |= FlagInactive
	}
	if si.Template {
		r.Flags |= FlagTemplate
		if si.State == nat.StateAssured {
			r.State = TemplateAssured
		}
	} else if c.Proto == ProtoTCP {
		r.State = uint16(si.State)
	}
	if si.Synced {
		r.Flags |= FlagSync
	}
	r.Timeout = uint32(si.Timeout / time.Second)
	seqToRecord(r, &si.Seq)
}

// queueLocked hands the current message of port id to the sender
// (sb_queue_tail); m.mu is held.
func (m *MasterDaemon) queueLocked(id int) {
	e := &m.enc[id]
	b := e.Bytes()
	e.Reset(nil)
	if b == nil {
		return
	}
	select {
	case m.queue <- queued{id, b}:
	default:
		m.Stats.QueueDrops.Add(1)
		m.free <- b[:0]
	}
}

func (m *MasterDaemon) run() {
	defer close(m.done)
	tick := time.NewTicker(m.check)
	defer tick.Stop()
	for {
		select {
		case q := <-m.queue:
			m.send(q)
		case <-tick.C:
			// Do not keep records for more than flushTime.
			m.mu.Lock()
			now := m.now()
			for id := range m.enc {
				if m.enc[id].Len() > 0 && now-m.first[id] >= int64(m.flush) {
					m.queueLocked(id)
				}
			}
			m.mu.Unlock()
		case <-m.stop:
			return
		}
	}
}

func (m *MasterDaemon) send(q queued) {
	if _, err := m.out[q.id].Write(q.b); err != nil {
		if m.Stats.SendErrors.Add(1) == 1 {
			m.log.Warn().Err(err).Str("link", m.cfg.Interface).Msg("sync master: send failed")
		}
	} else {
		m.Stats.Messages.Add(1)
	}
	m.free <- q.b[:0]
}

// close stops the master; what was not sent is dropped, as the kernel's
// stop_sync_thread drops it.
func (m *MasterDaemon) close() {
	close(m.stop)
	<-m.done
	for _, w := range m.out {
		w.Close()
	}
}

// BackupStats count a backup's work.
type BackupStats struct {
	Messages atomic.Uint64 // datagrams applied
	Conns    atomic.Uint64 // records applied
	Refused  atomic.Uint64 // records the table refused (full, inconsistent)
	reasons  [numReasons]atomic.Uint64
}

// Dropped is how many messages (or records, for a record reason) were
// refused for r.
func (s *BackupStats) Dropped(r Reason) uint64 {
	if r >= numReasons {
		return 0
	}
	return s.reasons[r].Load()
}

// BackupDaemon is the sync backup.
type BackupDaemon struct {
	tb  *nat.Table
	cfg Config
	in  []net.PacketConn
	now func() int64
	log zerolog.Logger
	wg  sync.WaitGroup

	Stats BackupStats
}

func startBackup(tb *nat.Table, tr Transport, cfg Config, now func() int64, log zerolog.Logger) (*BackupDaemon, error) {
	b := &BackupDaemon{tb: tb, cfg: cfg, now: now, log: log}
	ports := min(max(tb.SyncPorts(), 1), maxPorts)
	for id := 0; id < ports; id++ {
		pc, err := tr.MulticastListener(cfg.Interface, netip.AddrPortFrom(cfg.Group, cfg.Port+uint16(id)))
		if err != nil {
			for _, pc := range b.in {
				pc.Close()
			}
			return nil, err
		}
		b.in = append(b.in, pc)
	}
	for _, pc := range b.in {
		b.wg.Add(1)
		go b.read(pc)
	}
	return b, nil
}

func (b *BackupDaemon) read(pc net.PacketConn) {
	defer b.wg.Done()
	// One byte more than maxlen: a longer datagram is cut there, as the
	// kernel's receive buffer cuts it, and refused for its size.
	buf := make([]byte, b.cfg.MaxLen+1)
	var m Message
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			// A closed socket (gonet says EOF) is the daemon stopping.
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				b.log.Warn().Err(err).Msg("sync backup: receive failed")
			}
			return
		}
		b.Process(&m, buf[:min(n, b.cfg.MaxLen)], n, b.now())
	}
}

// Process is ip_vs_process_message for a datagram of n bytes whose first
// len(p) were read; m is the caller's scratch.
func (b *BackupDaemon) Process(m *Message, p []byte, n int, now int64) {
	r := m.Decode(p)
	if r == ReasonNone && n != len(p) {
		r = ReasonSize
	}
	if r == ReasonNone && b.cfg.SyncID != 0 && m.SyncID != b.cfg.SyncID {
		r = ReasonSyncID
	}
	if r != ReasonNone {
		b.Stats.reasons[r].Add(1)
		return
	}
	b.Stats.Messages.Add(1)
	for i := range m.Conns {
		c := &m.Conns[i]
		if c.Skip != ReasonNone {
			b.Stats.reasons[c.Skip].Add(1)
			continue
		}
		sc := toSynced(c)
		if err := b.tb.ApplySync(&sc, now); err != nil {
			if b.Stats.Refused.Add(1) == 1 {
				b.log.Warn().Err(err).Msg("sync backup: connection refused")
			}
			continue
		}
		b.Stats.Conns.Add(1)
	}
}

// toSynced is the start of ip_vs_proc_conn: flags masked, the wire state
// in nat's terms.
func toSynced(c *Conn) nat.SyncedConn {
	flags := c.Flags & BackupMask
	sc := nat.SyncedConn{
		Proto: c.Proto,
		CAddr: c.CAddr, VAddr: c.VAddr, DAddr: c.DAddr,
		CPort: c.CPort, VPort: c.VPort, DPort: c.DPort,
		Template: flags&FlagTemplate != 0,
		Inactive: flags&FlagInactive != 0,
		Timeout:  time.Duration(c.Timeout) * time.Second,
	}
	if !sc.Template {
		seqFromRecord(&sc.Seq, c, flags)
	}
	switch {
	case sc.Template:
		sc.State = nat.StateNone
		if c.State == TemplateAssured {
			sc.State = nat.StateAssured
		}
	case c.Proto == ProtoUDP:
		sc.State = nat.StateUDP
	default:
		sc.State = nat.State(c.State)
	}
	return sc
}

func (b *BackupDaemon) close() {
	for _, pc := range b.in {
		pc.Close()
	}
	b.wg.Wait()
}

// Daemons are a director's sync daemons, at most one master and one
// backup (both may run at once, as in the kernel).
type Daemons struct {
	tb  *nat.Table
	tr  Transport
	now func() int64
	log zerolog.Logger

	mu     sync.Mutex
	master *MasterDaemon
	backup *BackupDaemon
}

// NewDaemons makes the daemons of tb; none runs. now is the table's clock
// (Unix ns), for the expiry of synced connections.
func NewDaemons(tb *nat.Table, tr Transport, now func() int64, log zerolog.Logger) *Daemons {
	if now == nil {
		now = func() int64 { return time.Now().UnixNano() }
	}
	return &Daemons{tb: tb, tr: tr, now: now, log: log}
}

// Start is ipvsadm --start-daemon.
func (d *Daemons) Start(role Role, cfg Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if (role == Master && d.master != nil) || (role == Backup && d.backup != nil) {
		return fmt.Errorf("%w: %v", ErrRunning, role)
	}
	if role != Master && role != Backup {
		return fmt.Errorf("%w: %v", ErrInvalid, role)
	}
	if d.tr == nil {
		return fmt.Errorf("%w: no network to sync on", ErrInvalid)
	}
	mtu, err := d.tr.LinkMTU(cfg.Interface)
	if err != nil {
		return fmt.Errorf("%w: multicast interface %s: %v", ErrInvalid, cfg.Interface, err)
	}
	cfg, err = withDefaults(cfg, role, mtu)
	if err != nil {
		return err
	}
	log := d.log.With().Str("role", role.String()).Str("link", cfg.Interface).Uint8("syncid", cfg.SyncID).Logger()
	if role == Master {
		m, err := startMaster(d.tb, d.tr, cfg, log)
		if err != nil {
			return fmt.Errorf("sync master: %w", err)
		}
		d.master = m
		d.tb.SetSyncSender(m)
	} else {
		b, err := startBackup(d.tb, d.tr, cfg, d.now, log)
		if err != nil {
			return fmt.Errorf("sync backup: %w", err)
		}
		d.backup = b
	}
	log.Info().Int("maxlen", cfg.MaxLen).Stringer("group", cfg.Group).Uint16("port", cfg.Port).Uint8("ttl", cfg.TTL).Msg("sync daemon started")
	return nil
}

// Stop is ipvsadm --stop-daemon.
func (d *Daemons) Stop(role Role) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case role == Master && d.master != nil:
		d.tb.SetSyncSender(nil)
		d.master.close()
		d.master = nil
	case role == Backup && d.backup != nil:
		d.backup.close()
		d.backup = nil
	default:
		return fmt.Errorf("%w: %v", ErrStopped, role)
	}
	d.log.Info().Str("role", role.String()).Msg("sync daemon stopped")
	return nil
}

// Close stops whatever runs.
func (d *Daemons) Close() {
	d.Stop(Master)
	d.Stop(Backup)
}

// Running returns the configuration of the daemon of role, if it runs.
func (d *Daemons) Running(role Role) (Config, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if role == Master && d.master != nil {
		return d.master.cfg, true
	}
	if role == Backup && d.backup != nil {
		return d.backup.cfg, true
	}
	return Config{}, false
}

// MasterDaemon and BackupDaemon return the running daemons (nil: none),
// for their counters.
func (d *Daemons) Master() *MasterDaemon {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.master
}

func (d *Daemons) Backup() *BackupDaemon {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.backup
}

// List writes what `ipvsadm -L --daemon` prints (ipvsadm.c print_daemon):
// a line per running daemon, master first.
func (d *Daemons) List(w io.Writer) {
	for _, role := range []Role{Master, Backup} {
		c, ok := d.Running(role)
		if !ok {
			continue
		}
		fmt.Fprintf(w, "%s sync daemon (mcast=%s, syncid=%d, maxlen=%d, group=%s, port=%d, ttl=%d)\n",
			role, c.Interface, c.SyncID, c.MaxLen, c.Group, c.Port, c.TTL)
	}
}
