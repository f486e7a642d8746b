package sched

import (
	"math/rand/v2"
	"testing"
)

// The models below keep the service's servers the way the kernel does: a
// circular doubly linked list with a head sentinel, new servers linked in
// after the head, deleted ones unlinked with their next pointer left
// intact. They follow the kernel's pointer handling step by step, so a
// difference from the slice-based schedulers shows where the index
// arithmetic (or the Update diffing) departs from the list semantics.

type mnode struct {
	prev, next *mnode
	d          *fakeDest
}

type mlist struct{ head mnode }

func newMList() *mlist {
	l := &mlist{}
	l.head.prev, l.head.next = &l.head, &l.head
	return l
}

// add links n first, as list_add(n, head).
func (l *mlist) add(n *mnode) {
	n.prev, n.next = &l.head, l.head.next
	l.head.next.prev = n
	l.head.next = n
}

// del unlinks n but keeps n.next, as list_del_rcu: a pointer still on n
// can reach the rest of the list through it.
func (l *mlist) del(n *mnode) {
	n.prev.next = n.next
	n.next.prev = n.prev
	n.prev = nil
}

func (l *mlist) slice() []Dest {
	var s []Dest
	for n := l.head.next; n != &l.head; n = n.next {
		s = append(s, n.d)
	}
	return s
}

// rrModel is rr on the list: p is the sched_data pointer.
type rrModel struct {
	l *mlist
	p *mnode
}

func (m *rrModel) delDest(n *mnode) {
	if m.p == n {
		m.p = n.next.prev
	}
}

func (m *rrModel) schedule() *fakeDest {
	last := m.p
	cur := m.p
	for pass := 0; pass < 2 && (pass == 0 || m.p != &m.l.head); pass++ {
		for cur = cur.next; cur != &m.l.head; cur = cur.next {
			if !cur.d.Overloaded() && cur.d.Weight() > 0 {
				m.p = cur
				return cur.d
			}
			if cur == last {
				return nil
			}
		}
	}
	return nil
}

// wrrModel is wrr on the list.
type wrrModel struct {
	l          *mlist
	cl         *mnode
	cw, mw, di int
}

func (m *wrrModel) changed() {
	m.cl = &m.l.head
	ds := m.l.slice()
	m.di = gcdWeight(ds)
	m.mw = maxWeight(ds) - (m.di - 1)
	if m.cw > m.mw || m.cw == 0 {
		m.cw = m.mw
	} else if m.di > 1 {
		m.cw = (m.cw/m.di)*m.di + 1
	}
}

func (m *wrrModel) schedule() *fakeDest {
	head := &m.l.head
	cur := m.cl
	if m.mw == 0 {
		return nil
	}
	last := cur
	var stop *mnode
	lastPass, restarted := false, false
	for {
		for cur = cur.next; cur != head; cur = cur.next {
			if !cur.d.Overloaded() && cur.d.Weight() >= m.cw {
				m.cl = cur
				return cur.d
			}
			if cur == stop {
				m.cl = cur
				return nil
			}
		}
		m.cw -= m.di
		if m.cw <= 0 {
			m.cw = m.mw
			if lastPass || last == head {
				m.cl = cur
				return nil
			}
			restarted = true
		}
		lastPass = m.cw <= m.di
		if lastPass && restarted && last != head {
			stop = last
		}
	}
}

// TestAgainstListModel drives each scheduler and its list model with the
// same random add, delete, edit, overload and pick operations, one kernel
// operation per Update, and requires the same server for every pick.
func TestAgainstListModel(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		l := newMList()
		rrm := &rrModel{l: l, p: &l.head}
		wrrm := &wrrModel{l: l}
		wrrm.cl = &l.head
		rrs, _ := New("rr")
		wrrs, _ := New("wrr")
		var nodes []*mnode // linked nodes
		serial := 0
		update := func() {
			rrs.Update(l.slice())
			wrrs.Update(l.slice())
		}
		for op := range 400 {
			switch r := rng.IntN(20); {
			case r < 3 && len(nodes) < 12: // add
				serial++
				n := &mnode{d: newDest("s", serial, rng.IntN(7))}
				l.add(n)
				nodes = append(nodes, n)
				wrrm.changed()
				update()
			case r < 5 && len(nodes) > 0: // delete
				i := rng.IntN(len(nodes))
				n := nodes[i]
				nodes = append(nodes[:i], nodes[i+1:]...)
				l.del(n)
				rrm.delDest(n)
				wrrm.changed()
				update()
			case r < 7 && len(nodes) > 0: // edit weight
				nodes[rng.IntN(len(nodes))].d.weight.Store(int64(rng.IntN(7)))
				wrrm.changed()
				update()
			case r < 9 && len(nodes) > 0: // overload flip, no Update
				d := nodes[rng.IntN(len(nodes))].d
				d.over.Store(!d.over.Load())
			default: // pick
				list := l.slice()
				check := func(name string, s Scheduler, want *fakeDest) {
					t.Helper()
					i := s.Pick(nil)
					var got *fakeDest
					if i >= 0 {
						got = list[i].(*fakeDest)
					}
					if got != want {
						t.Fatalf("seed %d op %d %s: got %s, model %s", seed, op, name, got.String(), want.String())
					}
				}
				check("rr", rrs, rrm.schedule())
				check("wrr", wrrs, wrrm.schedule())
			}
		}
	}
}
