//go:build !race

package cocoonfs

const raceDetector = false
