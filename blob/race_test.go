//go:build race

package blob

// raceEnabled: the race detector slows hashing and zstd tenfold, so the
// large tests shrink.
const raceEnabled = true
