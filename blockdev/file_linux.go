package blockdev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Linux fallocate(2) mode bits; package syscall does not export them.
const (
	fallocKeepSize  = 0x1
	fallocPunchHole = 0x2
)

// datasync is fdatasync(2): it flushes data and the metadata needed to read
// it back, which is all a write barrier needs, without forcing timestamps.
func datasync(f *os.File) error {
	return control(f, func(fd int) error {
		return ignoringEINTR(func() error { return syscall.Fdatasync(fd) })
	})
}

// startWriteback asks the kernel to start writing [off, off+length) back
// (sync_file_range with SYNC_FILE_RANGE_WRITE), without waiting.
func startWriteback(f *os.File, off, length int64) {
	const syncFileRangeWrite = 0x2
	_ = control(f, func(fd int) error {
		return syscall.SyncFileRange(fd, off, length, syncFileRangeWrite)
	})
}

// punchHole deallocates [off, off+length) while keeping the file size. It
// returns an error wrapping errors.ErrUnsupported when the file system
// cannot punch holes, so Trim can fall back to writing zeros.
func punchHole(f *os.File, off, length int64) error {
	err := control(f, func(fd int) error {
		return ignoringEINTR(func() error {
			return syscall.Fallocate(fd, fallocKeepSize|fallocPunchHole, off, length)
		})
	})
	// EOPNOTSUPP and ENOSYS already match errors.ErrUnsupported; some
	// file systems report an unsupported mode as EINVAL instead, and our
	// arguments were validated, so EINVAL means the same here.
	if err != nil && !errors.Is(err, errors.ErrUnsupported) && errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("punch hole: %w: %w", errors.ErrUnsupported, err)
	}
	return err
}
