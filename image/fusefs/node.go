package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/image"
)

// node is one image inode as go-fuse sees it. Hard links resolve to one
// node: go-fuse keeps one per StableAttr.Ino. Its fields never change, so
// it is safe for concurrent use.
type node struct {
	gofs.Inode
	fsys *filesystem
	in   *image.Inode
}

// What a node serves.
var (
	_ gofs.InodeEmbedder      = (*node)(nil)
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeReaddirer      = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeReader         = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeFsyncer        = (*node)(nil)
	_ gofs.NodeOpendirer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeWriter         = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeTmpfiler       = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeAllocater      = (*node)(nil)
	_ gofs.NodeCopyFileRanger = (*node)(nil)
)

func (f *filesystem) newNode(in *image.Inode) *node { return &node{fsys: f, in: in} }

// typeBits returns the S_IF* bits of an inode type. A type PuzzleFS did
// not recognise shows as an empty regular file.
func typeBits(t image.InodeType) uint32 {
	switch t {
	case image.TypeDir:
		return syscall.S_IFDIR
	case image.TypeSymlink:
		return syscall.S_IFLNK
	case image.TypeFifo:
		return syscall.S_IFIFO
	case image.TypeChar:
		return syscall.S_IFCHR
	case image.TypeBlock:
		return syscall.S_IFBLK
	case image.TypeSocket:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

// fillAttr sets the attributes of in. Times stay zero (the epoch): the
// format records none.
func (f *filesystem) fillAttr(in *image.Inode, a *fuse.Attr) {
	var size uint64
	switch in.Type {
	case image.TypeFile:
		size = in.Size()
	case image.TypeSymlink:
		size = uint64(len(in.SymlinkTarget))
	}
	a.Ino = in.Ino
	a.Mode = typeBits(in.Type) | uint32(in.Permissions&0o7777)
	a.Size = size
	a.Blocks = (size + 511) / 512
	a.Blksize = 4096 // set, so go-fuse keeps our Blocks
	a.Nlink = max(f.nlink[in.Ino], 1)
	a.Uid, a.Gid = in.UID, in.GID
	if in.Type == image.TypeChar || in.Type == image.TypeBlock {
		// FUSE carries the kernel's 32-bit encoding, which Mkdev's
		// low 32 bits are for every major below 4096 and minor below 2^20.
		a.Rdev = uint32(unix.Mkdev(uint32(in.Major), uint32(in.Minor)))
	}
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fsys.fillAttr(n.in, &out.Attr)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ents, ok := n.fsys.dirs[n.in.Ino]
	if !ok {
		return nil, syscall.ENOTDIR
	}
	i := sort.Search(len(ents), func(i int) bool { return string(ents[i].Name) >= name })
	if i == len(ents) || string(ents[i].Name) != name {
		return nil, syscall.ENOENT
	}
	child := n.fsys.im.Inode(ents[i].Ino) // newFilesystem checked it exists
	n.fsys.fillAttr(child, &out.Attr)
	return n.NewInode(ctx, n.fsys.newNode(child), gofs.StableAttr{Mode: typeBits(child.Type), Ino: child.Ino}), 0
}

func (n *node) Opendir(ctx context.Context) syscall.Errno {
	if _, ok := n.fsys.dirs[n.in.Ino]; !ok {
		return syscall.ENOTDIR
	}
	return 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, ok := n.fsys.dirs[n.in.Ino]
	if !ok {
		return nil, syscall.ENOTDIR
	}
	list := make([]fuse.DirEntry, 2, 2+len(ents))
	list[0] = fuse.DirEntry{Name: ".", Ino: n.in.Ino, Mode: syscall.S_IFDIR}
	list[1] = fuse.DirEntry{Name: "..", Ino: n.fsys.parent[n.in.Ino], Mode: syscall.S_IFDIR}
	for _, e := range ents {
		list = append(list, fuse.DirEntry{Name: string(e.Name), Ino: e.Ino, Mode: typeBits(n.fsys.im.Inode(e.Ino).Type)})
	}
	return gofs.NewListDirStream(list), 0
}

// Open refuses write access. The kernel may keep the pages it read: the
// contents cannot change.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	if n.in.Type == image.TypeDir {
		return nil, 0, syscall.EISDIR
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

// Read reads through Image.ReadAt, so every byte is verified. A chunk that
// fails is EIO for the whole request: a short read would tell the kernel
// the file ends there.
func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.in.Type != image.TypeFile {
		return fuse.ReadResultData(nil), 0 // an unknown type: empty
	}
	k, err := n.fsys.im.ReadAt(n.in, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		n.fsys.readFailed(n.in, err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.in.Type != image.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return bytes.Clone(n.in.SymlinkTarget), 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.in.Xattrs {
		if string(x.Key) != attr {
			continue
		}
		if len(dest) < len(x.Value) {
			return uint32(len(x.Value)), syscall.ERANGE
		}
		return uint32(copy(dest, x.Value)), 0
	}
	return 0, syscall.ENODATA
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	size := 0
	for _, x := range n.in.Xattrs {
		size += len(x.Key) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	dest = dest[:0]
	for _, x := range n.in.Xattrs {
		dest = append(append(dest, x.Key...), 0)
	}
	return uint32(size), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	*out = fuse.StatfsOut{
		Bsize:   4096,
		Frsize:  4096,
		Blocks:  (n.fsys.bytes + 4095) / 4096,
		Files:   n.fsys.files,
		NameLen: 255,
	}
	return 0
}

// Fsync has nothing to flush.
func (n *node) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	return 0
}

// Everything that would change the tree is EROFS. The "ro" mount makes the
// kernel refuse most of it before asking; these answer if it does ask.

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }

func (n *node) Allocate(ctx context.Context, fh gofs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}
