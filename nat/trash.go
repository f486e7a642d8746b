package nat

import (
	"net/netip"
	"time"
)

// The kernel keeps a removed real server in a trash list while connections
// still use it, and for a while after; adding the same server back to a
// service of the same protocol, address and port takes it out of the trash
// (ip_vs_ctl.c ip_vs_trash_get_dest, ip_vs_dest_trash_expire): its
// connections, counts and (for the same service) counters come back with
// it, and client packets of its connections flow again.

// destTrashPeriod is IP_VS_DEST_TRASH_PERIOD: how long an unused removed
// dest stays revivable. (The kernel checks every 60 s, so it frees one
// 120 to 180 s after it is first seen unused; tunvs at 120 s.)
const destTrashPeriod = int64(120 * time.Second)

// trashDest marks d removed (not AVAILABLE) and keeps it in the trash.
func (t *Table) trashDest(d *Dest) {
	d.removed.Store(true)
	t.trashMu.Lock()
	d.idleStart = 0
	t.trash = append(t.trash, d)
	t.trashMu.Unlock()
}

// reviveDest takes the dest a:port of service s out of the trash, if there.
func (t *Table) reviveDest(s *Service, a netip.Addr, port uint16) *Dest {
	k := makeSvcKey(s.Proto, s.Addr, s.Port)
	t.trashMu.Lock()
	defer t.trashMu.Unlock()
	for i, d := range t.trash {
		if d.Addr == a && d.Port == port && d.vkey == k {
			t.trash = append(t.trash[:i], t.trash[i+1:]...)
			return d
		}
	}
	return nil
}

// sweepTrash forgets removed dests unused for destTrashPeriod.
func (t *Table) sweepTrash(now int64) {
	t.trashMu.Lock()
	defer t.trashMu.Unlock()
	keep := t.trash[:0]
	for _, d := range t.trash {
		switch {
		case d.total.Load() > 0 || d.persist.Load() > 0:
		case d.idleStart == 0:
			d.idleStart = max(now, 1)
		case now < d.idleStart+destTrashPeriod:
		default:
			continue
		}
		keep = append(keep, d)
	}
	clear(t.trash[len(keep):])
	t.trash = keep
}
