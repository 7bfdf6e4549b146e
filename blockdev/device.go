package blockdev

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Device is a fixed-size, byte-addressed storage medium. It is the only way
// sealfs formats reach storage; see the package documentation for the
// durability, tearing and concurrency contract every implementation obeys.
type Device interface {
	// ReadAt has io.ReaderAt semantics. A read that extends past Size
	// returns the bytes below Size together with io.EOF; a read starting at
	// or past Size returns 0, io.EOF. A negative offset fails with
	// ErrOutOfRange.
	ReadAt(p []byte, off int64) (n int, err error)

	// WriteAt writes all of p at off or fails without writing. A write that
	// does not fit entirely inside [0, Size) fails with ErrOutOfRange: a
	// device only grows through Resize, so a stray offset in a format can
	// never silently extend an image. A read-only device fails with
	// ErrReadOnly. A nil error does not mean durable; only Sync does.
	WriteAt(p []byte, off int64) (n int, err error)

	// Sync is the write barrier: when it returns nil, every write that
	// returned before Sync was called is durable, and no write issued after
	// Sync returns becomes effective, even partially, before them. A failed
	// Sync guarantees nothing about the writes since the last successful one.
	Sync() error

	// Size reports the device size in bytes.
	Size() int64

	// BlockSize reports the IO block size: the largest aligned unit within
	// which a single interrupted write may tear. It is a power of two and at
	// least MinBlockSize.
	BlockSize() int
}

// ReadOnlyDevice is implemented by devices that can report whether they
// refuse writes, so a format can mount read-only instead of failing on its
// first write.
type ReadOnlyDevice interface {
	ReadOnly() bool
}

// Resizer is implemented by devices whose size can change (image files, not
// partitions). Growing fills the new range with zeros; shrinking discards
// the tail. Like a write, a resize is durable only after Sync.
type Resizer interface {
	Resize(size int64) error
}

// WritebackStarter is implemented by devices that can start writing a
// range back to stable storage without waiting for it: a hint that lets a
// long stream of writes reach the disk while more are being prepared, so
// the Sync that ends them has less left to wait for. It is not a barrier
// and promises nothing; only Sync does.
type WritebackStarter interface {
	StartWriteback(off, length int64)
}

// Trimmer is implemented by devices that can discard a range. The contents
// of a trimmed range are unspecified afterwards (they may read as zeros, as
// the old data, or as anything else), so formats trim only space they have
// already made unreachable.
type Trimmer interface {
	Trim(off, length int64) error
}

// Sentinel errors. Devices wrap them with the offending offsets and lengths;
// test with errors.Is.
var (
	// ErrReadOnly reports a write, resize or trim on a read-only device.
	ErrReadOnly = errors.New("device is read-only")

	// ErrOutOfRange reports an access outside [0, Size), a negative offset
	// or length, or a tear pivot outside its write.
	ErrOutOfRange = errors.New("out of range")

	// ErrPowerCut reports that a Faulty device has lost power: the failed
	// operation, and every mutating operation after it, changed nothing
	// (except a torn write, which changed part of its range).
	ErrPowerCut = errors.New("power cut")
)

const (
	// MinBlockSize is the smallest IO block size a Device may report: no
	// real medium persists less than a 512-byte sector at a time, and
	// formats size their atomic units against it.
	MinBlockSize = 512

	// DefaultBlockSize is used where a block size cannot be detected and by
	// NewMemory when given 0. It matches the page size and the physical
	// sector size of current disks.
	DefaultBlockSize = 4096
)

// IsReadOnly reports whether d refuses writes, for devices that say so.
func IsReadOnly(d Device) bool {
	r, ok := d.(ReadOnlyDevice)
	return ok && r.ReadOnly()
}

func validBlockSize(bs int) bool {
	return bs >= MinBlockSize && bs&(bs-1) == 0
}

func checkBlockSize(bs int) error {
	if !validBlockSize(bs) {
		return fmt.Errorf("blockdev: block size %d is not a power of two >= %d", bs, MinBlockSize)
	}
	return nil
}

// checkRange validates [off, off+length) against a device of size bytes.
// It is written so that off+length cannot overflow.
func checkRange(op string, off, length, size int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("blockdev: %s of %d bytes at offset %d outside device of %d bytes: %w",
			op, length, off, size, ErrOutOfRange)
	}
	return nil
}

// readLen returns how many of n bytes requested at off lie below size.
func readLen(n int, off, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blockdev: read of %d bytes at negative offset %d: %w", n, off, ErrOutOfRange)
	}
	if off >= size {
		return 0, nil
	}
	if rem := size - off; int64(n) > rem {
		return int(rem), nil
	}
	return n, nil
}

// readFull reads exactly len(p) bytes at off, treating io.EOF as success
// when the read was complete (io.ReaderAt allows either at the very end).
func readFull(d Device, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("blockdev: read of %d bytes at offset %d returned %d: %w", len(p), off, n, err)
}

// copyChunk bounds the buffers of whole-device helpers, so comparing or
// zero-filling a large image does not allocate its full size.
const copyChunk = 1 << 20

// writeZeros fills [off, off+length) with zeros through WriteAt; it is the
// portable implementation of Trim, whose contents are unspecified anyway.
func writeZeros(w io.WriterAt, off, length int64) error {
	buf := make([]byte, min(length, copyChunk))
	for length > 0 {
		n := min(length, int64(len(buf)))
		if _, err := w.WriteAt(buf[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// ReadAll returns a copy of the whole contents of d, for snapshots of
// starting images in crash tests.
func ReadAll(d Device) ([]byte, error) {
	buf := make([]byte, d.Size())
	if err := readFull(d, buf, 0); err != nil {
		return nil, err
	}
	return buf, nil
}

// Equal reports whether a and b have the same size and the same bytes.
func Equal(a, b Device) (bool, error) {
	size := a.Size()
	if b.Size() != size {
		return false, nil
	}
	bufA := make([]byte, min(size, copyChunk))
	bufB := make([]byte, len(bufA))
	for off := int64(0); off < size; {
		n := min(size-off, int64(len(bufA)))
		if err := readFull(a, bufA[:n], off); err != nil {
			return false, err
		}
		if err := readFull(b, bufB[:n], off); err != nil {
			return false, err
		}
		if !bytes.Equal(bufA[:n], bufB[:n]) {
			return false, nil
		}
		off += n
	}
	return true, nil
}
