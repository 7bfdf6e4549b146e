package blob

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

// Layout of a store directory (docs/format/blob-store.md):
//
//	STORE/sealfs-blob-store  marker: "sealfs-blob-store 1\n" (+ "features: ...\n")
//	STORE/blobs/<name>       one file per blob: header(32) || data || tree
//	STORE/tmp/install-*      installs in progress (flock-ed by their writer)
const (
	markerName  = "sealfs-blob-store"
	markerMagic = "sealfs-blob-store"
	blobsDir    = "blobs"
	tmpDir      = "tmp"
	tmpPrefix   = "install-"

	// storeVersion is the layout version this package reads and writes.
	storeVersion = 1
)

var (
	// ErrIntegrity reports that stored bytes do not match the blob's name:
	// the data, the tree or the header was altered, or the bytes given to a
	// Writer do not hash to its name. It is merkle.ErrIntegrity and matches
	// errs.ErrAuthentication. Bytes that failed a check are never returned.
	ErrIntegrity = merkle.ErrIntegrity

	// ErrInvalidName reports a name that is not 64 lowercase hex characters.
	ErrInvalidName = merkle.ErrInvalidName

	// ErrNotStore reports a directory that is not a blob store (no marker
	// file, or a marker of something else), or an empty or missing one when
	// Options.Create is not set.
	ErrNotStore = errors.New("not a sealfs blob store")

	// ErrSizeMismatch reports that a Writer was given more or fewer bytes
	// than the size passed to Create. Nothing is installed.
	ErrSizeMismatch = errors.New("blob size differs from the declared size")

	// ErrClosed reports use of a Writer or Blob after Close or Abort.
	ErrClosed = errors.New("blob: already closed")
)

// Options configure Open. A nil *Options means the zero value.
type Options struct {
	// Create makes a new store when the directory is missing or empty.
	// Without it, Open only opens an existing store.
	Create bool
}

// Store is an open blob store. It holds no open files or locks of its own;
// it is safe for concurrent use, and several Stores (in one process or
// many) may open the same directory.
type Store struct {
	dir   string
	blobs string
	tmp   string
}

// Open opens the blob store in dir, creating it if opts.Create is set and
// dir is missing or empty. A directory that holds anything else is refused
// with ErrNotStore; a store of a newer layout version or with unknown
// feature flags with errs.ErrUnsupported. Open removes temporary files left
// by interrupted installs (not those of installs still running).
func Open(dir string, opts *Options) (*Store, error) {
	if err := checkPlatform(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{dir: dir, blobs: filepath.Join(dir, blobsDir), tmp: filepath.Join(dir, tmpDir)}
	err := s.readMarker()
	if errors.Is(err, fs.ErrNotExist) {
		empty, eerr := isEmptyDir(dir)
		switch {
		case eerr != nil && !errors.Is(eerr, fs.ErrNotExist):
			return nil, fmt.Errorf("blob store %s: %w", dir, eerr)
		case eerr == nil && !empty:
			return nil, fmt.Errorf("%s: %w (no %s file; refusing to use a directory that holds other files)", dir, ErrNotStore, markerName)
		case !opts.Create:
			if eerr != nil {
				return nil, fmt.Errorf("blob store %s: %w", dir, eerr)
			}
			return nil, fmt.Errorf("%s: %w (empty directory)", dir, ErrNotStore)
		}
		err = s.create()
	}
	if err != nil {
		return nil, err
	}
	// A crash while creating the store may have left the marker without
	// the directories; they are empty then, so making them is safe.
	for _, d := range []string{s.blobs, s.tmp} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("blob store %s: %w", dir, err)
		}
	}
	if err := s.cleanTemp(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the Store. It holds no resources, so Close only exists to
// mark the end of its use; Blobs and Writers stay usable after it.
func (s *Store) Close() error { return nil }

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// isEmptyDir reports whether dir has no entries other than a marker being
// written when a crash interrupted store creation.
func isEmptyDir(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "."+markerName) {
			return false, nil
		}
	}
	return true, nil
}

// readMarker checks the marker file: magic line, then version, then
// feature flags (none are defined in version 1, so any is unknown).
func (s *Store) readMarker() error {
	f, err := os.Open(filepath.Join(s.dir, markerName))
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s: %w (not a directory)", s.dir, ErrNotStore)
		}
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4096))
	if !sc.Scan() {
		return fmt.Errorf("%s: %w (empty marker file)", s.dir, ErrNotStore)
	}
	magic, ver, ok := strings.Cut(sc.Text(), " ")
	if !ok || magic != markerMagic {
		return fmt.Errorf("%s: %w (bad marker file)", s.dir, ErrNotStore)
	}
	v, err := strconv.Atoi(ver)
	if err != nil || strconv.Itoa(v) != ver {
		return fmt.Errorf("%s: %w (bad version %q in marker file)", s.dir, ErrNotStore, ver)
	}
	if v != storeVersion {
		return fmt.Errorf("%s: blob store version %d (this sealfs reads version %d): %w", s.dir, v, storeVersion, errs.ErrUnsupported)
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if feats, ok := strings.CutPrefix(line, "features:"); ok {
			if f := strings.TrimSpace(feats); f != "" {
				return fmt.Errorf("%s: unknown blob store features %q: %w", s.dir, f, errs.ErrUnsupported)
			}
		}
	}
	return sc.Err()
}

