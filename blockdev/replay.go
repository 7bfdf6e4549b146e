package blockdev

import (
	"errors"
	"fmt"
)

// Replay applies ops to dst in order: writes, syncs, trims (natively or by
// zero-filling) and resizes. Applied to a copy of the image a Faulty run
// started from, a prefix of that run's Log yields the image after that
// prefix, byte for byte, as long as the trimmed ranges of both devices
// read the same (they do for Memory and File, which both read zeros).
func Replay(dst Device, ops []LoggedOp) error {
	for i, op := range ops {
		if err := apply(dst, op); err != nil {
			return fmt.Errorf("blockdev: replay of op %d (%s): %w", i, op.Kind, err)
		}
	}
	return nil
}

// ReplayTorn rebuilds the image a live TearWrite(k, pivot, newFirst) run
// leaves: it applies every op before the k-th OpWrite of ops (1-based,
// counting only OpWrite entries) in full, including the syncs and trims
// between writes, then applies the k-th write torn at pivot exactly as
// TearWrite describes, and ignores everything after it.
//
// k equals the live run's write number when every WriteAt of the logged run
// succeeded, since Faulty counts failed writes but does not log them; Seq
// gives the live number of each logged write.
func ReplayTorn(dst Device, ops []LoggedOp, k int, pivot int, newFirst bool) error {
	if k < 1 {
		return fmt.Errorf("blockdev: replay torn write %d: write numbers start at 1: %w", k, ErrOutOfRange)
	}
	seen := 0
	for i, op := range ops {
		if op.Kind == OpWrite {
			seen++
			if seen == k {
				mixed, err := tornData(dst, op.Data, op.Off, pivot, newFirst)
				if err == nil {
					_, err = dst.WriteAt(mixed, op.Off)
				}
				if err != nil {
					return fmt.Errorf("blockdev: replay of torn write %d (op %d): %w", k, i, err)
				}
				return nil
			}
		}
		if err := apply(dst, op); err != nil {
			return fmt.Errorf("blockdev: replay of op %d (%s): %w", i, op.Kind, err)
		}
	}
	return fmt.Errorf("blockdev: replay torn write %d: log holds only %d writes: %w", k, seen, ErrOutOfRange)
}

func apply(dst Device, op LoggedOp) error {
	switch op.Kind {
	case OpWrite:
		_, err := dst.WriteAt(op.Data, op.Off)
		return err
	case OpSync:
		return dst.Sync()
	case OpTrim:
		return trim(dst, op.Off, op.Len)
	case OpResize:
		r, ok := dst.(Resizer)
		if !ok {
			return fmt.Errorf("resize to %d bytes: %T cannot resize: %w", op.Len, dst, errors.ErrUnsupported)
		}
		return r.Resize(op.Len)
	}
	return fmt.Errorf("unknown op kind %d", int(op.Kind))
}

// TearPivots lists every pivot TearWrite accepts for a write of writeLen
// bytes at writeOff on a device with the given block size, ascending and
// relative to the write's start: each multiple of TearGranularity inside
// each IO block the write covers.
//
// Because a tear is sequential (everything before the pivot on one side,
// everything after on the other), a pivot on a boundary between two
// blocks models a multi-block write interrupted cleanly between them, and
// the list includes those. It also includes 0 and, when it is a multiple
// of TearGranularity, writeLen: they reproduce the untorn before and after
// states, so one loop over the list covers every outcome of the write.
// It returns nil for a negative writeOff or writeLen or an invalid block
// size.
func TearPivots(writeOff int64, writeLen int, blockSize int) []int {
	if writeLen < 0 || writeOff < 0 || !validBlockSize(blockSize) {
		return nil
	}
	// Every offset in [0, writeLen] lies inside, or on the edge of, a block
	// the write covers, so the union over its blocks is simply every
	// granularity step; blockSize is validated so that callers passing a
	// device's BlockSize catch a bogus one here.
	pivots := make([]int, 0, writeLen/TearGranularity+1)
	for p := 0; p <= writeLen; p += TearGranularity {
		pivots = append(pivots, p)
	}
	return pivots
}
