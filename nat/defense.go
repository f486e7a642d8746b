package nat

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// IPVS's own flood defences (ip_vs_ctl.c, ip_vs_conn.c), with the kernel's
// knobs and semantics. Every second (DEFENSE_TIMER_PERIOD) the daemon
// calls Defend with the host's free memory; update_defense_level decides
// from amemthresh whether memory is short, and turns on:
//
//   - drop_entry: ip_vs_random_dropentry drops entries at random from a
//     32nd of the table every second: half-open ones (SYN_RECV, SYNACK)
//     always, established ones and UDP only when idle for a minute with
//     few packets in (todrop_entry).
//   - secure_tcp: TCP connections move along tcp_states_dos instead of
//     tcp_states (see tcpStatesDOS).
//
// Mode 0 never, 3 always; 1 turns on when memory is short and then reads
// 2, and 2 goes back to 1 when memory is no longer short (the kernel
// writes the sysctl itself, and so does Defend).
//
// tunvs's own bound, --max-conns, is a second line: a full table drops an
// entry not yet established for each new connection (earlyDrop), whatever
// these knobs say.
type defense struct {
	amemthresh atomic.Int32
	dropEntry  atomic.Int32 // the sysctl, 0..3
	secureTCP  atomic.Int32 // the sysctl, 0..3
	dropping   atomic.Bool  // ipvs->dropentry
	dos        atomic.Bool  // the tcp_states_dos table is in use

	mu           sync.Mutex // securetcp_lock, dropentry_lock; and todrop
	oldSecureTCP int32
	todrop       [9]int8 // todrop_counter
	// Dropped counts entries ip_vs_random_dropentry removed.
	dropped atomic.Uint64
}

// Defend is one run of the kernel's defense_work_handler:
// update_defense_level with availPages pages of free memory (si_meminfo's
// freeram + bufferram), then, while drop_entry is on, one round of
// ip_vs_random_dropentry. now is the table's clock (Unix ns).
func (t *Table) Defend(now int64, availPages int) {
	d := &t.defense
	nomem := availPages < int(max(d.amemthresh.Load(), 0))
	d.mu.Lock()
	switch d.dropEntry.Load() {
	case 0:
		d.dropping.Store(false)
	case 1:
		d.dropping.Store(nomem)
		if nomem {
			d.dropEntry.Store(2)
		}
	case 2:
		d.dropping.Store(nomem)
		if !nomem {
			d.dropEntry.Store(1)
		}
	case 3:
		d.dropping.Store(true)
	}
	toChange := -1
	switch d.secureTCP.Load() {
	case 0:
		if d.oldSecureTCP >= 2 {
			toChange = 0
		}
	case 1:
		if nomem {
			if d.oldSecureTCP < 2 {
				toChange = 1
			}
			d.secureTCP.Store(2)
		} else if d.oldSecureTCP >= 2 {
			toChange = 0
		}
	case 2:
		if nomem {
			if d.oldSecureTCP < 2 {
				toChange = 1
			}
		} else {
			if d.oldSecureTCP >= 2 {
				toChange = 0
			}
			d.secureTCP.Store(1)
		}
	case 3:
		if d.oldSecureTCP < 2 {
			toChange = 1
		}
	}
	d.oldSecureTCP = d.secureTCP.Load()
	if toChange >= 0 {
		// ip_vs_protocol_timeout_change(ipvs, sysctl_secure_tcp > 1)
		d.dos.Store(d.secureTCP.Load() > 1)
	}
	d.mu.Unlock()
	if d.dropping.Load() {
		t.randomDropEntry(now)
	}
}

// DefenseDropped counts the entries drop_entry removed.
func (t *Table) DefenseDropped() uint64 { return t.defense.dropped.Load() }

// randomDropEntry is ip_vs_random_dropentry: a 32nd of the table, at
// random (the kernel scans ip_vs_conn_tab_size>>5 random buckets; here
// two of the 64 shards).
func (t *Table) randomDropEntry(now int64) {
	for range shardCount / 32 {
		s := &t.in.shards[rand.Uint32N(shardCount)]
		var cands []*Conn
		s.mu.RLock()
		for _, c := range s.cs {
			if c != nil {
				cands = append(cands, c)
			}
		}
		s.mu.RUnlock()
		for _, c := range cands {
			if c.Proto == ProtoTCP {
				st := c.state()
				switch st {
				case StateSynRecv, StateSynAck:
				case StateEstablished:
					if !t.todropEntry(c, now) {
						continue
					}
				default:
					continue
				}
			} else if !t.todropEntry(c, now) {
				continue
			}
			if t.remove(c) {
				t.defense.dropped.Add(1)
			}
		}
	}
}

// todropEntry is the kernel's todrop_entry: an entry that has lasted 60 s
// since its last packet, with 1 to 8 packets from the client, is dropped
// every todrop_rate[in_pkts]-th time it is looked at.
func (t *Table) todropEntry(c *Conn, now int64) bool {
	// time_before(cp->timeout + jiffies, cp->timer.expires + 60*HZ):
	// less than 60 s since the timer was last set.
	if now+c.timeout.Load() < c.expires.Load()+int64(60*time.Second) {
		return false
	}
	i := int(c.inPkts.Load())
	if i > 8 || i <= 0 { // todrop_rate[0] is 0: never
		return false
	}
	d := &t.defense
	d.mu.Lock()
	defer d.mu.Unlock()
	d.todrop[i]--
	if d.todrop[i] > 0 {
		return false
	}
	d.todrop[i] = int8(i) // todrop_rate[i] == i
	return true
}
