package bd

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sealfs/sealfs/blockdev"
)

// ErrUnaligned reports an access to a block-granular device whose offset or
// length is not a multiple of the device's block size. Wrap the device with
// ByteAddressable for sub-block or unaligned access.
var ErrUnaligned = errors.New("bd: access not aligned to the block size")

// DefaultBlockSize is the block size of Crypt and Verity when the options
// leave it 0.
const DefaultBlockSize = 4096

// blockSizeOr validates a configured block size (0 means DefaultBlockSize):
// a power of two from 512 to 4096, the sizes dm-crypt and dm-verity use.
func blockSizeOr(bs int) (int, error) {
	if bs == 0 {
		return DefaultBlockSize, nil
	}
	if bs < 512 || bs > 4096 || bs&(bs-1) != 0 {
		return 0, fmt.Errorf("bd: block size %d is not 512, 1024, 2048 or 4096", bs)
	}
	return bs, nil
}

// checkAligned validates a block-granular access.
func checkAligned(op string, n int, off int64, bs int) error {
	if off < 0 {
		return fmt.Errorf("bd: %s of %d bytes at negative offset %d: %w", op, n, off, blockdev.ErrOutOfRange)
	}
	if off%int64(bs) != 0 || n%bs != 0 {
		return fmt.Errorf("%w: %s of %d bytes at offset %d (block size %d)", ErrUnaligned, op, n, off, bs)
	}
	return nil
}

// checkRead validates a block-granular read and returns how many bytes of
// it lie below size (a multiple of bs).
func checkRead(n int, off, size int64, bs int) (int, error) {
	if err := checkAligned("read", n, off, bs); err != nil {
		return 0, err
	}
	if off >= size {
		return 0, nil
	}
	return int(min(int64(n), size-off)), nil
}

// checkWrite validates a block-granular write of n bytes.
func checkWrite(n int, off, size int64, bs int, ro bool) error {
	if ro {
		return fmt.Errorf("bd: write of %d bytes at offset %d: %w", n, off, blockdev.ErrReadOnly)
	}
	if err := checkAligned("write", n, off, bs); err != nil {
		return err
	}
	if off > size || int64(n) > size-off {
		return fmt.Errorf("bd: write of %d bytes at offset %d outside device of %d bytes: %w", n, off, size, blockdev.ErrOutOfRange)
	}
	return nil
}

// readUnder reads exactly len(p) bytes of the lower device at off.
func readUnder(d blockdev.Device, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("bd: reading %d bytes at offset %d of the lower device: %w", len(p), off, err)
}

// eofIf returns io.EOF when a read was cut short by the end of the device.
func eofIf(short bool) error {
	if short {
		return io.EOF
	}
	return nil
}

// Std is the plaintext variant: blocks pass through unchanged, with the
// block-granular access rules of every bd device. It gives neither
// confidentiality nor integrity. Safe for concurrent use if the lower device
// is.
type Std struct {
	under blockdev.Device
	bs    int
	size  int64
}

// StdOptions configure NewStd; nil means defaults.
type StdOptions struct {
	// BlockSize is 512, 1024, 2048 or 4096 (0: 4096).
	BlockSize int
}

// NewStd returns a plaintext device over under. Its size is under's size
// rounded down to whole blocks.
func NewStd(under blockdev.Device, opts *StdOptions) (*Std, error) {
	var o StdOptions
	if opts != nil {
		o = *opts
	}
	bs, err := blockSizeOr(o.BlockSize)
	if err != nil {
		return nil, err
	}
	return &Std{under: under, bs: bs, size: under.Size() / int64(bs) * int64(bs)}, nil
}

// ReadAt implements blockdev.Device for whole blocks.
func (s *Std) ReadAt(p []byte, off int64) (int, error) {
	n, err := checkRead(len(p), off, s.size, s.bs)
	if err != nil || n == 0 {
		return 0, errOrEOF(err, len(p))
	}
	if err := readUnder(s.under, p[:n], off); err != nil {
		return 0, err
	}
	return n, eofIf(n < len(p))
}

