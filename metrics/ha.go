package metrics

import (
	"fmt"

	"github.com/tunvs/tunvs/ipvssync"
	"github.com/tunvs/tunvs/vrrp"
)

// The HA pair's metrics: the VRRP routers and the connection sync
// daemons.

// VRRPSource is what the VRRP metrics read.
type VRRPSource struct {
	Routers []*vrrp.Router
	// Drops is the receiver's count of adverts discarded for a reason.
	Drops func(vrrp.Reason) uint64
}

func writeVRRP(m *writer, src *VRRPSource) {
	label := func(r *vrrp.Router) string {
		c := r.Config()
		return fmt.Sprintf(`vrrp="%s",link="%s",vrid="%d"`, escape(c.Name), escape(c.Link), c.VRID)
	}
	m.head("tunvs_vrrp_state", "gauge", "a VRRP router's state: 0 INIT, 1 BACKUP, 2 MASTER")
	for _, r := range src.Routers {
		m.val("tunvs_vrrp_state", label(r), uint64(r.State()))
	}
	m.head("tunvs_vrrp_priority", "gauge", "a VRRP router's priority")
	for _, r := range src.Routers {
		m.val("tunvs_vrrp_priority", label(r), uint64(r.Priority()))
	}
	for _, c := range []struct {
		name, help string
		get        func(*vrrp.Stats) uint64
	}{
		{"adverts_sent", "adverts sent", func(s *vrrp.Stats) uint64 { return s.AdvertsSent.Load() }},
		{"adverts_received", "adverts received and handled", func(s *vrrp.Stats) uint64 { return s.AdvertsReceived.Load() }},
		{"became_master", "transitions to MASTER", func(s *vrrp.Stats) uint64 { return s.BecameMaster.Load() }},
		{"became_backup", "transitions to BACKUP", func(s *vrrp.Stats) uint64 { return s.BecameBackup.Load() }},
		{"priority_zero_sent", "resignations sent (priority 0)", func(s *vrrp.Stats) uint64 { return s.PriorityZeroSent.Load() }},
		{"priority_zero_received", "resignations received", func(s *vrrp.Stats) uint64 { return s.PriorityZeroReceived.Load() }},
		{"send_errors", "frames that could not be sent", func(s *vrrp.Stats) uint64 { return s.SendErrors.Load() }},
	} {
		name := "tunvs_vrrp_" + c.name + "_total"
		m.head(name, "counter", "VRRP: "+c.help)
		for _, r := range src.Routers {
			m.val(name, label(r), c.get(&r.Stats))
		}
	}
	if src.Drops != nil {
		m.head("tunvs_vrrp_drops_total", "counter", "VRRP packets discarded (RFC 5798 7.1), by reason; addrs: counted, not discarded")
		for _, r := range vrrp.Reasons() {
			m.val("tunvs_vrrp_drops_total", `reason="`+escape(r.String())+`"`, src.Drops(r))
		}
	}
}

// writeSync exports the running sync daemons' counters (a daemon
// started again counts from zero: a counter reset).
func writeSync(m *writer, d *ipvssync.Daemons) {
	m.head("tunvs_sync_daemon_running", "gauge", "a connection sync daemon runs (1) or not (0), by role")
	ms, bs := d.Master(), d.Backup()
	b01 := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}
	m.val("tunvs_sync_daemon_running", `role="master"`, b01(ms != nil))
	m.val("tunvs_sync_daemon_running", `role="backup"`, b01(bs != nil))
	if ms != nil {
		for _, c := range []struct {
			name, help string
			v          uint64
		}{
			{"records", "connection records packed", ms.Stats.Records.Load()},
			{"messages", "datagrams sent", ms.Stats.Messages.Load()},
			{"queue_drops", "full buffers dropped: more than sync_qlen_max waiting", ms.Stats.QueueDrops.Load()},
			{"send_errors", "datagrams that could not be sent", ms.Stats.SendErrors.Load()},
		} {
			name := "tunvs_sync_master_" + c.name + "_total"
			m.head(name, "counter", "sync master: "+c.help)
			m.val(name, "", c.v)
		}
	}
	if bs != nil {
		for _, c := range []struct {
			name, help string
			v          uint64
		}{
			{"messages", "datagrams applied", bs.Stats.Messages.Load()},
			{"conns", "connection records applied", bs.Stats.Conns.Load()},
			{"refused", "records the table refused", bs.Stats.Refused.Load()},
		} {
			name := "tunvs_sync_backup_" + c.name + "_total"
			m.head(name, "counter", "sync backup: "+c.help)
			m.val(name, "", c.v)
		}
		m.head("tunvs_sync_backup_drops_total", "counter", "sync backup: messages or records dropped, by reason")
		for _, r := range ipvssync.Reasons() {
			m.val("tunvs_sync_backup_drops_total", `reason="`+escape(r.String())+`"`, bs.Stats.Dropped(r))
		}
	}
}
