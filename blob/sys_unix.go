//go:build unix

package blob

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive flock(2) on f; without wait it fails at once
// if another open file holds one.
func lockFile(f *os.File, wait bool) error {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	return syscall.Flock(int(f.Fd()), how)
}

// fileID identifies an inode, so hard links are counted once.
type fileID struct{ dev, ino uint64 }

// allocated returns the bytes a path occupies (st_blocks × 512) and its
// inode, without following symbolic links.
func allocated(path string) (int64, fileID, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return 0, fileID{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return int64(st.Blocks) * 512, fileID{uint64(st.Dev), uint64(st.Ino)}, nil
}

// allocatedFile is allocated for an open file.
func allocatedFile(f *os.File) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return 0, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return int64(st.Blocks) * 512, nil
}

// checkPlatform reports whether the store can run here.
func checkPlatform() error { return nil }
