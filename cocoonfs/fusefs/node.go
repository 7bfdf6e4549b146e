package fusefs

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/cocoonfs"
)

// Modes of what the mount shows. The contents are secret, so only the
// mounting user may use them.
const (
	dirMode  = syscall.S_IFDIR | 0o700
	fileMode = syscall.S_IFREG | 0o600
)

// rootNode is the one directory: the image's files by decimal inode
// number.
type rootNode struct {
	gofs.Inode
	fs *filesystem
}

// fileNode is one file. Its lock guards its fields and its content; reads
// of a file that is not streaming hold it shared, so they run in parallel.
type fileNode struct {
	gofs.Inode
	fs *filesystem

	mu    sync.RWMutex
	ino   uint64   // the file's inode number; 0 once unlinked or replaced
	opens int      // open handles
	c     *content // while open, or changed by a truncate without a handle

	// The committed size, cached while no commit happened (sizeAt).
	size   int64
	sizeAt uint64
	sized  bool
}

// handle is an open file; the node holds the state all handles share.
type handle struct {
	writable bool
}

func (r *rootNode) fillDirAttr(a *fuse.Attr) {
	a.Mode = dirMode
	a.Nlink = 2
	a.Uid, a.Gid = r.fs.uid, r.fs.gid
}

func (r *rootNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.fillDirAttr(&out.Attr)
	return 0
}

func (r *rootNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	// Modes, owners and times are not stored: accepted, and ignored.
	r.fillDirAttr(&out.Attr)
	return 0
}

func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	sp, err := r.fs.fsys.Space()
	if err != nil {
		return r.fs.errno("statfs", 0, err)
	}
	free := sp.TotalBlocks - min(sp.AllocatedBlocks, sp.TotalBlocks)
	*out = fuse.StatfsOut{
		Blocks:  sp.TotalBlocks,
		Bfree:   free,
		Bavail:  free,
		Files:   uint64(sp.Files),
		Ffree:   free, // every file takes at least one allocation block
		Bsize:   uint32(sp.BlockSize),
		Frsize:  uint32(sp.BlockSize),
		NameLen: 20, // 2^64-2 in decimal
	}
	return 0
}

// Fsync of the directory has nothing to do: every change of the namespace
// was committed before its call returned.
func (r *rootNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	return 0
}

// Directories, device nodes and links do not exist in CocoonFS.

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

func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	return syscall.ENOTDIR
}

func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	list := []fuse.DirEntry{{Name: ".", Ino: 1, Mode: syscall.S_IFDIR}, {Name: "..", Ino: 1, Mode: syscall.S_IFDIR}}
	seen := map[uint64]bool{}
	for in, err := range r.fs.fsys.Inodes() {
		if err != nil {
			return nil, r.fs.errno("readdir", 0, err)
		}
		if in.Ino == ^uint64(0) {
			r.fs.logOnce("inode %d cannot be shown: FUSE reserves that number", in.Ino)
			continue
		}
		seen[in.Ino] = true
		list = append(list, fuse.DirEntry{Name: strconv.FormatUint(in.Ino, 10), Ino: in.Ino, Mode: syscall.S_IFREG})
	}
	// Files created and not committed yet are there too.
	r.fs.mu.Lock()
	var extra []uint64
	for ino := range r.fs.live {
		if !seen[ino] {
			extra = append(extra, ino)
		}
	}
	r.fs.mu.Unlock()
	if len(extra) > 0 {
		for _, ino := range extra {
			list = append(list, fuse.DirEntry{Name: strconv.FormatUint(ino, 10), Ino: ino, Mode: syscall.S_IFREG})
		}
		slices.SortFunc(list[2:], func(a, b fuse.DirEntry) int { return cmpU64(a.Ino, b.Ino) })
	}
	return gofs.NewListDirStream(list), 0
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// exists reports whether the image holds ino, and its size.
func (f *filesystem) stat(ino uint64) (cocoonfs.FileInfo, bool, error) {
	st, err := f.fsys.Stat(ino)
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	return st, err == nil, err
}