// create lays out a new store: the directories, then the marker, written
// through a temporary file and a rename so it is whole or absent.
func (s *Store) create() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("create blob store: %w", err)
	}
	for _, d := range []string{s.blobs, s.tmp} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create blob store: %w", err)
		}
	}
	tmp, err := os.CreateTemp(s.dir, "."+markerName+"-*")
	if err != nil {
		return fmt.Errorf("create blob store: %w", err)
	}
	_, err = fmt.Fprintf(tmp, "%s %d\nfeatures:\n", markerMagic, storeVersion)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// Link, not rename: a store created concurrently by another
		// process keeps its marker (they are identical anyway).
		err = os.Link(tmp.Name(), filepath.Join(s.dir, markerName))
		if errors.Is(err, fs.ErrExist) {
			err = nil
		}
	}
	os.Remove(tmp.Name())
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("create blob store: %w", err)
	}
	return nil
}

// cleanTemp removes temporary files whose writer is gone: those it can
// lock. A running writer holds an exclusive flock on its file.
func (s *Store) cleanTemp() error {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		return fmt.Errorf("blob store %s: %w", s.dir, err)
	}
	removed := false
	for _, e := range ents {
		p := filepath.Join(s.tmp, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue // gone already, or not ours to judge
		}
		if lockFile(f, false) == nil {
			if os.Remove(p) == nil {
				removed = true
			}
		}
		f.Close()
	}
	if removed {
		return syncDir(s.tmp)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) path(name merkle.Digest) string {
	return filepath.Join(s.blobs, name.String())
}

// List returns the names of all installed blobs in ascending order. Files
// in the blobs directory whose names are not blob names are skipped.
func (s *Store) List() ([]merkle.Digest, error) {
	ents, err := os.ReadDir(s.blobs)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	names := make([]merkle.Digest, 0, len(ents))
	for _, e := range ents {
		d, err := merkle.ParseDigest(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		names = append(names, d) // ReadDir sorts by name; hex order is byte order
	}
	return names, nil
}

// Info describes one installed blob.
type Info struct {
	Size      int64 `json:"size"`       // blob bytes (the data)
	TreeBytes int64 `json:"tree_bytes"` // stored Merkle tree bytes (levels below the root)
	DiskBytes int64 `json:"disk_bytes"` // allocated on disk for the blob's file (st_blocks × 512)
}

// Stat describes an installed blob without verifying its data. Errors:
// fs.ErrNotExist if it is not installed; ErrIntegrity if its header is
// damaged.
func (s *Store) Stat(name merkle.Digest) (Info, error) {
	f, err := os.Open(s.path(name))
	if err != nil {
		return Info{}, fmt.Errorf("blob %s: %w", name, unwrapPath(err))
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return Info{}, fmt.Errorf("blob %s: %w", name, err)
	}
	disk, err := allocatedFile(f)
	if err != nil {
		return Info{}, fmt.Errorf("blob %s: %w", name, err)
	}
	return Info{Size: h.size, TreeBytes: h.treeSize, DiskBytes: disk}, nil
}

// Remove deletes an installed blob durably. Blobs already open stay
// readable until closed. Errors: fs.ErrNotExist if it is not installed.
func (s *Store) Remove(name merkle.Digest) error {
	if err := os.Remove(s.path(name)); err != nil {
		return fmt.Errorf("remove blob %s: %w", name, unwrapPath(err))
	}
	if err := syncDir(s.blobs); err != nil {
		return fmt.Errorf("remove blob %s: %w", name, err)
	}
	return nil
}

// Usage returns the bytes the store occupies on its file system: the
// allocated blocks (st_blocks × 512) of every file and directory under the
// store's directory, the directory itself included, hard links counted
// once. Temporary files of running installs are included.
func (s *Store) Usage() (int64, error) {
	seen := map[fileID]bool{}
	var total int64
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != s.dir {
				return nil // removed while we walked
			}
			return err
		}
		n, id, err := allocated(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !seen[id] {
			seen[id] = true
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("blob store usage: %w", err)
	}
	return total, nil
}

// unwrapPath drops the *PathError around an OS error: messages then name
// the blob rather than a path inside the store.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
