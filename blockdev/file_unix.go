//go:build unix

package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// control runs fn on f's descriptor without os.File.Fd, which would switch
// the file to blocking mode and let it be garbage collected mid-call.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// ignoringEINTR retries fn while a signal interrupts it; the os package
// does this for its own calls but not for raw syscalls.
func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func detectBlockSize(f *os.File) (int64, error) {
	var st syscall.Stat_t
	if err := control(f, func(fd int) error {
		return ignoringEINTR(func() error { return syscall.Fstat(fd, &st) })
	}); err != nil {
		return 0, err
	}
	return int64(st.Blksize), nil
}

// syncDir makes a new directory entry durable; without it a crash can lose
// a freshly created image even though its contents were synced.
func syncDir(path string) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = dir.Sync()
	if cerr := dir.Close(); err == nil {
		err = cerr
	}
	return err
}
