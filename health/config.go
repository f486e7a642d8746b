package health

import (
	"fmt"
	"net/netip"

	"github.com/tunvs/tunvs/nat"
	"github.com/tunvs/tunvs/rules"
)

// The checks' configuration is part of the director's rules (package
// rules), validated with them; these are its names here.
type (
	Kind          = rules.Kind
	Check         = rules.Check
	StatusRange   = rules.StatusRange
	OnFail        = rules.OnFail
	ServiceConfig = rules.CheckService
	ServerConfig  = rules.CheckServer
	Config        = rules.Checks
)

// The check kinds, the failure actions and the defaults (see rules).
const (
	KindNone  = rules.KindNone
	KindTCP   = rules.KindTCP
	KindHTTP  = rules.KindHTTP
	KindHTTPS = rules.KindHTTPS
	KindUDP   = rules.KindUDP
	KindPing  = rules.KindPing
	KindMisc  = rules.KindMisc

	Remove  = rules.Remove
	Inhibit = rules.Inhibit

	DefaultInterval = rules.DefaultInterval
	DefaultTimeout  = rules.DefaultTimeout
	DefaultFall     = rules.DefaultFall
	DefaultRise     = rules.DefaultRise

	DigestMD5    = rules.DigestMD5
	DigestSHA256 = rules.DigestSHA256
)

// ErrConfig wraps every configuration error.
var ErrConfig = rules.ErrCheck

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, a...))
}

func svcName(proto uint8, vip netip.AddrPort) string {
	return nat.ProtoName(proto) + " " + vip.String()
}
