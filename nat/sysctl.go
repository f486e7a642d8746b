package nat

import (
	"time"

	"github.com/tunvs/tunvs/rules"
)

// The IPVS sysctls the table has: rules.SysctlTable names them, with their
// defaults and ranges; here is how each is read and set. A new knob is a
// row in both (TestSysctlTable checks they match).

type sysctl struct {
	get func(t *Table) int
	set func(t *Table, v int)
}

var sysctls = map[string]sysctl{
	"expire_nodest_conn": {
		get: func(t *Table) int { return b2i(t.expireNodest.Load()) },
		set: func(t *Table, v int) { t.expireNodest.Store(v != 0) },
	},
	"expire_quiescent_template": {
		get: func(t *Table) int { return b2i(t.expireQuiesTpl.Load()) },
		set: func(t *Table, v int) { t.expireQuiesTpl.Store(v != 0) },
	},
	"conn_reuse_mode": {
		get: func(t *Table) int { return int(t.connReuseMode.Load()) },
		set: func(t *Table, v int) { t.connReuseMode.Store(int32(max(v, 0))) },
	},
	"sloppy_tcp": {
		get: func(t *Table) int { return b2i(t.sloppyTCP.Load()) },
		set: func(t *Table, v int) { t.sloppyTCP.Store(v != 0) },
	},
	// The sync daemon's (sync.go).
	"sync_threshold": {
		get: func(t *Table) int { return int(t.sync.threshold.Load()) },
		set: func(t *Table, v int) { t.sync.threshold.Store(int32(v)) },
	},
	"sync_period": {
		get: func(t *Table) int { return int(t.sync.period.Load()) },
		set: func(t *Table, v int) { t.sync.period.Store(int32(v)) },
	},
	"sync_refresh_period": {
		get: func(t *Table) int { return int(time.Duration(t.sync.refresh.Load()) / time.Second) },
		set: func(t *Table, v int) { t.sync.refresh.Store(int64(time.Duration(v) * time.Second)) },
	},
	"sync_retries": {
		get: func(t *Table) int { return int(t.sync.retries.Load()) },
		set: func(t *Table, v int) { t.sync.retries.Store(int32(v)) },
	},
	"sync_persist_mode": {
		get: func(t *Table) int { return b2i(t.sync.persistMode.Load()) },
		set: func(t *Table, v int) { t.sync.persistMode.Store(v != 0) },
	},
	"sync_version": {
		get: func(t *Table) int { return int(t.sync.version.Load()) },
		set: func(t *Table, v int) { t.sync.version.Store(int32(v)) },
	},
	"amemthresh": {
		get: func(t *Table) int { return int(t.defense.amemthresh.Load()) },
		set: func(t *Table, v int) { t.defense.amemthresh.Store(int32(v)) },
	},
	"drop_entry": {
		get: func(t *Table) int { return int(t.defense.dropEntry.Load()) },
		set: func(t *Table, v int) { t.defense.dropEntry.Store(int32(v)) },
	},
	"secure_tcp": {
		get: func(t *Table) int { return int(t.defense.secureTCP.Load()) },
		set: func(t *Table, v int) { t.defense.secureTCP.Store(int32(v)) },
	},
	"synproxy": {
		get: func(t *Table) int { return int(t.spMode.Load()) },
		set: func(t *Table, v int) { t.spMode.Store(int32(v)) },
	},
	"synproxy_backlog": {
		get: func(t *Table) int { return int(t.spBacklog.Load()) },
		set: func(t *Table, v int) { t.spBacklog.Store(int32(v)) },
	},
	"sync_ports": {
		get: func(t *Table) int { return int(t.sync.ports.Load()) },
		set: func(t *Table, v int) { t.sync.ports.Store(int32(v)) },
	},
}

// sysctlOf is the accessor of a knob rules.SysctlTable has; the diff was
// checked, so the name is known.
func sysctlOf(name string) sysctl { return sysctls[name] }

// Sysctl is the value of a knob of rules.SysctlTable, and whether the
// table has it.
func (t *Table) Sysctl(name string) (int, bool) {
	s, ok := sysctls[name]
	if !ok {
		return 0, false
	}
	return s.get(t), true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// setSysctl sets a knob through Apply, as every change goes.
func (t *Table) setSysctl(name string, v int) {
	_ = t.apply1(rules.Change{Kind: rules.SetSysctl, Sysctl: name, Value: v})
}
