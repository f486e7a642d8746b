package admin

import (
	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/nat"
)

// Field names of tunvs's structured log lines.
const (
	FieldEvent      = "event"
	FieldService    = "service"
	FieldScheduler  = "scheduler"
	FieldServer     = "server"
	FieldWeight     = "weight"
	FieldPersistent = "persistent"
	FieldUThreshold = "u_threshold"
	FieldLThreshold = "l_threshold"
	FieldArgs       = "args"
	FieldUID        = "uid"
	FieldReason     = "reason"
	FieldCount      = "count"
	FieldFile       = "file"
	FieldLine       = "line"
	FieldChanges    = "changes"
)

// Event names (the FieldEvent value).
const (
	EventServiceAdded    = "service_added"
	EventServiceEdited   = "service_edited"
	EventServiceRemoved  = "service_removed"
	EventServicesCleared = "services_cleared"
	EventServerAdded     = "server_added"
	EventServerEdited    = "server_edited"
	EventServerQuiesced  = "server_quiesced"
	EventServerRemoved   = "server_removed"
	EventCountersZeroed  = "counters_zeroed"
	EventSysctlSet       = "sysctl_set"
	EventTimeoutsSet     = "timeouts_set"
)

// ServiceText is "TCP 10.0.0.1:80", as log lines name a service.
func ServiceText(proto uint8, a interface{ String() string }, port uint16) string {
	return nat.ProtoName(proto) + " " + addrPortFromStringer(a, port)
}

func addrPortFromStringer(a interface{ String() string }, port uint16) string {
	s := a.String()
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return "[" + s + "]:" + itoa(int(port))
		}
	}
	return s + ":" + itoa(int(port))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// LogEvent writes the structured event for an applied command c.
func LogEvent(log zerolog.Logger, c Command) {
	svc := ServiceText(c.Proto, c.Addr, c.Port)
	srv := addrPortString(c.DestAddr, c.DestPort)
	switch c.Op {
	case OpAddService, OpEditService:
		ev, msg := EventServiceAdded, "service added"
		if c.Op == OpEditService {
			ev, msg = EventServiceEdited, "service edited"
		}
		e := log.Info().Str(FieldEvent, ev).Str(FieldService, svc).Str(FieldScheduler, schedName(c.Scheduler))
		if c.Persistent {
			e = e.Int(FieldPersistent, c.PersistTimeout)
		}
		e.Msg(msg)
	case OpDelService:
		log.Info().Str(FieldEvent, EventServiceRemoved).Str(FieldService, svc).Msg("service removed")
	case OpClear:
		log.Info().Str(FieldEvent, EventServicesCleared).Msg("all services removed")
	case OpAddDest:
		log.Info().Str(FieldEvent, EventServerAdded).Str(FieldService, svc).Str(FieldServer, srv).
			Int(FieldWeight, c.Weight).Msg("server added")
	case OpEditDest:
		w := c.Weight
		if !c.HasWeight {
			w = 1
		}
		if w == 0 {
			log.Info().Str(FieldEvent, EventServerQuiesced).Str(FieldService, svc).Str(FieldServer, srv).
				Int(FieldWeight, 0).Msg("server quiesced")
			return
		}
		log.Info().Str(FieldEvent, EventServerEdited).Str(FieldService, svc).Str(FieldServer, srv).
			Int(FieldWeight, w).Int(FieldUThreshold, c.UThreshold).Int(FieldLThreshold, c.LThreshold).Msg("server edited")
	case OpDelDest:
		log.Info().Str(FieldEvent, EventServerRemoved).Str(FieldService, svc).Str(FieldServer, srv).Msg("server removed")
	case OpZero:
		log.Info().Str(FieldEvent, EventCountersZeroed).Msg("counters zeroed")
	case OpSetTimeout:
		log.Info().Str(FieldEvent, EventTimeoutsSet).Ints("timeouts", c.Timeouts[:]).Msg("timeouts set")
	case OpSetSysctl:
		log.Info().Str(FieldEvent, EventSysctlSet).Str("sysctl", c.Sysctl).Int("value", c.SysctlValue).Msg("sysctl set")
	}
}
