package director

import (
	"math"
	"time"
)

// defend runs IPVS's flood defences (nat.Table.Defend) every second, as
// the kernel's defense_work_handler does (DEFENSE_TIMER_PERIOD), with the
// host's free memory, and logs when a defence turns on or off.
func (d *Director) defend(now func() int64) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	last := [2]int{}
	for {
		select {
		case <-d.done:
			return
		case <-tk.C:
		}
		avail := availPages()
		d.NAT.Defend(now(), avail)
		for i, name := range []string{"drop_entry", "secure_tcp"} {
			v, _ := d.NAT.Sysctl(name)
			if v != last[i] && (v == 2 || last[i] == 2) {
				e := d.log.Warn()
				if v != 2 {
					e = d.log.Info()
				}
				e.Str("sysctl", name).Int("from", last[i]).Int("to", v).Int("free_pages", avail).
					Msg("flood defence: memory short (2) or no longer (1)")
			}
			last[i] = v
		}
	}
}

// noMemInfo is availPages where the host's free memory is not known:
// memory is never short.
const noMemInfo = math.MaxInt32
