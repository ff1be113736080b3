//go:build race

package static_test

// raceEnabled: the race detector slows everything several times over, so
// figures measured against a pace (the tab's CPU) are not taken under it.
const raceEnabled = true
