//go:build !race

package nvram

const raceDetector = false
