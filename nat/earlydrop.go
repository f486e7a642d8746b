package nat

import "math/rand/v2"

// A full table makes room for a new connection by dropping one that has
// not been established, as nf_conntrack's early_drop (nf_conntrack_core.c)
// evicts an unassured entry, or one whose TCP state tcp_can_early_drop
// allows, when its table is full. IPVS itself has no such step: a full
// table (its memory exhausted) refuses every new connection until entries
// time out, which is what let a spoofed SYN flood of a few thousand
// packets a second shut every new client out (the entries sit in SYN_RECV
// for a minute). With early drop the flood's half-open entries make way
// for each other and for clients, whose entries leave SYN_RECV after one
// round trip; established connections are never dropped.
//
// earlyDropScan bounds the slots looked at, from a random one in a random
// shard (NF_CT_EVICTION_RANGE is 8 entries of one hash chain).
const earlyDropScan = 8

// earlyDroppable is a state whose entry may go: half-open or closing
// (tcp_can_early_drop's list, SYN_RECV and SYNACK added as conntrack's
// unassured entries).
func earlyDroppable(s State) bool {
	switch s {
	case StateNone, StateSynRecv, StateSynAck, StateTimeWait, StateClose, StateLastAck:
		return true
	}
	return false
}

// earlyDrop removes one droppable connection and reports whether it did,
// looking at up to earlyDropShards random shards. It allocates nothing.
func (t *Table) earlyDrop() bool {
	for range earlyDropShards {
		if t.earlyDropShard(rand.Uint64()) {
			return true
		}
	}
	return false
}

// earlyDropShards bounds the shards earlyDrop tries: a table mostly of
// established connections has few to drop, and then refusing the new
// one is right.
const earlyDropShards = 4

func (t *Table) earlyDropShard(r uint64) bool {
	s := &t.in.shards[r&(shardCount-1)]
	var cands [earlyDropScan]*Conn
	n := 0
	s.mu.RLock()
	if len(s.cs) > 0 {
		start := int((r >> 32) % uint64(len(s.cs)))
		for i := 0; i < len(s.cs) && n < earlyDropScan; i++ {
			c := s.cs[(start+i)%len(s.cs)]
			if c != nil && c.Proto == ProtoTCP {
				cands[n] = c
				n++
			}
		}
	}
	s.mu.RUnlock()
	for _, c := range cands[:n] {
		ok := earlyDroppable(c.state())
		if ok && t.remove(c) {
			t.earlyDrops.Add(1)
			return true
		}
	}
	return false
}

// EarlyDrops counts the connections dropped to make room (see earlyDrop).
func (t *Table) EarlyDrops() uint64 { return t.earlyDrops.Load() }
