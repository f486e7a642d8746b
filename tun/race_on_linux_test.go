//go:build linux && race

package tun_test

const raceEnabled = true
