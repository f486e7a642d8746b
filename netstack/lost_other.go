//go:build !linux

package netstack

func goneOS(error) bool { return false }
