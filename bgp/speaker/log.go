package speaker

import (
	"fmt"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/rs/zerolog"

	"github.com/tunvs/tunvs/bgp"
)

// logAdapter sends GoBGP's log lines to the director, which writes them
// to its log (component=gobgp). GoBGP's Info lines (every FSM
// transition, per peer) go as Debug: the director logs the events that
// matter (bgp_established, bgp_down, bgp_announce, bgp_withdraw) from
// the speaker's reports. Lines below the director's level are not sent.
type logAdapter struct {
	out   *reporter
	level zerolog.Level
}

func (a logAdapter) emit(l zerolog.Level, msg string, f gobgplog.Fields) {
	if l < a.level {
		return
	}
	fs := make(map[string]string, len(f))
	for k, v := range f {
		fs[k] = fmt.Sprint(v)
	}
	a.out.send(bgp.Report{Event: "log", Level: int8(l), Msg: msg, Fields: fs})
}

func (a logAdapter) Panic(msg string, f gobgplog.Fields) {
	a.emit(zerolog.ErrorLevel, msg, f)
	panic(msg)
}
func (a logAdapter) Fatal(msg string, f gobgplog.Fields) { a.emit(zerolog.ErrorLevel, msg, f) }
func (a logAdapter) Error(msg string, f gobgplog.Fields) { a.emit(zerolog.ErrorLevel, msg, f) }
func (a logAdapter) Warn(msg string, f gobgplog.Fields)  { a.emit(zerolog.WarnLevel, msg, f) }
func (a logAdapter) Info(msg string, f gobgplog.Fields)  { a.emit(zerolog.DebugLevel, msg, f) }
func (a logAdapter) Debug(msg string, f gobgplog.Fields) { a.emit(zerolog.TraceLevel, msg, f) }
func (a logAdapter) SetLevel(gobgplog.LogLevel)          {}
func (a logAdapter) GetLevel() gobgplog.LogLevel {
	// GoBGP formats its debug fields only when asked for them.
	if a.level <= zerolog.TraceLevel {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