// child returns the node the tree holds for name, if it is a file node
// still named ino.
func (r *rootNode) child(name string, ino uint64) *fileNode {
	ch := r.GetChild(name)
	if ch == nil {
		return nil
	}
	n, ok := ch.Operations().(*fileNode)
	if !ok {
		return nil
	}
	n.mu.RLock()
	same := n.ino == ino
	n.mu.RUnlock()
	if !same {
		return nil
	}
	return n
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ino, ok := parseName(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	if n := r.fs.liveNode(ino); n != nil {
		n.fillAttr(&out.Attr)
		return n.EmbeddedInode(), 0
	}
	st, exists, err := r.fs.stat(ino)
	if err != nil {
		return nil, r.fs.errno("lookup", ino, err)
	}
	if !exists {
		return nil, syscall.ENOENT
	}
	n := r.child(name, ino)
	if n == nil {
		n = &fileNode{fs: r.fs, ino: ino}
	}
	n.mu.Lock()
	if n.c == nil {
		n.size, n.sizeAt, n.sized = st.Size, r.fs.commits.Load(), true
	}
	n.mu.Unlock()
	n.fillAttr(&out.Attr)
	if n.EmbeddedInode().StableAttr().Ino != 0 {
		return n.EmbeddedInode(), 0
	}
	r.fs.mu.Lock()
	gen := r.fs.gen(ino)
	r.fs.mu.Unlock()
	return r.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: gen}), 0
}

// Create makes a new file (committed at its first fsync or close) or,
// without O_EXCL, opens an existing one. A name that is not a user inode
// number in canonical decimal is EINVAL.
func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if r.fs.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	ino, ok := parseName(name)
	if !ok {
		r.fs.logOnce("refused to create %q: names are inode numbers in decimal, %d to %d", name, cocoonfs.FirstUserInode, uint64(1<<64-2))
		return nil, nil, 0, syscall.EINVAL
	}
	r.fs.nsMu.Lock()
	defer r.fs.nsMu.Unlock()
	n := r.fs.liveNode(ino)
	if n == nil {
		_, exists, err := r.fs.stat(ino)
		if err != nil {
			return nil, nil, 0, r.fs.errno("create", ino, err)
		}
		if exists {
			n = r.child(name, ino)
			if n == nil {
				n = &fileNode{fs: r.fs, ino: ino}
			}
		}
	}
	if n != nil {
		// The file exists: O_CREAT without O_EXCL opens it.
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		fh, errno := n.open(flags)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		n.fillAttr(&out.Attr)
		if n.EmbeddedInode().StableAttr().Ino != 0 {
			return n.EmbeddedInode(), fh, 0, 0
		}
		r.fs.mu.Lock()
		gen := r.fs.gen(ino)
		r.fs.mu.Unlock()
		return r.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: gen}), fh, 0, 0
	}
	n = &fileNode{fs: r.fs, ino: ino, opens: 1, c: newEmptyContent(r.fs.fsys, ino)}
	r.fs.mu.Lock()
	r.fs.bump(ino)
	gen := r.fs.gen(ino)
	r.fs.live[ino] = n
	r.fs.mu.Unlock()
	n.fillAttr(&out.Attr)
	return r.NewInode(ctx, n, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: ino, Gen: gen}), &handle{writable: true}, 0, 0
}

// nodeFor returns the node for ino if one is live or in the tree under
// name.
func (r *rootNode) nodeFor(name string, ino uint64) *fileNode {
	if n := r.fs.liveNode(ino); n != nil {
		return n
	}
	return r.child(name, ino)
}

