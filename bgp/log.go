package bgp

import (
	"fmt"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/rs/zerolog"
)

// logAdapter gives GoBGP the director's logger. GoBGP's Info lines (every
// FSM transition, per peer) go to Debug: the speaker logs the events that
// matter (bgp_established, bgp_down, bgp_announce, bgp_withdraw) itself.
type logAdapter struct{ l zerolog.Logger }

func (a logAdapter) emit(e *zerolog.Event, msg string, f gobgplog.Fields) {
	e = e.Str("component", "gobgp")
	for k, v := range f {
		e = e.Str(k, fmt.Sprint(v))
	}
	e.Msg(msg)
}

func (a logAdapter) Panic(msg string, f gobgplog.Fields) {
	a.emit(a.l.Error(), msg, f)
	panic(msg)
}
func (a logAdapter) Fatal(msg string, f gobgplog.Fields) { a.emit(a.l.Error(), msg, f) }
func (a logAdapter) Error(msg string, f gobgplog.Fields) { a.emit(a.l.Error(), msg, f) }
func (a logAdapter) Warn(msg string, f gobgplog.Fields)  { a.emit(a.l.Warn(), msg, f) }
func (a logAdapter) Info(msg string, f gobgplog.Fields)  { a.emit(a.l.Debug(), msg, f) }
func (a logAdapter) Debug(msg string, f gobgplog.Fields) { a.emit(a.l.Trace(), msg, f) }
func (a logAdapter) SetLevel(gobgplog.LogLevel)          {}
func (a logAdapter) GetLevel() gobgplog.LogLevel {
	// GoBGP formats its debug fields only when asked for them.
	if a.l.GetLevel() <= zerolog.TraceLevel {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
