package fusefs

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/nvram"
)

const (
	dirMode  = syscall.S_IFDIR | 0o700
	fileMode = syscall.S_IFREG | 0o600
)

// rootNode is the one directory: the store's entries by name.
type rootNode struct {
	gofs.Inode
	fs *filesystem
}

// entryNode is one file. Its lock guards its fields.
type entryNode struct {
	gofs.Inode
	fs *filesystem

	mu      sync.Mutex
	name    string // "" once unlinked or replaced
	memOnly bool   // lives in memory only (Options.MemoryOnly)
	opens   int
	loaded  bool   // data holds the file's contents
	data    []byte // while open (always, for a memory-only file)
	dirty   bool   // data differs from the committed entry (or the entry does not exist yet)
}

type handle struct{ writable bool }

func (r *rootNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr.Mode, out.Attr.Nlink = dirMode, 2
	out.Attr.Uid, out.Attr.Gid = r.fs.uid, r.fs.gid
	return 0
}

func (r *rootNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	return r.Getattr(ctx, fh, out)
}

func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	in, err := r.fs.statfs()
	if err != nil {
		return r.fs.errno("statfs", "", err)
	}
	s, err := r.fs.snapshot()
	if err != nil {
		return r.fs.errno("statfs", "", err)
	}
	free := in.TotalBlocks - min(in.AllocatedBlocks, in.TotalBlocks)
	*out = fuse.StatfsOut{
		Blocks: in.TotalBlocks, Bfree: free, Bavail: free,
		Files: uint64(len(s.names)), Ffree: uint64(nvram.MaxEntries - min(len(s.names), nvram.MaxEntries)),
		Bsize: uint32(in.Layout.AllocationBlock), Frsize: uint32(in.Layout.AllocationBlock),
		NameLen: nvram.MaxNameLen,
	}
	return 0
}

// Fsync of the directory: every change of the namespace was committed
// before its call returned (swtpm fsyncs the directory after a rename).
func (r *rootNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	return 0
}

func (r *rootNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.ENOTDIR }

func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	s, err := r.fs.snapshot()
	if err != nil {
		return nil, r.fs.errno("readdir", "", err)
	}
	names := slices.Clone(s.names)
	r.fs.mu.Lock()
	for name := range r.fs.live {
		if _, ok := s.infos[name]; !ok {
			names = append(names, name)
		}
	}
	for name := range r.fs.mem {
		if _, ok := s.infos[name]; !ok && r.fs.live[name] == nil {
			names = append(names, name)
		}
	}
	r.fs.mu.Unlock()
	slices.Sort(names)
	names = slices.Compact(names)
	list := []fuse.DirEntry{{Name: ".", Mode: syscall.S_IFDIR}, {Name: "..", Mode: syscall.S_IFDIR}}
	for _, n := range names {
		list = append(list, fuse.DirEntry{Name: n, Mode: syscall.S_IFREG})
	}
	return gofs.NewListDirStream(list), 0
}

// known returns the node that already stands for name: an open file, a
// memory-only file, or the node the tree holds under that name.
func (r *rootNode) known(name string) *entryNode {
	r.fs.mu.Lock()
	n := r.fs.live[name]
	if n == nil {
		n = r.fs.mem[name]
	}
	r.fs.mu.Unlock()
	if n != nil {
		return n
	}
	if ch := r.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*entryNode); ok {
			n.mu.Lock()
			same := n.name == name
			n.mu.Unlock()
			if same {
				return n
			}
		}
	}
	return nil
}

// inode returns n's go-fuse inode, making it on first use.
func (r *rootNode) inode(ctx context.Context, n *entryNode) *gofs.Inode {
	if n.EmbeddedInode().StableAttr().Ino != 0 {
		return n.EmbeddedInode()
	}
	return r.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG})
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n := r.known(name)
	if n == nil {
		_, ok, err := r.fs.info(name)
		if err != nil {
			return nil, r.fs.errno("lookup", name, err)
		}
		if !ok {
			return nil, syscall.ENOENT
		}
		n = &entryNode{fs: r.fs, name: name}
	}
	if errno := n.fillAttr(&out.Attr); errno != 0 {
		return nil, errno
	}
	return r.inode(ctx, n), 0
}

// Create makes a new entry (committed at its first fsync or close) or,
// without O_EXCL, opens an existing one. A name that cannot name an entry
// is EINVAL.
func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if r.fs.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	if err := nvram.ValidName(name); err != nil {
		r.fs.logOnce("refused to create %q: %v", name, err)
		return nil, nil, 0, syscall.EINVAL
	}
	f := r.fs
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	n := r.known(name)
	if n == nil {
		_, ok, err := f.info(name)
		if err != nil {
			return nil, nil, 0, f.errno("create", name, err)
		}
		if ok {
			n = &entryNode{fs: f, name: name}
		}
	}
	if n != nil {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		fh, errno := n.open(flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		n.fillAttr(&out.Attr)
		return r.inode(ctx, n), fh, 0, 0
	}
	n = &entryNode{fs: f, name: name, opens: 1, loaded: true, dirty: true, memOnly: f.isMemoryOnly(name)}
	f.mu.Lock()
	f.live[name] = n
	if n.memOnly {
		f.mem[name] = n
	}
	f.mu.Unlock()
	n.fillAttr(&out.Attr)
	return r.inode(ctx, n), &handle{writable: true}, 0, 0
}

