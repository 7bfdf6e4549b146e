package cocoonfs

import (
	"bytes"
	"fmt"
	"io/fs"
	"iter"
	"math/big"
	"slices"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Inode describes one file: its number and the flags stored with it (the low
// 8 bits belong to the application, the rest are reserved and zero).
type Inode struct {
	Ino   uint64
	Flags uint32
}

// FileInfo is what Stat returns.
type FileInfo struct {
	Inode
	Size int64 // plaintext bytes
}

// ReadFile returns the contents of inode ino, every byte authenticated.
// A missing inode is fs.ErrNotExist; reserved inodes (below FirstUserInode)
// are not files and are refused. For large files, OpenFile streams instead.
func (f *FS) ReadFile(ino uint64) ([]byte, error) {
	r, err := f.OpenFile(ino)
	if err != nil {
		return nil, err
	}
	st, err := r.Stat()
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, st.Size))
	if _, err := r.WriteTo(buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Stat returns ino's flags and size. CocoonFS stores no length field (the
// length is implied by the padding of the encrypted data), so Stat decrypts
// the file's last cipher blocks: it reads one data block or two, whatever
// the file's size.
func (f *FS) Stat(ino uint64) (FileInfo, error) {
	r, err := f.OpenFile(ino)
	if err != nil {
		return FileInfo{}, err
	}
	return r.Stat()
}

// Inodes iterates over the user inodes in increasing order, as of the
// committed state when the iteration starts. Iteration stops at the first
// error, which is yielded with a zero Inode.
func (f *FS) Inodes() iter.Seq2[Inode, error] {
	return func(yield func(Inode, error) bool) {
		f.mu.RLock()
		list, err := f.inodes()
		if f.failed != nil {
			list, err = nil, f.failed
		}
		f.mu.RUnlock()
		for _, ino := range list {
			if !yield(ino, nil) {
				return
			}
		}
		if err != nil {
			yield(Inode{}, err)
		}
	}
}

// inodes lists the user inodes; the caller holds f.mu.
func (f *FS) inodes() ([]Inode, error) {
	var list []Inode
	err := f.index.walk(func(e disk.LeafEntry) error {
		if e.Inode >= FirstUserInode {
			list = append(list, Inode{Ino: e.Inode, Flags: e.Flags})
		}
		return nil
	}, nil)
	return list, err
}

// RootDigest returns the authentication tree root HMAC: it binds every byte
// of the image, its metadata and its update counter. Store it somewhere
// trusted to detect rollback.
func (f *FS) RootDigest() []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.header.RootHMAC)
}

// UpdateCounter returns the filesystem update counter (a 128-bit value that
// starts at a random offset and grows by one with every committed update).
func (f *FS) UpdateCounter() *big.Int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return new(big.Int).Set(f.counter)
}

func (f *FS) userEntry(ino uint64) (disk.LeafEntry, error) {
	if ino < FirstUserInode {
		return disk.LeafEntry{}, fmt.Errorf("cocoonfs: inode %d is reserved for the filesystem (user inodes start at %d): %w", ino, FirstUserInode, fs.ErrInvalid)
	}
	e, ok, err := f.index.lookup(ino)
	if err != nil {
		return disk.LeafEntry{}, err
	}
	if !ok {
		return disk.LeafEntry{}, fmt.Errorf("cocoonfs: inode %d: %w", ino, fs.ErrNotExist)
	}
	return e, nil
}

// entryExtents resolves a leaf entry's extent pointer to the inode's data
// extents; chained extents of an indirect list are returned in chainExt.
func (f *FS) entryExtents(e disk.LeafEntry) (data, chainExt []disk.Extent, err error) {
	if e.Ptr.IsNil() {
		return nil, nil, corruptf("inode %d has no extent", e.Inode)
	}
	start, n, indirect := e.Ptr.Decode()
	first := disk.Extent{Start: start, Len: n}
	if !indirect {
		return []disk.Extent{first}, nil, nil
	}
	ch := f.newChain(e.Inode, subdomainExtentsList, 0, func(x disk.Extent) ([]byte, error) {
		chainExt = append(chainExt, x)
		return f.authRead(x.Start, x.Len)
	})
	list, err := ch.decode(first)
	if err != nil {
		return nil, chainExt, fmt.Errorf("extents list of inode %d: %w", e.Inode, err)
	}
	data, err = f.decodeExtentsList(e.Inode, list)
	return data, chainExt, err
}