// Unlink removes the file in one transaction. Handles still open keep
// reading and writing its contents, which no longer have a name and are
// never committed.
func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if r.fs.readOnly {
		return syscall.EROFS
	}
	ino, ok := parseName(name)
	if !ok {
		return syscall.ENOENT
	}
	f := r.fs
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	_, inImage, err := f.stat(ino)
	if err != nil {
		return f.errno("unlink", ino, err)
	}
	n := r.nodeFor(name, ino)
	if n != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.opens > 0 && n.c != nil {
			if err := n.c.freeze(); err != nil {
				return f.errno("unlink", ino, err)
			}
		}
	}
	live := n != nil && n.opens > 0
	if !inImage && !live {
		return syscall.ENOENT
	}
	if inImage {
		if err := f.commit(func(tx *cocoonfs.Tx) error { return tx.Remove(ino) }); err != nil {
			return f.errno("unlink", ino, err)
		}
	}
	if n != nil {
		n.detachLocked()
	}
	f.mu.Lock()
	if f.live[ino] == n {
		delete(f.live, ino)
	}
	f.bump(ino)
	f.mu.Unlock()
	return 0
}

// Rename moves the file's contents to the new number and removes the old
// one, in one transaction. CocoonFS encrypts a file's data with a key
// derived from its inode number, so the contents are re-encrypted: the
// cost is a copy of the file.
func (r *rootNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if r.fs.readOnly {
		return syscall.EROFS
	}
	if flags&^uint32(unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, RENAME_WHITEOUT
	}
	if newParent.EmbeddedInode() != r.EmbeddedInode() {
		return syscall.EXDEV // cannot happen: there is one directory
	}
	oldIno, ok := parseName(name)
	if !ok {
		return syscall.ENOENT
	}
	newIno, ok := parseName(newName)
	if !ok {
		r.fs.logOnce("refused to rename to %q: names are inode numbers in decimal, %d to %d", newName, cocoonfs.FirstUserInode, uint64(1<<64-2))
		return syscall.EINVAL
	}
	if oldIno == newIno {
		return 0
	}
	f := r.fs
	f.nsMu.Lock()
	defer f.nsMu.Unlock()
	srcSt, srcInImage, err := f.stat(oldIno)
	if err != nil {
		return f.errno("rename", oldIno, err)
	}
	_, dstInImage, err := f.stat(newIno)
	if err != nil {
		return f.errno("rename", newIno, err)
	}
	src := r.nodeFor(name, oldIno)
	dst := r.nodeFor(newName, newIno)
	if src == nil {
		if !srcInImage {
			return syscall.ENOENT
		}
		src = &fileNode{fs: f, ino: oldIno}
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.c == nil && !srcInImage {
		return syscall.ENOENT
	}
	if dst != nil {
		dst.mu.Lock()
		defer dst.mu.Unlock()
	}
	dstLive := dst != nil && dst.opens > 0
	if flags&unix.RENAME_NOREPLACE != 0 && (dstInImage || dstLive) {
		return syscall.EEXIST
	}
	if dstLive && dst.c != nil {
		if err := dst.c.freeze(); err != nil {
			return f.errno("rename", newIno, err)
		}
	}
	c := src.c
	temporary := c == nil
	if temporary {
		c = newCommittedContent(f.fsys, oldIno, srcSt.Flags, srcSt.Size)
	}
	if err := f.commitContent(c, newIno, func(tx *cocoonfs.Tx) error {
		if srcInImage {
			return tx.Remove(oldIno)
		}
		return nil
	}); err != nil {
		return f.errno("rename", oldIno, err)
	}
	src.ino = newIno
	if temporary || src.opens == 0 {
		src.dropContentLocked()
	}
	if dst != nil {
		dst.detachLocked()
	}
	f.mu.Lock()
	if f.live[oldIno] == src {
		delete(f.live, oldIno)
	}
	if f.live[newIno] == dst {
		delete(f.live, newIno)
	}
	if src.opens > 0 {
		f.live[newIno] = src
	}
	f.bump(oldIno)
	f.bump(newIno)
	f.mu.Unlock()
	return 0
}

// commitContent commits c as inode ino, with more changes from extra in
// the same transaction. The file is staged first, outside the transaction,
// so other commits go on while it is copied, and the transaction only
// adopts it. (Staging small files too is faster than writing them inside
// the transaction: a staged writer's allocation search resumes where the
// last one stopped.) On success c is clean, over the committed file ino.
func (f *filesystem) commitContent(c *content, ino uint64, extra func(tx *cocoonfs.Tx) error) error {
	if c.err != nil {
		return c.err
	}
	w, own, err := c.materialize(ino)
	if err != nil {
		return err
	}
	err = f.commit(func(tx *cocoonfs.Tx) error {
		if err := tx.Adopt(w); err != nil {
			return err
		}
		return extra(tx)
	})
	if err != nil {
		c.failed(w, own, err)
		return err
	}
	c.committed(ino)
	return nil
}

func noExtra(*cocoonfs.Tx) error { return nil }

// fillAttr describes the file. Sizes come from the open contents or the
// committed file's last blocks, never from reading it.
func (n *fileNode) fillAttr(a *fuse.Attr) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	n.fillAttrLocked(a)
}