// errOrEOF turns the "nothing below Size" case of checkRead into io.EOF.
func errOrEOF(err error, want int) error {
	if err == nil && want > 0 {
		return io.EOF
	}
	return err
}

// WriteAt implements blockdev.Device for whole blocks.
func (s *Std) WriteAt(p []byte, off int64) (int, error) {
	if err := checkWrite(len(p), off, s.size, s.bs, blockdev.IsReadOnly(s.under)); err != nil {
		return 0, err
	}
	return s.under.WriteAt(p, off)
}

// Sync implements blockdev.Device.
func (s *Std) Sync() error { return s.under.Sync() }

// Size implements blockdev.Device.
func (s *Std) Size() int64 { return s.size }

// BlockSize implements blockdev.Device.
func (s *Std) BlockSize() int { return s.bs }

// ReadOnly implements blockdev.ReadOnlyDevice.
func (s *Std) ReadOnly() bool { return blockdev.IsReadOnly(s.under) }

// byteAddressable is ByteAddressable's device.
type byteAddressable struct {
	dev blockdev.Device
	bs  int
	mu  sync.Mutex // serializes read-modify-write of partial blocks
}

// ByteAddressable wraps a block-granular device so that any offset and
// length work, as blockdev.Device promises: reads fetch the covering blocks,
// and writes of partial blocks read, modify and write the block back.
//
// Writes are serialized (concurrent read-modify-writes of one block would
// otherwise lose updates); reads run concurrently. A write that covers
// several blocks is one WriteAt of the lower device, so it keeps the lower
// device's all-or-nothing failure behaviour. A read of a block that fails
// authentication fails the whole call: no unverified byte is returned.
func ByteAddressable(dev blockdev.Device) blockdev.Device {
	return &byteAddressable{dev: dev, bs: dev.BlockSize()}
}

func (b *byteAddressable) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("bd: read of %d bytes at negative offset %d: %w", len(p), off, blockdev.ErrOutOfRange)
	}
	size := b.dev.Size()
	if off >= size {
		return 0, errOrEOF(nil, len(p))
	}
	n := int(min(int64(len(p)), size-off))
	bs := int64(b.bs)
	if off%bs == 0 && n%b.bs == 0 {
		if err := readUnder(b.dev, p[:n], off); err != nil {
			return 0, err
		}
		return n, eofIf(n < len(p))
	}
	start := off / bs * bs
	end := (off + int64(n) + bs - 1) / bs * bs
	buf := make([]byte, end-start)
	if err := readUnder(b.dev, buf, start); err != nil {
		return 0, err
	}
	copy(p[:n], buf[off-start:])
	return n, eofIf(n < len(p))
}

func (b *byteAddressable) WriteAt(p []byte, off int64) (int, error) {
	size := b.dev.Size()
	if blockdev.IsReadOnly(b.dev) {
		return 0, fmt.Errorf("bd: write of %d bytes at offset %d: %w", len(p), off, blockdev.ErrReadOnly)
	}
	if off < 0 || off > size || int64(len(p)) > size-off {
		return 0, fmt.Errorf("bd: write of %d bytes at offset %d outside device of %d bytes: %w", len(p), off, size, blockdev.ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	bs := int64(b.bs)
	if off%bs == 0 && len(p)%b.bs == 0 {
		return b.dev.WriteAt(p, off)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	start := off / bs * bs
	end := (off + int64(len(p)) + bs - 1) / bs * bs
	buf := make([]byte, end-start)
	// Only the first and last blocks keep old bytes.
	if err := readUnder(b.dev, buf[:bs], start); err != nil {
		return 0, err
	}
	if end-start > bs {
		if err := readUnder(b.dev, buf[len(buf)-int(bs):], end-bs); err != nil {
			return 0, err
		}
	}
	copy(buf[off-start:], p)
	if _, err := b.dev.WriteAt(buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (b *byteAddressable) Sync() error    { return b.dev.Sync() }
func (b *byteAddressable) Size() int64    { return b.dev.Size() }
func (b *byteAddressable) BlockSize() int { return b.bs }
func (b *byteAddressable) ReadOnly() bool { return blockdev.IsReadOnly(b.dev) }
