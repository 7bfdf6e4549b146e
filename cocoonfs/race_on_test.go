//go:build race

package cocoonfs

// raceDetector: the race detector slows single-threaded exhaustive tests
// about tenfold for no benefit; make test runs those without it.
const raceDetector = true