func (n *fileNode) fillAttrLocked(a *fuse.Attr) {
	a.Mode = fileMode
	a.Nlink = 1
	if n.ino == 0 {
		a.Nlink = 0
	}
	a.Uid, a.Gid = n.fs.uid, n.fs.gid
	a.Blksize = 4096
	switch {
	case n.c != nil:
		a.Size = uint64(n.c.size)
	case n.sized:
		a.Size = uint64(n.size)
	}
	a.Blocks = (a.Size + 511) / 512
}

// sizeLocked makes sure the cached committed size is current.
func (n *fileNode) refreshLocked() error {
	if n.c != nil || n.ino == 0 {
		return nil
	}
	if at := n.fs.commits.Load(); !n.sized || n.sizeAt != at {
		st, err := n.fs.fsys.Stat(n.ino)
		if err != nil {
			return err
		}
		n.size, n.sizeAt, n.sized = st.Size, at, true
	}
	return nil
}

func (n *fileNode) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil && n.ino == 0 {
		return syscall.ENOENT
	}
	if err := n.refreshLocked(); err != nil {
		return n.fs.errno("stat", n.ino, err)
	}
	n.fillAttrLocked(&out.Attr)
	return 0
}

// Setattr changes the size (truncate); modes, owners and times are not
// stored, so changing them is accepted and has no effect. A truncate
// without an open handle (truncate(2) on the path) commits at once.
func (n *fileNode) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if size, ok := in.GetSize(); ok {
		if n.fs.readOnly {
			return syscall.EROFS
		}
		if errno := n.loadLocked(); errno != 0 {
			return errno
		}
		if err := n.c.truncate(int64(size)); err != nil {
			return n.fs.errno("truncate", n.ino, err)
		}
		if n.opens == 0 {
			err := n.commitLocked()
			if n.c.err != nil || err == nil {
				n.dropContentLocked()
			}
			if err != nil {
				return n.fs.errno("truncate", n.ino, err)
			}
		}
	} else if n.c == nil && n.ino == 0 {
		return syscall.ENOENT
	}
	if err := n.refreshLocked(); err != nil {
		return n.fs.errno("stat", n.ino, err)
	}
	n.fillAttrLocked(&out.Attr)
	return 0
}

// loadLocked gives the node its content: the committed file.
func (n *fileNode) loadLocked() syscall.Errno {
	if n.c != nil {
		return 0
	}
	if n.ino == 0 {
		return syscall.ENOENT
	}
	st, err := n.fs.fsys.Stat(n.ino)
	if err != nil {
		return n.fs.errno("open", n.ino, err)
	}
	n.c = newCommittedContent(n.fs.fsys, n.ino, st.Flags, st.Size)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, errno := n.open(flags)
	return fh, 0, errno
}

