package nat

import "github.com/tunvs/tunvs/rules"

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
