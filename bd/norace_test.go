//go:build !race

package bd

const raceEnabled = false
