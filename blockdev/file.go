package blockdev

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"sync"
)

// FileOptions configures OpenFile and CreateFile. A nil *FileOptions means
// the zero value: writable, block size detected.
type FileOptions struct {
	// ReadOnly opens the file read-only; writes, resizes and trims then
	// fail with ErrReadOnly.
	ReadOnly bool

	// BlockSize overrides the detected IO block size. It must be a power of
	// two >= 512; 0 means detect (see OpenFile).
	BlockSize int
}

// File is a Device backed by an image file or a block device node.
//
// All methods are safe for concurrent use. ReadAt, WriteAt, Sync and Trim
// run in parallel (they use positioned IO); Resize and Close wait for them
// and exclude them, so each operation sees one consistent size. Concurrent
// writes to overlapping ranges leave the overlap with unspecified bytes
// from either write.
//
// The size is captured at open and changed only by Resize: a file grown or
// shrunk by another process is not noticed, because a format must not see
// its medium change size under it.
type File struct {
	mu        sync.RWMutex
	f         *os.File
	size      int64
	blockSize int
	readOnly  bool
	closed    bool
}

var (
	_ Device           = (*File)(nil)
	_ ReadOnlyDevice   = (*File)(nil)
	_ Resizer          = (*File)(nil)
	_ Trimmer          = (*File)(nil)
	_ WritebackStarter = (*File)(nil)
	_ io.Closer        = (*File)(nil)
)

// OpenFile opens an existing image file or block device.
//
// Unless opts.BlockSize is set, the block size is the file system's
// preferred IO size for the file (st_blksize), rounded up to a power of two
// and to at least 512; DefaultBlockSize where the platform has no
// st_blksize. That mirrors the reference CocoonFS tool, which refuses images
// whose IO block is smaller than the file system's: writing in smaller
// units would make the file system read-modify-write, widening what a
// power cut can tear.
func OpenFile(path string, opts *FileOptions) (*File, error) {
	var o FileOptions
	if opts != nil {
		o = *opts
	}
	if o.BlockSize != 0 {
		if err := checkBlockSize(o.BlockSize); err != nil {
			return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
		}
	}
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	d, err := newFile(f, o)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	return d, nil
}

// CreateFile creates a zero-filled image file of size bytes and opens it as
// by OpenFile. It fails with an error wrapping fs.ErrExist if path exists,
// so an existing image is never clobbered. The file is created with mode
// 0600 and, together with its directory entry, made durable before
// CreateFile returns, so a format's first Sync cannot outlive the file.
// opts.ReadOnly is rejected: a fresh zero image cannot be mounted.
func CreateFile(path string, size int64, opts *FileOptions) (*File, error) {
	var o FileOptions
	if opts != nil {
		o = *opts
	}
	if o.ReadOnly {
		return nil, fmt.Errorf("blockdev: create %s read-only: %w", path, fs.ErrInvalid)
	}
	if size < 0 {
		return nil, fmt.Errorf("blockdev: create %s with %d bytes: %w", path, size, ErrOutOfRange)
	}
	if o.BlockSize != 0 {
		if err := checkBlockSize(o.BlockSize); err != nil {
			return nil, fmt.Errorf("blockdev: create %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*File, error) {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("blockdev: create %s: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := syncDir(path); err != nil {
		return fail(err)
	}
	d, err := newFile(f, o)
	if err != nil {
		return fail(err)
	}
	return d, nil
}

func newFile(f *os.File, o FileOptions) (*File, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("is a directory: %w", fs.ErrInvalid)
	}
	// Seek rather than fi.Size: block device nodes report size 0 in stat.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	bs := o.BlockSize
	if bs == 0 {
		detected, err := detectBlockSize(f)
		if err != nil {
			return nil, err
		}
		bs = normalizeBlockSize(detected)
	}
	return &File{f: f, size: size, blockSize: bs, readOnly: o.ReadOnly}, nil
}

// normalizeBlockSize rounds a detected size up to a valid block size.
// Rounding up is the safe direction: claiming a larger tear unit only makes
// formats more conservative.
func normalizeBlockSize(bs int64) int {
	if bs <= MinBlockSize {
		return MinBlockSize
	}
	if bs > 1<<30 {
		// No file system reports this; an absurd value must not turn into
		// absurd allocations in formats.
		return 1 << 30
	}
	return 1 << bits.Len64(uint64(bs-1))
}

// Name returns the path the file was opened with.
func (d *File) Name() string { return d.f.Name() }

// ReadAt implements Device.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, d.closedErr("read", int64(len(p)), off)
	}
	n, err := readLen(len(p), off, d.size)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	got, err := d.f.ReadAt(p[:n], off)
	if err != nil {
		// io.EOF here means the file shrank behind our back.
		return got, fmt.Errorf("blockdev: read of %d bytes at offset %d: %w", n, off, err)
	}
	if n < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// WriteAt implements Device.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, d.closedErr("write", int64(len(p)), off)
	}
	if d.readOnly {
		return 0, fmt.Errorf("blockdev: write of %d bytes at offset %d: %w", len(p), off, ErrReadOnly)
	}
	if err := checkRange("write", off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("blockdev: write of %d bytes at offset %d: %w", len(p), off, err)
	}
	return n, nil
}

