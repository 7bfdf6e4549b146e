//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

// datasync falls back to a full fsync (F_FULLFSYNC on Darwin), which is a
// superset of the barrier Sync needs.
func datasync(f *os.File) error { return f.Sync() }

// startWriteback has no portable equivalent; writes reach the disk at Sync.
func startWriteback(*os.File, int64, int64) {}

// punchHole is unsupported off Linux; Trim then writes zeros.
func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }
