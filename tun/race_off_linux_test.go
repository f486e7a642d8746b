//go:build linux && !race

package tun_test

const raceEnabled = false
