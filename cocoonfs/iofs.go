package cocoonfs

import (
	"errors"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"time"
)

// FS returns a read-only io/fs view of the image: one flat directory whose
// entries are the user inodes, named by their decimal inode number. A file's
// mode carries its inode flags in no way; use Stat for those.
func (f *FS) FS() fs.FS { return ioFS{f} }

type ioFS struct{ f *FS }

var (
	_ fs.ReadDirFS  = ioFS{}
	_ fs.ReadFileFS = ioFS{}
	_ fs.StatFS     = ioFS{}
)

// parseName maps a path to an inode number. Only the canonical decimal form
// is accepted, so every inode has exactly one name.
func parseName(name string) (uint64, bool) {
	ino, err := strconv.ParseUint(name, 10, 64)
	if err != nil || strconv.FormatUint(ino, 10) != name || ino < FirstUserInode {
		return 0, false
	}
	return ino, true
}

func (v ioFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		entries, err := v.ReadDir(".")
		if err != nil {
			return nil, err
		}
		return &dirFile{entries: entries}, nil
	}
	ino, ok := parseName(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	r, err := v.f.OpenFile(ino)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	st, err := r.Stat()
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &file{info: fileInfo{name: name, size: st.Size}, r: io.NewSectionReader(r, 0, st.Size)}, nil
}

func (v ioFS) ReadFile(name string) ([]byte, error) {
	ino, ok := parseName(name)
	if !ok {
		if !fs.ValidPath(name) {
			return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrInvalid}
		}
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	data, err := v.f.ReadFile(ino)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return data, nil
}

func (v ioFS) Stat(name string) (fs.FileInfo, error) {
	if name == "." {
		return fileInfo{name: ".", dir: true}, nil
	}
	ino, ok := parseName(name)
	if !ok {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	st, err := v.f.Stat(ino)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return fileInfo{name: name, size: st.Size}, nil
}

func (v ioFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		if _, ok := parseName(name); ok {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	var out []fs.DirEntry
	for ino, err := range v.f.Inodes() {
		if err != nil {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
		}
		out = append(out, dirEntry{v: v, name: strconv.FormatUint(ino.Ino, 10)})
	}
	// fs.ReadDirFS promises entries sorted by name, and decimal names do not
	// sort like numbers.
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return cmpString(a.Name(), b.Name()) })
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type fileInfo struct {
	name string
	size int64
	dir  bool
}

func (i fileInfo) Name() string { return i.name }
func (i fileInfo) Size() int64  { return i.size }
func (i fileInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return i.dir }
func (i fileInfo) Sys() any           { return nil }

type dirEntry struct {
	v    ioFS
	name string
}

func (d dirEntry) Name() string               { return d.name }
func (d dirEntry) IsDir() bool                { return false }
func (d dirEntry) Type() fs.FileMode          { return 0 }
func (d dirEntry) Info() (fs.FileInfo, error) { return d.v.Stat(d.name) }

// file is an open regular file, read in place through a File.
type file struct {
	info fileInfo
	r    *io.SectionReader
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *file) Read(p []byte) (int, error) { return f.r.Read(p) }
func (f *file) ReadAt(p []byte, off int64) (int, error) {
	return f.r.ReadAt(p, off)
}
func (f *file) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }
func (f *file) Close() error                              { return nil }

type dirFile struct {
	entries []fs.DirEntry
	pos     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return fileInfo{name: ".", dir: true}, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: ".", Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.pos:]
	if n <= 0 {
		d.pos = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.pos += n
	return rest[:n], nil
}
