//go:build race

package fusefs

// raceEnabled: the race detector slows the tests several times; the long
// randomized ones do less.
const raceEnabled = true
