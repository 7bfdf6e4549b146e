package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"sort"

	capnp "capnproto.org/go/capnp/v3"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/image/internal/metadata"
)

// ManifestVersion is the PuzzleFS metadata version this package reads
// (Rootfs.manifestVersion).
const ManifestVersion = 3

// RootIno is the inode number of the root directory.
const RootIno = 1

// InodeType is the kind of an inode: the member of the Inode.mode union.
type InodeType uint8

// The inode types, in the order of the schema's union.
const (
	TypeUnknown  InodeType = iota // mode.unknown: a file type PuzzleFS did not recognise
	TypeFifo                      // mode.fifo
	TypeChar                      // mode.chr: a character device
	TypeDir                       // mode.dir
	TypeBlock                     // mode.blk: a block device
	TypeFile                      // mode.file: a regular file
	TypeSymlink                   // mode.lnk
	TypeSocket                    // mode.sock
	TypeWhiteout                  // mode.wht: the name is deleted in this layer
)

var typeNames = [...]string{"unknown", "fifo", "chr", "dir", "blk", "file", "lnk", "sock", "wht"}

// String returns the schema's name of the union member ("dir", "file", ...).
func (t InodeType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("InodeType(%d)", t)
}

// Rootfs is the decoded metadata blob of a PuzzleFS image.
type Rootfs struct {
	// Layers are the inode vectors, newest (top) first.
	Layers []Layer
	// Verity maps each chunk blob's sha256 to its fs-verity digest, in the
	// stored (sorted) order.
	Verity []VerityEntry
	// ManifestVersion is always ManifestVersion (3) in a decoded Rootfs.
	ManifestVersion uint64
}

// Layer is one InodeVector: the inodes of one layer, sorted by Ino.
type Layer struct {
	Inodes []Inode
}

// VerityEntry is one fsVerityData element.
type VerityEntry struct {
	Digest Digest // the chunk blob's sha256
	Verity Digest // its fs-verity digest (SHA-256, 4 KiB blocks, no salt)
}

// Inode is one inode. Fields that do not apply to its Type are zero.
type Inode struct {
	Ino         uint64
	Type        InodeType
	UID, GID    uint32
	Permissions uint16 // mode & 0o7777: rwx bits, setuid, setgid, sticky

	Major, Minor uint64      // TypeChar, TypeBlock
	Dir          *Dir        // TypeDir
	Chunks       []FileChunk // TypeFile: the file's bytes in order; empty for an empty file

	// HasAdditional reports whether the InodeAdditional struct was present
	// (PuzzleFS writes it only for symlinks and inodes with xattrs).
	HasAdditional bool
	Xattrs        []Xattr // in stored order
	SymlinkTarget []byte  // TypeSymlink
}

// Size returns a regular file's size, the sum of its chunk lengths (0 for
// other types). ReadRootfs has checked that the sum does not overflow.
func (in *Inode) Size() uint64 {
	var n uint64
	for _, c := range in.Chunks {
		n += c.Len
	}
	return n
}

// Mode returns the inode's type and permission bits as an fs.FileMode.
func (in *Inode) Mode() fs.FileMode {
	m := fs.FileMode(in.Permissions & 0o777)
	if in.Permissions&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.Permissions&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.Permissions&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.Type {
	case TypeFifo:
		m |= fs.ModeNamedPipe
	case TypeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case TypeDir:
		m |= fs.ModeDir
	case TypeBlock:
		m |= fs.ModeDevice
	case TypeSymlink:
		m |= fs.ModeSymlink
	case TypeSocket:
		m |= fs.ModeSocket
	case TypeUnknown, TypeWhiteout:
		m |= fs.ModeIrregular
	}
	return m
}

// Dir is a directory's entry list.
type Dir struct {
	Entries []DirEntry // in stored order (sorted by name when PuzzleFS wrote it)
	// LookBelow asks readers to merge the entries of the same directory in
	// lower layers.
	LookBelow bool
}

// DirEntry is one name in a directory.
type DirEntry struct {
	Ino  uint64
	Name []byte // raw bytes; ReadRootfs refuses "", ".", "..", '/' and NUL
}

// FileChunk is one piece of a regular file: Len bytes of blob Blob.Digest
// from offset Blob.Offset of its uncompressed contents.
type FileChunk struct {
	Blob BlobRef
	Len  uint64
}

// BlobRef names a chunk blob.
type BlobRef struct {
	Digest     Digest // sha256 of the stored blob: its name under blobs/sha256
	Offset     uint64 // offset in the uncompressed blob
	Compressed bool   // the blob is stored as seekable zstd
}