func (n *fileNode) open(flags uint32) (gofs.FileHandle, syscall.Errno) {
	writable := flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if n.fs.readOnly && (writable || flags&syscall.O_TRUNC != 0) {
		return nil, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if errno := n.loadLocked(); errno != 0 {
		return nil, errno
	}
	if flags&syscall.O_TRUNC != 0 && writable {
		if err := n.c.truncate(0); err != nil {
			return nil, n.fs.errno("open", n.ino, err)
		}
	}
	if n.ino != 0 {
		n.fs.mu.Lock()
		other := n.fs.live[n.ino]
		if other == nil {
			n.fs.live[n.ino] = n
		}
		n.fs.mu.Unlock()
		if other != nil && other != n {
			n.fs.logOnce("BUG: inode %d opened through a stale node", n.ino)
			if n.opens == 0 {
				n.dropContentLocked()
			}
			return nil, syscall.ESTALE
		}
	}
	n.opens++
	return &handle{writable: writable}, 0
}

// Read serves the file's current contents, every committed byte
// authenticated. A failure is EIO for the whole request: a short read
// would tell the kernel the file ends there.
func (n *fileNode) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.mu.RLock()
	for n.c != nil && n.c.streaming() {
		// The staged writer must be closed before it can be read back.
		n.mu.RUnlock()
		n.mu.Lock()
		var err error
		if n.c != nil && n.c.streaming() {
			err = n.c.closeStream()
		}
		ino := n.ino
		n.mu.Unlock()
		if err != nil {
			return nil, n.fs.errno("read", ino, err)
		}
		n.mu.RLock()
	}
	defer n.mu.RUnlock()
	if n.c == nil {
		return nil, syscall.EBADF
	}
	k, err := n.c.readAt(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, n.fs.errno("read", n.c.ino, err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *fileNode) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.fs.readOnly {
		return 0, syscall.EROFS
	}
	if h, ok := fh.(*handle); ok && !h.writable {
		return 0, syscall.EBADF
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return 0, syscall.EBADF
	}
	if err := n.c.writeAt(data, off); err != nil {
		return 0, n.fs.errno("write", n.c.ino, err)
	}
	return uint32(len(data)), 0
}

// Flush is close(2): a changed file is committed before close returns.
func (n *fileNode) Flush(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fs.errno("commit", n.ino, err)
	}
	return 0
}

func (n *fileNode) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.commitLocked(); err != nil {
		return n.fs.errno("fsync", n.ino, err)
	}
	return 0
}

func (n *fileNode) Release(ctx context.Context, fh gofs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.releaseLocked()
	return 0
}

// releaseLocked closes one handle; the last one commits what is still
// uncommitted (a close already did, unless it failed or data came after)
// and drops the content.
func (n *fileNode) releaseLocked() {
	if n.opens == 0 {
		return
	}
	n.opens--
	if n.opens > 0 {
		return
	}
	if err := n.commitLocked(); err != nil {
		n.fs.logOnce("inode %d: changes discarded at the last close: the commit failed: %v", n.ino, err)
	}
	n.dropContentLocked()
	if n.ino != 0 {
		n.fs.mu.Lock()
		if n.fs.live[n.ino] == n {
			delete(n.fs.live, n.ino)
		}
		n.fs.mu.Unlock()
	}
}

// commitLocked commits the file if it changed and still has a name.
func (n *fileNode) commitLocked() error {
	c := n.c
	if c == nil || n.ino == 0 || !c.dirty && c.err == nil {
		return nil
	}
	return n.fs.commitContent(c, n.ino, noExtra)
}

// dropContentLocked forgets the content, freeing staged blocks, and keeps
// the size for stat.
func (n *fileNode) dropContentLocked() {
	if n.c == nil {
		return
	}
	if !n.c.dirty && n.c.err == nil {
		n.size, n.sizeAt, n.sized = n.c.size, n.fs.commits.Load(), true
	} else {
		n.sized = false
	}
	n.c.discard()
	n.c = nil
}

// detachLocked makes the node nameless: the file was unlinked or replaced.
// Open handles keep its (frozen) contents until they close.
func (n *fileNode) detachLocked() {
	n.ino = 0
	n.sized = false
	if n.opens == 0 {
		n.dropContentLocked()
	}
}
