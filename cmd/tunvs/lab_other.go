//go:build !linux

package main

import (
	"context"
	"errors"
	"time"

	"github.com/tunvs/tunvs/lab"
)

// errNeedsLinux refuses the namespace lab elsewhere: it is made of Linux
// network namespaces, veth pairs and a bridge.
var errNeedsLinux = errors.New("network namespaces need Linux; `tunvs lab` without --netns runs the same lab in one process on any system")

func labInner(context.Context, lab.NetnsConfig, bool) error { return errNeedsLinux }

func labNetns(context.Context, lab.NetnsConfig, bool, bool, bool, logFlags) error {
	return errNeedsLinux
}

func labExec(string, string, []string) error { return errNeedsLinux }

func labDown(string) error { return errNeedsLinux }

func labWalk(context.Context, string, bool) error { return errNeedsLinux }

func labCapture(context.Context, string, string, string, uint16, bool, int, time.Duration) error {
	return errNeedsLinux
}
