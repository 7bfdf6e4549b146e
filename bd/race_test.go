//go:build race

package bd

// raceEnabled: the race detector slows hashing tenfold, so the large
// tests shrink.
const raceEnabled = true
