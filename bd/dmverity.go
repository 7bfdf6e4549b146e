package bd

import (
	"fmt"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

// DmVerity is the read-only dm-verity mode: data blocks are checked against
// a hash device in the format of `veritysetup format` (package merkle) and a
// trusted root hash, so the same image and hash device also work with
// Linux's dm-verity target and veritysetup verify. Writes fail with
// blockdev.ErrReadOnly. A block that does not match fails with an error
// wrapping errs.ErrAuthentication (merkle.ErrIntegrity); the blocks before it
// are returned.
//
// Safe for concurrent use if the lower devices' ReadAt are.
type DmVerity struct {
	data blockdev.Device
	v    *merkle.DmverityVerifier
	bs   int
	size int64
}

// DmVerityOptions configure OpenDmVerity; nil means defaults.
type DmVerityOptions struct {
	// Hash are the hash device's parameters. With a superblock (the
	// default, as veritysetup format writes) zero fields are read from it
	// and non-zero ones must agree; with NoSuperblock every parameter the
	// format used must be given.
	Hash merkle.DmverityOptions
}

// OpenDmVerity opens data read-only, verified against hash and root.
func OpenDmVerity(data, hash blockdev.Device, root []byte, opts *DmVerityOptions) (*DmVerity, error) {
	var o DmVerityOptions
	if opts != nil {
		o = *opts
	}
	mo := o.Hash
	if !mo.NoSuperblock {
		var err error
		if mo, err = merkle.DmverityOptionsFromDevice(hash, mo); err != nil {
			return nil, err
		}
		mo.NoSuperblock = false
	}
	v, err := merkle.NewDmverityVerifier(hash, root, mo, data.Size())
	if err != nil {
		return nil, err
	}
	l := v.Layout()
	if l.DataBlockSize > 4096 || l.DataBlockSize < 512 {
		return nil, fmt.Errorf("bd: dm-verity data block size %d (bd supports 512..4096): %w", l.DataBlockSize, errs.ErrUnsupported)
	}
	return &DmVerity{data: data, v: v, bs: l.DataBlockSize, size: l.DataBlocks * int64(l.DataBlockSize)}, nil
}

// ReadAt implements blockdev.Device for whole blocks.
func (d *DmVerity) ReadAt(p []byte, off int64) (int, error) {
	n, err := checkRead(len(p), off, d.size, d.bs)
	if err != nil || n == 0 {
		return 0, errOrEOF(err, len(p))
	}
	if err := readUnder(d.data, p[:n], off); err != nil {
		clear(p[:n])
		return 0, err
	}
	first := off / int64(d.bs)
	if err := d.v.VerifyBlocks(first, p[:n]); err != nil {
		if !errorsIsAuth(err) {
			clear(p[:n])
			return 0, err
		}
		// Find the first bad block; return what precedes it.
		for i := 0; i < n; i += d.bs {
			if err := d.v.VerifyBlocks(first+int64(i/d.bs), p[i:i+d.bs]); err != nil {
				clear(p[i:])
				return i, fmt.Errorf("bd: block %d: %w", first+int64(i/d.bs), err)
			}
		}
		clear(p[:n])
		return 0, err // unreachable unless the hash device changed meanwhile
	}
	return n, eofIf(n < len(p))
}

// WriteAt fails: dm-verity images are read-only.
func (d *DmVerity) WriteAt(p []byte, off int64) (int, error) {
	return 0, fmt.Errorf("bd: write of %d bytes at offset %d to a dm-verity device: %w", len(p), off, blockdev.ErrReadOnly)
}

// Sync implements blockdev.Device; there is nothing to flush.
func (d *DmVerity) Sync() error { return nil }

// Size implements blockdev.Device: the data blocks the tree covers.
func (d *DmVerity) Size() int64 { return d.size }

// BlockSize implements blockdev.Device.
func (d *DmVerity) BlockSize() int { return d.bs }

// ReadOnly implements blockdev.ReadOnlyDevice: always true.
func (d *DmVerity) ReadOnly() bool { return true }

// Layout returns the hash device's geometry.
func (d *DmVerity) Layout() merkle.DmverityLayout { return d.v.Layout() }
