package netstack

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/tunvs/tunvs/tun"
)

// Queues on standby (tun.Config.Standby): a device opened with its queues
// beyond the first detached gets a reader per queue, but the kernel sends
// packets only to the queues attached, so a reader on standby is never
// woken. The one-armed director's one reader carries both directions of
// every connection. Under several bulk flows it is the bottleneck (one
// core copies every super-packet in and out, and runs the receiving
// hosts' TCP in its writes), and a reader per direction
// (fastPath.txQueue) moves more; under a single bulk flow the second
// reader wakes for the ACKs and costs more than it gives, and under
// small-packet traffic it only adds wakeups (docs/perf.md). So the
// reader of queue 0 measures what all readers read, and a queue is
// attached while that passes Config.StandbyRate with super-packets of at
// least two flows, and detached again once it has stayed below 40% of it,
// or to one bulk flow, for standbyLow.
//
// Detaching drops what the kernel still held on that queue, so the queue
// is first retired: no reader writes to it any more, which steers every
// flow back to the queues left (the kernel sends a flow to the queue that
// last wrote it), and standbyDrain later it is detached.

// DefaultStandbyRate is Config.StandbyRate's default: 2 Gbit/s. On the
// 2-core machine of docs/perf.md a one-armed director's single reader
// moved at most a tenth of that in small packets (new connections,
// keep-alive requests, 64-byte datagrams), and about 11 Gbit/s of bulk
// flows.
const DefaultStandbyRate = 250e6

const (
	standbyTick  = 50 * time.Millisecond
	standbyLow   = time.Second
	standbyDrain = 100 * time.Millisecond
	standbyBig   = 16 << 10 // a super-packet, for counting bulk flows
)

// standby is a NIC's policy for its queues on standby. Only the reader
// of queue 0 calls tick; the readers add what they read to bytes, and
// txQueue reads active.
type standby struct {
	qs     []tun.Standby // the NIC's queues from 1 on
	up     float64       // bytes a second read: attach a queue
	down   float64       // bytes a second read: below for standbyLow, retire one
	active atomic.Int32  // queues 0..active-1 are attached and written to
	bytes  atomic.Uint64 // bytes read by all the NIC's readers

	clock    func() time.Duration // time since the NIC was added
	last     time.Duration        // when the rate was last taken, by clock
	lastB    uint64
	lowSince time.Duration // since when the rate is below down, or one bulk flow at most (-1: neither)
	retired  time.Duration // when queue active was retired, to be detached (-1: none)

	// flows are the first two bulk flows (their ports) the readers saw
	// since the last tick.
	flows [2]atomic.Uint32

	attaches, detaches atomic.Uint64
	n                  *NIC
}

// newStandby returns the policy for a NIC whose queues are qs, or nil
// when it has none on standby.
func newStandby(n *NIC, qs []tun.Device) *standby {
	if len(qs) < 2 {
		return nil
	}
	start := time.Now()
	up := float64(DefaultStandbyRate)
	if n != nil && n.h.cfg.StandbyRate > 0 {
		up = float64(n.h.cfg.StandbyRate)
	}
	s := &standby{n: n, up: up, down: 0.4 * up, clock: func() time.Duration { return time.Since(start) }, lowSince: -1, retired: -1}
	for _, q := range qs[1:] {
		sb, ok := q.(tun.Standby)
		if !ok || sb.Attached() {
			return nil
		}
		s.qs = append(s.qs, sb)
	}
	s.active.Store(1)
	return s
}

// queues is how many of the NIC's queues packets may be written to.
func (n *NIC) queues() int {
	if n.sb != nil {
		return int(n.sb.active.Load())
	}
	return len(n.txq)
}

