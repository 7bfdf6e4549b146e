//go:build unix

package blockdev

import (
	"path/filepath"
	"syscall"
	"testing"
)

// TestFileDetectsBlockSize pins detection to st_blksize, the value the
// reference CocoonFS tool compares an image's IO block against.
func TestFileDetectsBlockSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	d, err := CreateFile(path, 4096, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if want := normalizeBlockSize(int64(st.Blksize)); d.BlockSize() != want {
		t.Errorf("BlockSize = %d; want %d from st_blksize %d", d.BlockSize(), want, st.Blksize)
	}
	ro, err := OpenFile(path, &FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if ro.BlockSize() != d.BlockSize() {
		t.Errorf("read-only open detects %d, read-write %d", ro.BlockSize(), d.BlockSize())
	}
	if !validBlockSize(d.BlockSize()) {
		t.Errorf("detected block size %d is invalid", d.BlockSize())
	}
}
