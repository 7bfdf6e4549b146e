package cocoonfs

import (
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
// are not files and are refused.
func (f *FS) ReadFile(ino uint64) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return nil, f.failed
	}
	return f.readFile(ino)
}

func (f *FS) readFile(ino uint64) ([]byte, error) {
	e, err := f.userEntry(ino)
	if err != nil {
		return nil, err
	}
	return f.readEntry(e)
}

// Stat returns ino's flags and size. CocoonFS stores no length field (the
// length is implied by the padding of the encrypted data), so Stat decrypts
// the file.
func (f *FS) Stat(ino uint64) (FileInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return FileInfo{}, f.failed
	}
	e, err := f.userEntry(ino)
	if err != nil {
		return FileInfo{}, err
	}
	data, err := f.readEntry(e)
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Inode: Inode{Ino: e.Inode, Flags: e.Flags}, Size: int64(len(data))}, nil
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

func (f *FS) readEntry(e disk.LeafEntry) ([]byte, error) {
	exts, _, err := f.entryExtents(e)
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, x := range exts {
		total += x.Len
	}
	ct := make([]byte, 0, total*f.layout.AllocBlockSize())
	for _, x := range exts {
		b, err := f.authRead(x.Start, x.Len)
		if err != nil {
			return nil, fmt.Errorf("inode %d: %w", e.Inode, err)
		}
		ct = append(ct, b...)
	}
	pt, err := decryptExtents(f.keys.blockCipher(e.Inode, subdomainData), ct)
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", e.Inode, err)
	}
	return pt, nil
}