// tick takes the rate at most every standbyTick and attaches, retires or
// detaches a queue as it says.
func (s *standby) tick() {
	now := s.clock()
	if now-s.last < standbyTick {
		return
	}
	b := s.bytes.Load()
	prev := s.last
	rate := float64(b-s.lastB) / (now - prev).Seconds()
	s.last, s.lastB = now, b
	// The rate is an average since the last tick, which may be long
	// ago: the reader of queue 0 ticks only when it reads. After a
	// quiet second no flow is in flight, and none needs steering away
	// before its queue is detached.
	quiet := now-prev >= standbyLow
	multi := s.flows[1].Load() != 0
	s.flows[0].Store(0)
	s.flows[1].Store(0)
	active := int(s.active.Load())
	switch {
	case rate >= s.up && multi:
		s.lowSince = -1
		if s.retired >= 0 {
			// Retired but not yet detached: write to it again.
			s.retired = -1
			s.active.Store(int32(active + 1))
			return
		}
		if active <= len(s.qs) {
			if err := s.qs[active-1].Attach(); err != nil {
				s.n.h.cfg.Log.Warn().Err(err).Str("nic", s.n.name).Msg("cannot attach a queue on standby")
				return
			}
			s.attaches.Add(1)
			s.active.Store(int32(active + 1))
			s.n.h.cfg.Log.Debug().Str("nic", s.n.name).Int("queue", active).Float64("MBps", rate/1e6).Msg("queue on standby attached")
		}
	case s.retired >= 0:
		// Queue active, retired: detached once the flows it had are
		// steered away.
		if now-s.retired >= standbyDrain || quiet {
			s.detach(active)
		}
	case rate < s.down || !multi:
		// Slow, or a single bulk flow, which a second reader would
		// only split from its ACKs.
		if s.lowSince < 0 {
			s.lowSince = prev
		}
		if active > 1 && now-s.lowSince >= standbyLow {
			active--
			s.active.Store(int32(active))
			s.retired, s.lowSince = now, now
			if quiet {
				s.detach(active)
			}
		}
	default:
		s.lowSince = -1
	}
}

// detach detaches queue q, retired.
func (s *standby) detach(q int) {
	s.retired = -1
	if err := s.qs[q-1].Detach(); err != nil {
		s.n.h.cfg.Log.Warn().Err(err).Str("nic", s.n.name).Msg("cannot detach a queue")
		return
	}
	s.detaches.Add(1)
	s.n.h.cfg.Log.Debug().Str("nic", s.n.name).Int("queue", q).Msg("queue on standby detached")
}

// read counts a batch a reader of queue qi read (l2 the length of the
// link header in front of each packet): its bytes, and the flows of its
// super-packets (two are enough); on queue 0 it takes the rate when it is
// time.
func (s *standby) read(arena []byte, pkts []tun.GSOPacket, l2, qi int) {
	b := 0
	for _, p := range pkts {
		b += p.Len
	}
	s.bytes.Add(uint64(b))
	if s.flows[1].Load() == 0 {
		for _, p := range pkts {
			if p.Len < standbyBig {
				continue
			}
			f := flowPorts(arena[p.Off+l2 : p.Off+p.Len])
			if f == 0 || s.flows[0].CompareAndSwap(0, f) {
				continue
			}
			if s.flows[0].Load() != f {
				s.flows[1].Store(f)
				break
			}
		}
	}
	if qi == 0 {
		s.tick()
	}
}

// flowPorts is the ports of an IPv4 or IPv6 packet's TCP or UDP header,
// as one word, or 0.
func flowPorts(ip []byte) uint32 {
	if len(ip) < 1 {
		return 0
	}
	var l4 []byte
	switch ip[0] >> 4 {
	case 4:
		if n := int(ip[0]&0xf) * 4; len(ip) >= n+4 && (ip[9] == 6 || ip[9] == 17) {
			l4 = ip[n:]
		}
	case 6:
		if len(ip) >= 44 && (ip[6] == 6 || ip[6] == 17) {
			l4 = ip[40:]
		}
	}
	if l4 == nil {
		return 0
	}
	return binary.BigEndian.Uint32(l4)
}

// StandbyCounts sums, over the NICs with a queue on standby, how many
// times one was attached and detached.
func (h *Host) StandbyCounts() (attaches, detaches uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, nic := range h.byID {
		if s := nic.sb; s != nil {
			attaches += s.attaches.Load()
			detaches += s.detaches.Load()
		}
	}
	return attaches, detaches
}
