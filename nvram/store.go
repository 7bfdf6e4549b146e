package nvram

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/sealfs/sealfs/cocoonfs"
)

// Inode numbers. CocoonFS names files by 64-bit numbers and its
// specification expects ranges to be assigned statically per purpose; this
// package owns 0x4e56524d_00000000 to 0x4e56524d_ffffffff ("NVRM" in the
// high 32 bits). It stays clear of the 0x54504d00_xxxxxxxx ("TPM\0") ranges
// the specification suggests for a TPM that keeps each NV index and
// persistent object in an inode of its own, so both can share an image.
const (
	InodeRangeFirst uint64 = 0x4e56524d_00000000
	InodeRangeLast  uint64 = 0x4e56524d_ffffffff
	// DirectoryInode holds the directory, with every entry's data inline.
	DirectoryInode uint64 = 0x4e56524d_00000001
)

var errInvalid = fs.ErrInvalid

// ErrNoStore: the image has no NVRAM directory (and Options.Create was not
// given). It matches fs.ErrNotExist.
var ErrNoStore = fmt.Errorf("nvram: the image holds no NVRAM store (inode %#x is absent): %w", DirectoryInode, fs.ErrNotExist)

func notExist(name string) error {
	return fmt.Errorf("nvram: no entry named %q: %w", name, fs.ErrNotExist)
}

// Options tune Open. nil means the zero value.
type Options struct {
	// Create opens an image without a directory as an empty store; the
	// first update writes the directory. Without it such an image is
	// ErrNoStore. Open itself never writes.
	Create bool
}

// Store is the NVRAM store of one open CocoonFS image. It keeps no state of
// its own besides the image: every call reads the committed directory, and
// every change is one CocoonFS transaction, so changes made through other
// Stores on the same *cocoonfs.FS are seen at once. A Store is safe for
// concurrent use; updates are serialized by the image's one-writer lock.
type Store struct {
	fsys *cocoonfs.FS
}

// Open opens the NVRAM store of fsys (opened with the key, which
// cocoonfs.Open has already checked). The directory is read and parsed
// once, so a malformed one (errs.ErrCorrupt) is reported here.
func Open(fsys *cocoonfs.FS, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{fsys: fsys}
	_, exists, err := s.read()
	if err != nil {
		return nil, err
	}
	if !exists && !opts.Create {
		return nil, ErrNoStore
	}
	return s, nil
}

// read returns the committed directory and whether its file exists.
func (s *Store) read() (*Directory, bool, error) {
	b, err := s.fsys.ReadFile(DirectoryInode)
	if errors.Is(err, fs.ErrNotExist) {
		return NewDirectory(), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("nvram: reading the directory: %w", err)
	}
	d, err := ParseDirectory(b)
	if err != nil {
		return nil, true, err
	}
	return d, true, nil
}

// Snapshot returns a private copy of the committed directory: a consistent
// view of every entry at one point in time.
func (s *Store) Snapshot() (*Directory, error) {
	d, _, err := s.read()
	return d, err
}

// List describes every entry (see Directory.List).
func (s *Store) List() ([]Info, error) {
	d, err := s.Snapshot()
	if err != nil {
		return nil, err
	}
	return d.List(), nil
}

// Get returns the named entry. A missing entry matches fs.ErrNotExist; an
// entry with an unknown mandatory attribute matches ErrUnknownMandatory.
func (s *Store) Get(name string) (*Entry, error) {
	d, err := s.Snapshot()
	if err != nil {
		return nil, err
	}
	return d.Get(name)
}

// Put creates or replaces one entry in one transaction.
func (s *Store) Put(ctx context.Context, e *Entry) error {
	return s.Update(ctx, func(d *Directory) error { return d.Put(e) })
}

// Remove deletes the named entries in one transaction: all of them or, if
// one is missing (fs.ErrNotExist), none.
func (s *Store) Remove(ctx context.Context, names ...string) error {
	return s.Update(ctx, func(d *Directory) error {
		for _, n := range names {
			if err := d.Remove(n); err != nil {
				return err
			}
		}
		return nil
	})
}

// Update runs fn on the committed directory and, if fn succeeds and changed
// something, writes the result in one CocoonFS transaction: after a crash
// at any point the image holds the directory as it was before or as fn
// left it, never a mix, whatever number of entries fn changed. If fn
// returns an error nothing is written. Updates are serialized: no other
// transaction on the image commits between the read and the write. fn must
// not keep d.
func (s *Store) Update(ctx context.Context, fn func(d *Directory) error) error {
	tx, err := s.fsys.Begin()
	if err != nil {
		return fmt.Errorf("nvram: %w", err)
	}
	defer tx.Rollback()
	// Read under the writer lock Begin holds: nothing commits until we do.
	d, _, err := s.read()
	if err != nil {
		return err
	}
	if err := fn(d); err != nil {
		return err
	}
	if !d.changed {
		return nil
	}
	enc := d.Encode()
	if len(enc) > MaxDirectorySize {
		return fmt.Errorf("%w: the new directory would be %d bytes (at most %d)", ErrDirectoryTooLarge, len(enc), MaxDirectorySize)
	}
	if err := tx.WriteFile(DirectoryInode, enc, 0); err != nil {
		return fmt.Errorf("nvram: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("nvram: committing the directory: %w", err)
	}
	return nil
}