// StartWriteback implements WritebackStarter (sync_file_range on Linux; a
// no-op elsewhere). Errors are ignored: it is only a hint.
func (d *File) StartWriteback(off, length int64) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed || d.readOnly {
		return
	}
	startWriteback(d.f, off, length)
}

// Sync implements Device with fdatasync where available: it flushes the
// data and the metadata needed to read it back (including the size after a
// Resize) but skips timestamps. On a read-only file it does nothing.
func (d *File) Sync() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return fmt.Errorf("blockdev: sync %s: %w", d.f.Name(), os.ErrClosed)
	}
	if d.readOnly {
		return nil
	}
	if err := datasync(d.f); err != nil {
		return fmt.Errorf("blockdev: sync %s: %w", d.f.Name(), err)
	}
	return nil
}

// Size implements Device.
func (d *File) Size() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.size
}

// BlockSize implements Device.
func (d *File) BlockSize() int { return d.blockSize }

// ReadOnly implements ReadOnlyDevice.
func (d *File) ReadOnly() bool { return d.readOnly }

// Resize implements Resizer by truncating or extending the file; the new
// range reads as zeros. It fails on block device nodes.
func (d *File) Resize(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("blockdev: resize %s to %d bytes: %w", d.f.Name(), size, os.ErrClosed)
	}
	if d.readOnly {
		return fmt.Errorf("blockdev: resize to %d bytes: %w", size, ErrReadOnly)
	}
	if size < 0 {
		return fmt.Errorf("blockdev: resize to %d bytes: %w", size, ErrOutOfRange)
	}
	if err := d.f.Truncate(size); err != nil {
		return fmt.Errorf("blockdev: resize to %d bytes: %w", size, err)
	}
	d.size = size
	return nil
}

// Trim implements Trimmer. On Linux it punches a hole, which frees the
// space in a sparse image; where the file system or platform cannot, it
// writes zeros instead. Either way the range reads as zeros afterwards,
// though callers may rely only on the Trimmer contract (unspecified).
func (d *File) Trim(off, length int64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return d.closedErr("trim", length, off)
	}
	if d.readOnly {
		return fmt.Errorf("blockdev: trim of %d bytes at offset %d: %w", length, off, ErrReadOnly)
	}
	if err := checkRange("trim", off, length, d.size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	err := punchHole(d.f, off, length)
	if errors.Is(err, errors.ErrUnsupported) {
		err = writeZeros(d.f, off, length)
	}
	if err != nil {
		return fmt.Errorf("blockdev: trim of %d bytes at offset %d: %w", length, off, err)
	}
	return nil
}

// Close closes the file. It does not Sync: durability is the format's
// decision. Operations after Close, including a second Close, fail with an
// error wrapping os.ErrClosed.
func (d *File) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("blockdev: close %s: %w", d.f.Name(), os.ErrClosed)
	}
	d.closed = true
	return d.f.Close()
}

func (d *File) closedErr(op string, length, off int64) error {
	return fmt.Errorf("blockdev: %s of %d bytes at offset %d in %s: %w", op, length, off, d.f.Name(), os.ErrClosed)
}