// Xattr is one extended attribute.
type Xattr struct {
	Key, Value []byte
}

// Inode returns the inode with number ino from the layers, searched top
// down (the first layer holding ino wins), or nil. A whiteout inode is
// returned as such; the caller decides that its name does not exist.
func (r *Rootfs) Inode(ino uint64) *Inode {
	for li := range r.Layers {
		if in := r.Layers[li].Find(ino); in != nil {
			return in
		}
	}
	return nil
}

// Find returns the inode with number ino in this layer, or nil.
func (l *Layer) Find(ino uint64) *Inode {
	i := sort.Search(len(l.Inodes), func(i int) bool { return l.Inodes[i].Ino >= ino })
	if i < len(l.Inodes) && l.Inodes[i].Ino == ino {
		return &l.Inodes[i]
	}
	return nil
}

// VerityOf returns the fs-verity digest recorded for chunk blob d.
func (r *Rootfs) VerityOf(d Digest) (Digest, bool) {
	i := sort.Search(len(r.Verity), func(i int) bool { return bytes.Compare(r.Verity[i].Digest[:], d[:]) >= 0 })
	if i < len(r.Verity) && r.Verity[i].Digest == d {
		return r.Verity[i].Verity, true
	}
	return Digest{}, false
}

// Rootfs reads the manifest's rootfs blob (checking its size and sha256
// before decoding it) and decodes it with ReadRootfs.
func (l *Layout) Rootfs(m *Manifest) (*Rootfs, error) {
	b, _, err := l.ReadDescriptor(m.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs of %q: %w", m.Tag, err)
	}
	r, err := ReadRootfs(b)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs %s of %q: %w", m.RootfsDigest, m.Tag, err)
	}
	return r, nil
}

// ReadRootfs decodes a rootfs blob: an unpacked Cap'n Proto message whose
// root is a Rootfs struct with manifestVersion 3. It checks what readers rely
// on and returns errs.ErrCorrupt (wrapping the Cap'n Proto library's error
// where there is one) for: malformed messages, digests that are not 32
// bytes, layers not strictly sorted by inode number, directory entries
// naming an inode no layer has, empty names, names with '/' or NUL, "." and
// "..", duplicate names in a directory, chunk offset+length or file sizes
// that overflow, and a missing root directory. Another manifestVersion or an
// inode type this schema does not know is errs.ErrUnsupported. The result
// does not alias data.
func ReadRootfs(data []byte) (r *Rootfs, err error) {
	defer func() {
		// The capnp library reports malformed input as errors; this guards
		// against a panic in it all the same, since the input is hostile.
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("image: rootfs: decoder panic: %v: %w", p, errs.ErrCorrupt)
		}
	}()
	msg, err := capnp.Unmarshal(data)
	if err != nil {
		return nil, corrupt("message", err)
	}
	// Bound the work a hostile message can cause (pointers shared by many
	// parents, lists of zero-sized elements): the library charges every
	// struct and list fetched against this budget.
	msg.TraverseLimit = 8*uint64(len(data)) + 1<<20
	msg.DepthLimit = 64
	root, err := metadata.ReadRootRootfs(msg)
	if err != nil {
		return nil, corrupt("root", err)
	}
	r = &Rootfs{ManifestVersion: root.ManifestVersion()}
	if r.ManifestVersion != ManifestVersion {
		return nil, fmt.Errorf("image: rootfs: manifestVersion %d, want %d: %w", r.ManifestVersion, ManifestVersion, errs.ErrUnsupported)
	}
	d := decoder{}
	layers, err := root.Metadatas()
	if err != nil {
		return nil, corrupt("metadatas", err)
	}
	r.Layers = make([]Layer, layers.Len())
	for li := range r.Layers {
		iv := layers.At(li)
		inodes, err := iv.Inodes()
		if err != nil {
			return nil, corrupt(fmt.Sprintf("metadatas[%d].inodes", li), err)
		}
		l := &r.Layers[li]
		l.Inodes = make([]Inode, inodes.Len())
		for i := range l.Inodes {
			if err := d.inode(&l.Inodes[i], inodes.At(i)); err != nil {
				return nil, fmt.Errorf("image: rootfs: layer %d inode index %d: %w", li, i, err)
			}
			if i > 0 && l.Inodes[i].Ino <= l.Inodes[i-1].Ino {
				return nil, fmt.Errorf("image: rootfs: layer %d: inode %d follows inode %d, want strictly increasing numbers: %w", li, l.Inodes[i].Ino, l.Inodes[i-1].Ino, errs.ErrCorrupt)
			}
		}
	}
	vd, err := root.FsVerityData()
	if err != nil {
		return nil, corrupt("fsVerityData", err)
	}
	r.Verity = make([]VerityEntry, vd.Len())
	for i := range r.Verity {
		e := vd.At(i)
		dg, err := e.Digest()
		if err != nil {
			return nil, corrupt(fmt.Sprintf("fsVerityData[%d].digest", i), err)
		}
		vr, err := e.Verity()
		if err != nil {
			return nil, corrupt(fmt.Sprintf("fsVerityData[%d].verity", i), err)
		}
		if len(dg) != len(Digest{}) || len(vr) != len(Digest{}) {
			return nil, fmt.Errorf("image: rootfs: fsVerityData[%d]: digest of %d and verity of %d bytes, want 32: %w", i, len(dg), len(vr), errs.ErrCorrupt)
		}
		copy(r.Verity[i].Digest[:], dg)
		copy(r.Verity[i].Verity[:], vr)
	}
	// PuzzleFS writes the map sorted (a BTreeMap); VerityOf relies on order.
	sort.SliceStable(r.Verity, func(i, j int) bool { return bytes.Compare(r.Verity[i].Digest[:], r.Verity[j].Digest[:]) < 0 })
	for i := 1; i < len(r.Verity); i++ {
		if r.Verity[i].Digest == r.Verity[i-1].Digest {
			return nil, fmt.Errorf("image: rootfs: fsVerityData: blob %s listed twice: %w", r.Verity[i].Digest, errs.ErrCorrupt)
		}
	}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("image: rootfs: %w", err)
	}
	return r, nil
}