func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if r.fs.readOnly {
		return syscall.EROFS
	}
	f := r.fs
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	n := r.known(name)
	if n != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
	}
	if n != nil && n.memOnly {
		n.detachLocked()
		return 0
	}
	_, inStore, err := f.info(name)
	if err != nil {
		return f.errno("unlink", name, err)
	}
	if !inStore && (n == nil || n.opens == 0) {
		return syscall.ENOENT
	}
	if inStore {
		if err := f.update(func(d *nvram.Directory) error { return d.Remove(name) }); err != nil {
			return f.errno("unlink", name, err)
		}
	}
	if n != nil {
		n.detachLocked()
	}
	return 0
}

// Rename is one transaction: the entry (with the file's pending changes)
// takes the new name, replacing an entry of that name.
func (r *rootNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if r.fs.readOnly {
		return syscall.EROFS
	}
	if flags&^uint32(unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL
	}
	if newParent.EmbeddedInode() != r.EmbeddedInode() {
		return syscall.EXDEV
	}
	if err := nvram.ValidName(newName); err != nil {
		r.fs.logOnce("refused to rename to %q: %v", newName, err)
		return syscall.EINVAL
	}
	if name == newName {
		return 0
	}
	f := r.fs
	if f.isMemoryOnly(name) || f.isMemoryOnly(newName) {
		return syscall.EXDEV
	}
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	_, srcInStore, err := f.info(name)
	if err != nil {
		return f.errno("rename", name, err)
	}
	_, dstInStore, err := f.info(newName)
	if err != nil {
		return f.errno("rename", newName, err)
	}
	src, dst := r.known(name), r.known(newName)
	if src == nil {
		if !srcInStore {
			return syscall.ENOENT
		}
		src = &entryNode{fs: f, name: name}
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if !srcInStore && src.opens == 0 {
		return syscall.ENOENT
	}
	if dst != nil && dst != src {
		dst.mu.Lock()
		defer dst.mu.Unlock()
	}
	if flags&unix.RENAME_NOREPLACE != 0 && (dstInStore || dst != nil && dst.opens > 0) {
		return syscall.EEXIST
	}
	err = f.update(func(d *nvram.Directory) error {
		if !src.dirty && d.Has(name) {
			return d.Rename(name, newName)
		}
		e, err := src.entryLocked(d)
		if err != nil {
			return err
		}
		e.Name = newName
		if err := d.Put(e); err != nil {
			return err
		}
		if d.Has(name) {
			return d.Remove(name)
		}
		return nil
	})
	if err != nil {
		return f.errno("rename", name, err)
	}
	src.dirty = false
	if dst != nil && dst != src {
		dst.detachLocked()
	}
	f.mu.Lock()
	if f.live[name] == src {
		delete(f.live, name)
	}
	if src.opens > 0 {
		f.live[newName] = src
	}
	f.mu.Unlock()
	src.name = newName
	return 0
}

// entryLocked returns the entry the file's contents make: an existing
// usable entry keeps its type and attributes.
func (n *entryNode) entryLocked(d *nvram.Directory) (*nvram.Entry, error) {
	e := &nvram.Entry{Name: n.name, Type: n.fs.newType(n.name)}
	if old, err := d.Get(n.name); err == nil {
		e = old
	}
	if !n.loaded {
		return nil, errors.New("BUG: committing an entry whose data is not loaded")
	}
	e.Data = n.data
	return e, nil
}

func (n *entryNode) fillAttr(a *fuse.Attr) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fillAttrLocked(a)
}

func (n *entryNode) fillAttrLocked(a *fuse.Attr) syscall.Errno {
	a.Mode, a.Nlink = fileMode, 1
	a.Uid, a.Gid = n.fs.uid, n.fs.gid
	a.Blksize = 4096
	switch {
	case n.loaded:
		a.Size = uint64(len(n.data))
	case n.name == "":
		return syscall.ENOENT
	default:
		in, ok, err := n.fs.info(n.name)
		if err != nil {
			return n.fs.errno("stat", n.name, err)
		}
		if !ok {
			return syscall.ENOENT
		}
		a.Size = uint64(in.Size)
	}
	if n.name == "" {
		a.Nlink = 0
	}
	a.Blocks = (a.Size + 511) / 512
	return 0
}

func (n *entryNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return n.fillAttr(&out.Attr)
}

