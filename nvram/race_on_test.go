//go:build race

package nvram

// raceDetector: the race detector slows the single-threaded crash harness
// about tenfold for no benefit, so it runs a shorter workload under -race.
const raceDetector = true
