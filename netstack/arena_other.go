//go:build !linux

package netstack

// Devices hand up super-packets only on Linux; elsewhere an arena is from
// the Go heap and is not released.
func allocArena(n int) ([]byte, bool) { return make([]byte, n), false }

func releaseArena([]byte) error { return nil }

func freeArena([]byte) error { return nil }
