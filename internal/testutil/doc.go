// Package testutil holds helpers shared by sealfs tests: the external tools
// and the reference material (../shared beside the repository, and the
// subset of its vectors the repository carries in testdata/vectors) that
// tests compare against.
//
// A clone of the repository alone must pass its tests, so everything here
// skips a test whose material is missing, with a message naming what and
// where, except under CI=true: CI sets up every tool and ../shared, and
// there a missing piece means the run is not testing what it should, so the
// test fails.
package testutil