// Setattr changes the size; modes, owners and times are accepted and
// ignored. A truncate without an open handle commits at once.
func (n *entryNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if size, ok := in.GetSize(); ok {
		if n.fs.readOnly {
			return syscall.EROFS
		}
		if size > nvram.MaxDirectorySize {
			return syscall.EFBIG
		}
		if errno := n.loadLocked(size == 0); errno != 0 {
			return errno
		}
		if int(size) != len(n.data) {
			n.data = resize(n.data, int(size))
			n.dirty = true
		}
		if n.opens == 0 {
			err := n.commitLocked()
			if !n.memOnly {
				n.loaded, n.data = false, nil
			}
			if err != nil {
				return n.fs.errno("truncate", n.name, err)
			}
		}
	}
	return n.fillAttrLocked(&out.Attr)
}

// resize returns b with length size; new bytes are zero.
func resize(b []byte, size int) []byte {
	if size <= len(b) {
		return b[:size]
	}
	return append(b, make([]byte, size-len(b))...)
}

// loadLocked reads the entry's data unless it is loaded; with truncating,
// an entry that cannot be read is replaced by an empty file instead.
func (n *entryNode) loadLocked(truncating bool) syscall.Errno {
	if n.loaded {
		return 0
	}
	if n.name == "" {
		return syscall.ENOENT
	}
	if truncating {
		n.loaded, n.data, n.dirty = true, nil, true
		return 0
	}
	e, err := n.fs.get(n.name)
	switch {
	case errors.Is(err, nvram.ErrUnknownMandatory), errors.Is(err, nvram.ErrDirectoryTooLarge):
		n.fs.logOnce("entry %q cannot be read: %v", n.name, err)
		return syscall.EIO
	case err != nil:
		return n.fs.errno("open", n.name, err)
	}
	n.loaded, n.data = true, e.Data
	return 0
}

func (n *entryNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, errno := n.open(flags)
	return fh, 0, errno
}

func (n *entryNode) open(flags uint32) (gofs.FileHandle, syscall.Errno) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	truncate := writable && flags&syscall.O_TRUNC != 0
	if n.fs.readOnly && (writable || flags&syscall.O_TRUNC != 0) {
		return nil, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if errno := n.loadLocked(truncate); errno != 0 {
		return nil, errno
	}
	if truncate && len(n.data) > 0 {
		n.data, n.dirty = nil, true
	}
	if n.name != "" {
		n.fs.mu.Lock()
		if other := n.fs.live[n.name]; other != nil && other != n {
			n.fs.mu.Unlock()
			n.fs.logOnce("BUG: entry %q opened through a stale node", n.name)
			return nil, syscall.ESTALE
		}
		n.fs.live[n.name] = n
		n.fs.mu.Unlock()
	}
	n.opens++
	return &handle{writable: writable}, 0
}

func (n *entryNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.loaded {
		return nil, syscall.EBADF
	}
	if off >= int64(len(n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	k := copy(dest, n.data[off:])
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *entryNode) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.fs.readOnly {
		return 0, syscall.EROFS
	}
	if h, ok := fh.(*handle); ok && !h.writable {
		return 0, syscall.EBADF
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.loaded {
		return 0, syscall.EBADF
	}
	end := off + int64(len(data))
	if end > nvram.MaxDirectorySize {
		return 0, syscall.EFBIG
	}
	if end > int64(len(n.data)) {
		n.data = resize(n.data, int(end))
	}
	copy(n.data[off:], data)
	n.dirty = true
	return uint32(len(data)), 0
}

// Flush is close(2): a changed file is committed before close returns.
func (n *entryNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fs.errno("commit", n.name, err)
	}
	return 0
}

func (n *entryNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fs.errno("fsync", n.name, err)
	}
	return 0
}

func (n *entryNode) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.releaseLocked()
	return 0
}

func (n *entryNode) releaseLocked() {
	if n.opens == 0 {
		return
	}
	n.opens--
	if n.opens > 0 {
		return
	}
	if err := n.commitLocked(); err != nil {
		n.fs.logOnce("entry %q: changes discarded at the last close: the commit failed: %v", n.name, err)
	}
	if !n.memOnly || n.name == "" {
		n.loaded, n.data, n.dirty = false, nil, false // a memory-only file keeps its contents here
	}
	if n.name != "" {
		n.fs.mu.Lock()
		if n.fs.live[n.name] == n {
			delete(n.fs.live, n.name)
		}
		n.fs.mu.Unlock()
	}
}

// commitLocked stores the file if it changed and still has a name.
func (n *entryNode) commitLocked() error {
	if !n.dirty || n.name == "" || n.memOnly {
		return nil
	}
	err := n.fs.update(func(d *nvram.Directory) error {
		e, err := n.entryLocked(d)
		if err != nil {
			return err
		}
		return d.Put(e)
	})
	if err != nil {
		return err
	}
	n.dirty = false
	return nil
}

// detachLocked makes the node nameless (unlinked or replaced); open
// handles keep its contents.
func (n *entryNode) detachLocked() {
	f := n.fs
	f.mu.Lock()
	if f.live[n.name] == n {
		delete(f.live, n.name)
	}
	if f.mem[n.name] == n {
		delete(f.mem, n.name)
	}
	f.mu.Unlock()
	n.name = ""
	if n.opens == 0 {
		n.loaded, n.data, n.dirty = false, nil, false
	}
}