// check validates the cross-references of a decoded rootfs.
func (r *Rootfs) check() error {
	if len(r.Layers) == 0 {
		return fmt.Errorf("no layers: %w", errs.ErrCorrupt)
	}
	root := r.Inode(RootIno)
	if root == nil || root.Type != TypeDir {
		return fmt.Errorf("inode %d is not a directory: %w", RootIno, errs.ErrCorrupt)
	}
	seen := map[string]bool{}
	for li := range r.Layers {
		for ii := range r.Layers[li].Inodes {
			in := &r.Layers[li].Inodes[ii]
			if in.Dir == nil {
				continue
			}
			clear(seen)
			for _, e := range in.Dir.Entries {
				if err := checkName(e.Name); err != nil {
					return fmt.Errorf("layer %d directory inode %d: %w", li, in.Ino, err)
				}
				if seen[string(e.Name)] {
					return fmt.Errorf("layer %d directory inode %d: name %q appears twice: %w", li, in.Ino, e.Name, errs.ErrCorrupt)
				}
				seen[string(e.Name)] = true
				if r.Inode(e.Ino) == nil {
					return fmt.Errorf("layer %d directory inode %d: entry %q names inode %d, which no layer has: %w", li, in.Ino, e.Name, e.Ino, errs.ErrCorrupt)
				}
			}
		}
	}
	return nil
}

// ErrBadName is wrapped (with errs.ErrCorrupt) by errors about directory
// entry names that could escape or confuse a path: empty, ".", "..", or
// containing '/' or NUL.
var ErrBadName = errors.New("unsafe file name")

func checkName(n []byte) error {
	switch {
	case len(n) == 0, string(n) == ".", string(n) == "..",
		bytes.IndexByte(n, '/') >= 0, bytes.IndexByte(n, 0) >= 0:
		return fmt.Errorf("name %q: %w: %w", n, ErrBadName, errs.ErrCorrupt)
	}
	return nil
}

func corrupt(what string, err error) error {
	return fmt.Errorf("image: rootfs: %s: %w: %w", what, err, errs.ErrCorrupt)
}

type decoder struct{}

