package netstack

import (
	"errors"
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// ErrUnknownNIC is returned for a NIC name the host does not have.
var ErrUnknownNIC = errors.New("unknown nic")

// tcpipErr turns a gVisor tcpip.Error (not a Go error) into one.
type tcpipErr struct{ e tcpip.Error }

func (e tcpipErr) Error() string { return e.e.String() }

func convErr(op string, e tcpip.Error) error {
	if e == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, tcpipErr{e})
}
