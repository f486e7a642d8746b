//go:build race

package lab

// raceEnabled: see skipUnderRace.
const raceEnabled = true