func cp(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func (decoder) inode(out *Inode, in metadata.Inode) error {
	out.Ino = in.Ino()
	out.UID, out.GID, out.Permissions = in.Uid(), in.Gid(), in.Permissions()
	wrap := func(what string, err error) error {
		return fmt.Errorf("inode %d: %s: %w: %w", out.Ino, what, err, errs.ErrCorrupt)
	}
	if out.Permissions&^0o7777 != 0 {
		return fmt.Errorf("inode %d: permissions %#o has bits outside 0o7777: %w", out.Ino, out.Permissions, errs.ErrCorrupt)
	}
	mode := in.Mode()
	switch w := mode.Which(); w {
	case metadata.Inode_mode_Which_unknown:
		out.Type = TypeUnknown
	case metadata.Inode_mode_Which_fifo:
		out.Type = TypeFifo
	case metadata.Inode_mode_Which_lnk:
		out.Type = TypeSymlink
	case metadata.Inode_mode_Which_sock:
		out.Type = TypeSocket
	case metadata.Inode_mode_Which_wht:
		out.Type = TypeWhiteout
	case metadata.Inode_mode_Which_chr:
		c, err := mode.Chr()
		if err != nil {
			return wrap("chr", err)
		}
		out.Type, out.Major, out.Minor = TypeChar, c.Major(), c.Minor()
	case metadata.Inode_mode_Which_blk:
		b, err := mode.Blk()
		if err != nil {
			return wrap("blk", err)
		}
		out.Type, out.Major, out.Minor = TypeBlock, b.Major(), b.Minor()
	case metadata.Inode_mode_Which_dir:
		dir, err := mode.Dir()
		if err != nil {
			return wrap("dir", err)
		}
		ents, err := dir.Entries()
		if err != nil {
			return wrap("dir.entries", err)
		}
		out.Type = TypeDir
		out.Dir = &Dir{LookBelow: dir.LookBelow(), Entries: make([]DirEntry, ents.Len())}
		for i := range out.Dir.Entries {
			e := ents.At(i)
			name, err := e.Name()
			if err != nil {
				return wrap(fmt.Sprintf("dir.entries[%d].name", i), err)
			}
			out.Dir.Entries[i] = DirEntry{Ino: e.Ino(), Name: cp(name)}
		}
	case metadata.Inode_mode_Which_file:
		chunks, err := mode.File()
		if err != nil {
			return wrap("file", err)
		}
		out.Type = TypeFile
		out.Chunks = make([]FileChunk, chunks.Len())
		var size uint64
		for i := range out.Chunks {
			c := chunks.At(i)
			b, err := c.Blob()
			if err != nil {
				return wrap(fmt.Sprintf("file[%d].blob", i), err)
			}
			dg, err := b.Digest()
			if err != nil {
				return wrap(fmt.Sprintf("file[%d].blob.digest", i), err)
			}
			if len(dg) != len(Digest{}) {
				return fmt.Errorf("inode %d: file[%d]: blob digest of %d bytes, want 32: %w", out.Ino, i, len(dg), errs.ErrCorrupt)
			}
			fc := FileChunk{Len: c.Len(), Blob: BlobRef{Offset: b.Offset(), Compressed: b.Compressed()}}
			copy(fc.Blob.Digest[:], dg)
			if fc.Blob.Offset+fc.Len < fc.Blob.Offset || size+fc.Len < size {
				return fmt.Errorf("inode %d: file[%d]: offset %d + length %d overflows: %w", out.Ino, i, fc.Blob.Offset, fc.Len, errs.ErrCorrupt)
			}
			size += fc.Len
			out.Chunks[i] = fc
		}
	default:
		return fmt.Errorf("inode %d: mode union member %d: %w", out.Ino, w, errs.ErrUnsupported)
	}
	if in.HasAdditional() {
		add, err := in.Additional()
		if err != nil {
			return wrap("additional", err)
		}
		out.HasAdditional = true
		xs, err := add.Xattrs()
		if err != nil {
			return wrap("additional.xattrs", err)
		}
		out.Xattrs = make([]Xattr, xs.Len())
		for i := range out.Xattrs {
			k, err := xs.At(i).Key()
			if err != nil {
				return wrap(fmt.Sprintf("xattrs[%d].key", i), err)
			}
			v, err := xs.At(i).Val()
			if err != nil {
				return wrap(fmt.Sprintf("xattrs[%d].val", i), err)
			}
			if len(k) == 0 {
				return fmt.Errorf("inode %d: xattrs[%d]: empty key: %w", out.Ino, i, errs.ErrCorrupt)
			}
			out.Xattrs[i] = Xattr{Key: cp(k), Value: cp(v)}
		}
		t, err := add.SymlinkTarget()
		if err != nil {
			return wrap("additional.symlinkTarget", err)
		}
		out.SymlinkTarget = cp(t)
	}
	if out.Type == TypeSymlink && len(out.SymlinkTarget) == 0 {
		return fmt.Errorf("inode %d: symlink without a target: %w", out.Ino, errs.ErrCorrupt)
	}
	return nil
}
