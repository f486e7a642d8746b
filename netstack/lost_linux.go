package netstack

import (
	"errors"
	"syscall"
)

func goneOS(err error) bool { return errors.Is(err, syscall.EBADFD) }
