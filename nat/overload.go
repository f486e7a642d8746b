package nat

// Connection thresholds (ipvsadm -x/-y), as ip_vs_ctl.c and ip_vs_conn.c
// of Linux 6.1 keep them.

// updateOverloadLocked is __ip_vs_dest_update_overload; d.dstMu must be
// held. mode is +1 when the connections just reached the upper threshold,
// -1 when they just dropped below l_threshold_val, 0 when the thresholds
// changed:
//
//	conns >= (mode > 0 ? l : u)  -> set
//	conns >= (mode < 0 ? u : l)  -> leave as it is
//	otherwise (or no upper threshold) -> clear
func (d *Dest) updateOverloadLocked(mode int) {
	u := d.uthresh.Load()
	if u == 0 {
		d.overload.Store(false)
		return
	}
	l := d.lthreshVal.Load()
	conns := d.total.Load()
	set, keep := u, l
	if mode > 0 {
		set = l
	}
	if mode < 0 {
		keep = u
	}
	if conns >= set {
		d.overload.Store(true)
		return
	}
	if conns >= keep {
		return
	}
	d.overload.Store(false)
}

func (d *Dest) updateOverload(mode int) {
	d.dstMu.Lock()
	d.updateOverloadLocked(mode)
	d.dstMu.Unlock()
}

// bindConn counts a new (non-template) connection, as ip_vs_bind_dest:
// reaching the upper threshold sets the overload flag. Connections start
// inactive, so the active count is not touched.
func (d *Dest) bindConn() {
	if tc := d.total.Add(1); tc == d.uthresh.Load() {
		d.updateOverload(1)
	}
}

// unbindConn is ip_vs_unbind_dest for a non-template connection (the caller
// has already taken it out of the active count): dropping from
// l_threshold_val clears the overload flag.
func (d *Dest) unbindConn() {
	if tc := d.total.Add(-1) + 1; tc == d.lthreshVal.Load() {
		d.updateOverload(-1)
	}
}

// setThresholds is the thresholds part of __ip_vs_update_dest: only a
// change re-evaluates the flag.
func (d *Dest) setThresholds(u, l int) {
	d.dstMu.Lock()
	defer d.dstMu.Unlock()
	if int(d.uthresh.Load()) == u && int(d.lthresh.Load()) == l {
		return
	}
	d.uthresh.Store(int32(u))
	d.lthresh.Store(int32(l))
	lv := l
	if lv == 0 {
		// The lower threshold defaults to 75% of the upper one.
		lv = u - u>>2
	}
	d.lthreshVal.Store(int32(lv))
	d.updateOverloadLocked(0)
}
