package image

import (
	"bytes"
	"container/list"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"sync"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
)

// VerityDigest returns the PuzzleFS fs-verity digest of a blob: SHA-256,
// 4 KiB blocks, no salt, the measurement FS_IOC_MEASURE_VERITY reports.
func VerityDigest(blob []byte) Digest {
	d, err := merkle.FsverityDigest(bytes.NewReader(blob), int64(len(blob)), merkle.FsverityOptions{})
	if err != nil {
		// Only a short read or a bad option can fail, and neither can
		// happen for an in-memory blob with the default options.
		panic("image: fs-verity digest of an in-memory blob: " + err.Error())
	}
	var out Digest
	copy(out[:], d)
	return out
}

// Image is one tagged image of a layout, opened for reading. With a root
// digest (OpenImage's rootDigest), the whole fs-verity chain is checked:
// the manifest blob against the root digest, the rootfs blob against the
// manifest's annotation, and every chunk blob against the rootfs's
// fsVerityData before its bytes are used. Without one, every blob is still
// checked against its sha256 name.
//
// An Image opened with OpenImageFrom reads its blobs through a Source (a
// registry, say) and checks them all the same way.
//
// An *Image is safe for concurrent use.
type Image struct {
	// Layout is the layout the image was opened from; nil for an image
	// opened from another Source.
	Layout   *Layout
	Manifest *Manifest
	Rootfs   *Rootfs
	// Verity reports whether the fs-verity chain is being checked.
	Verity bool

	src Source

	mu    sync.Mutex
	cache blobCache
}

// ParseVerityDigest parses a root digest given as 64 hex digits.
func ParseVerityDigest(s string) (Digest, error) {
	var d Digest
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("image: fs-verity digest %q: want 64 hex digits: %w", s, fs.ErrInvalid)
	}
	copy(d[:], b)
	return d, nil
}

// OpenImage resolves tag and decodes its metadata. If rootDigest is not nil
// it is the trusted fs-verity digest of the image manifest blob (what
// `puzzlefs build` and `sealfs image build` print); the manifest and the
// rootfs are checked against the chain before they are parsed, and chunks
// as they are read. A mismatch is errs.ErrAuthentication.
func (l *Layout) OpenImage(tag string, rootDigest *Digest) (*Image, error) {
	m, err := l.Manifest(tag)
	if err != nil {
		return nil, err
	}
	im, err := openImage(context.Background(), layoutSource{l}, m, rootDigest)
	if err != nil {
		return nil, err
	}
	im.Layout = l
	return im, nil
}

// openImage checks a parsed manifest against the root digest, then
// fetches, checks and decodes its rootfs from src.
func openImage(ctx context.Context, src Source, m *Manifest, rootDigest *Digest) (*Image, error) {
	tag := m.Tag
	im := &Image{Manifest: m, Verity: rootDigest != nil, src: src}
	im.cache.init(64 << 20)
	if im.Verity {
		// The manifest was checked against the sha256 its index entry
		// (or the registry) gave; neither is covered by the chain, so the
		// manifest is re-judged here by the root digest.
		if got := VerityDigest(m.Raw); subtle.ConstantTimeCompare(got[:], rootDigest[:]) != 1 {
			return nil, fmt.Errorf("image: %q: manifest %s has fs-verity digest %s, not the trusted %s: %w", tag, m.Digest, got, *rootDigest, errs.ErrAuthentication)
		}
		if len(m.RootfsVerity) != len(Digest{}) {
			return nil, fmt.Errorf("image: %q: rootfs layer has no %s annotation to verify it by: %w", tag, AnnotationVerityRootHash, errs.ErrAuthentication)
		}
	}
	raw, err := im.fetchVerified(ctx, m.RootfsDigest, m.Rootfs.Size, maxRootfsSize)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs of %q: %w", tag, err)
	}
	if im.Verity {
		if got := VerityDigest(raw); !bytes.Equal(got[:], m.RootfsVerity) {
			return nil, fmt.Errorf("image: %q: rootfs %s has fs-verity digest %s, manifest says %x: %w", tag, m.RootfsDigest, got, m.RootfsVerity, errs.ErrAuthentication)
		}
	}
	im.Rootfs, err = ReadRootfs(raw)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs %s of %q: %w", m.RootfsDigest, tag, err)
	}
	return im, nil
}

// Root returns the root directory inode.
func (im *Image) Root() *Inode { return im.Rootfs.Inode(RootIno) }

// Inode returns the inode numbered ino, or nil.
func (im *Image) Inode(ino uint64) *Inode { return im.Rootfs.Inode(ino) }

// ReadDir returns the visible entries of a directory, sorted by name: its
// stored entries minus whiteouts, merged with the same directory in lower
// layers when the directory asks to look below.
func (im *Image) ReadDir(dir *Inode) ([]DirEntry, error) {
	if dir == nil || dir.Type != TypeDir {
		return nil, fmt.Errorf("image: inode %d is not a directory: %w", inoOf(dir), fs.ErrInvalid)
	}
	seen := map[string]bool{}
	var out []DirEntry
	d := dir
	for layer := im.layerOf(dir); ; {
		for _, e := range d.Dir.Entries {
			if seen[string(e.Name)] {
				continue
			}
			seen[string(e.Name)] = true // a whiteout hides the name below too
			in := im.Rootfs.Inode(e.Ino)
			if in == nil {
				return nil, fmt.Errorf("image: directory %d: entry %q names missing inode %d: %w", dir.Ino, e.Name, e.Ino, errs.ErrCorrupt)
			}
			if in.Type != TypeWhiteout {
				out = append(out, e)
			}
		}
		if !d.Dir.LookBelow {
			break
		}
		d, layer = im.below(dir.Ino, layer)
		if d == nil || d.Type != TypeDir {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Name, out[j].Name) < 0 })
	return out, nil
}

// layerOf returns the index of the layer that holds in.
func (im *Image) layerOf(in *Inode) int {
	for i := range im.Rootfs.Layers {
		if f := im.Rootfs.Layers[i].Find(in.Ino); f != nil {
			return i
		}
	}
	return len(im.Rootfs.Layers)
}

// below returns inode ino from the first layer under layer that has it,
// and that layer's index.
func (im *Image) below(ino uint64, layer int) (*Inode, int) {
	for i := layer + 1; i < len(im.Rootfs.Layers); i++ {
		if f := im.Rootfs.Layers[i].Find(ino); f != nil {
			return f, i
		}
	}
	return nil, len(im.Rootfs.Layers)
}

// Lookup returns the inode that name resolves to in dir. A missing or
// whited-out name is fs.ErrNotExist.
func (im *Image) Lookup(dir *Inode, name []byte) (*Inode, error) {
	ents, err := im.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	i := sort.Search(len(ents), func(i int) bool { return bytes.Compare(ents[i].Name, name) >= 0 })
	if i == len(ents) || !bytes.Equal(ents[i].Name, name) {
		return nil, fmt.Errorf("image: %q: %w", name, fs.ErrNotExist)
	}
	return im.Rootfs.Inode(ents[i].Ino), nil
}

// ErrLoop is wrapped (with errs.ErrCorrupt) when a directory is reachable by
// more than one path: a directory hard link, which would make a walk loop.
var ErrLoop = errors.New("directory reachable twice")

// Walk calls fn for every visible path in the image, depth first, entries
// in name order, starting with the root as ".". Paths use '/' and are
// relative. A directory reachable twice is ErrLoop; hard-linked non-directory
// inodes are visited once per name. If fn returns fs.SkipDir for a
// directory, its entries are skipped.
func (im *Image) Walk(fn func(path string, in *Inode) error) error {
	root := im.Root()
	if root == nil || root.Type != TypeDir {
		return fmt.Errorf("image: no root directory: %w", errs.ErrCorrupt)
	}
	seen := map[uint64]bool{}
	var walk func(path string, dir *Inode) error
	walk = func(path string, dir *Inode) error {
		if seen[dir.Ino] {
			return fmt.Errorf("image: directory inode %d at %q: %w: %w", dir.Ino, path, ErrLoop, errs.ErrCorrupt)
		}
		seen[dir.Ino] = true
		if err := fn(path, dir); err != nil {
			if errors.Is(err, fs.SkipDir) {
				return nil
			}
			return err
		}
		ents, err := im.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := checkName(e.Name); err != nil {
				return fmt.Errorf("image: directory %q: %w", path, err)
			}
			p := string(e.Name)
			if path != "." {
				p = path + "/" + p
			}
			in := im.Rootfs.Inode(e.Ino)
			if in.Type == TypeDir {
				if err := walk(p, in); err != nil {
					return err
				}
				continue
			}
			if err := fn(p, in); err != nil && !errors.Is(err, fs.SkipDir) {
				return err
			}
		}
		return nil
	}
	return walk(".", root)
}

// ReadChunk returns the c.Len bytes of file data c refers to, checked
// against the blob's sha256 and, when the image is verity-checked, against
// its recorded fs-verity digest.
func (im *Image) ReadChunk(c FileChunk) ([]byte, error) {
	b, err := im.blob(c.Blob)
	if err != nil {
		return nil, err
	}
	end := c.Blob.Offset + c.Len
	if end < c.Blob.Offset || end > uint64(len(b)) {
		return nil, fmt.Errorf("image: chunk %s: offset %d + length %d is past the blob's %d bytes: %w", c.Blob.Digest, c.Blob.Offset, c.Len, len(b), errs.ErrCorrupt)
	}
	return b[c.Blob.Offset:end], nil
}

// blob returns the uncompressed contents of a chunk blob, verified, from a
// small cache: a FUSE read of 128 KiB should not re-hash a 256 KiB chunk.
func (im *Image) blob(ref BlobRef) ([]byte, error) {
	key := blobKey{ref.Digest, ref.Compressed}
	im.mu.Lock()
	b, ok := im.cache.get(key)
	im.mu.Unlock()
	if ok {
		return b, nil
	}
	// The size is not checked against the manifest's chunk layers: puzzlefs
	// gives compressed chunks their uncompressed size there, and the sha256
	// settles what the blob is.
	stored, err := im.fetchVerified(context.Background(), ref.Digest, -1, MaxChunkSize)
	if err != nil {
		return nil, err
	}
	if err := im.checkChunkVerity(ref.Digest, stored); err != nil {
		return nil, err
	}
	b = stored
	if ref.Compressed {
		b, err = decompressChunk(ref.Digest, stored)
		if err != nil {
			return nil, err
		}
	}
	im.mu.Lock()
	im.cache.put(key, b)
	im.mu.Unlock()
	return b, nil
}

// ReadAt reads len(p) bytes of regular file in starting at off, like
// io.ReaderAt: fewer bytes only at the end of the file, with io.EOF.
func (im *Image) ReadAt(in *Inode, p []byte, off int64) (int, error) {
	if in == nil || in.Type != TypeFile {
		return 0, fmt.Errorf("image: inode %d is not a regular file: %w", inoOf(in), fs.ErrInvalid)
	}
	if off < 0 {
		return 0, fmt.Errorf("image: negative offset %d: %w", off, fs.ErrInvalid)
	}
	n := 0
	pos := uint64(0) // file offset where chunk c starts
	for _, c := range in.Chunks {
		if n == len(p) {
			break
		}
		want := uint64(off) + uint64(n)
		if want >= pos+c.Len {
			pos += c.Len
			continue
		}
		b, err := im.ReadChunk(c)
		if err != nil {
			return n, fmt.Errorf("image: inode %d: %w", in.Ino, err)
		}
		n += copy(p[n:], b[want-pos:])
		pos += c.Len
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReadFile returns the whole contents of regular file in.
func (im *Image) ReadFile(in *Inode) ([]byte, error) {
	if in == nil || in.Type != TypeFile {
		return nil, fmt.Errorf("image: inode %d is not a regular file: %w", inoOf(in), fs.ErrInvalid)
	}
	if in.Size() > 1<<40 {
		return nil, fmt.Errorf("image: inode %d: %d bytes is too large to read whole: %w", in.Ino, in.Size(), fs.ErrInvalid)
	}
	out := make([]byte, 0, in.Size())
	for i, c := range in.Chunks {
		b, err := im.ReadChunk(c)
		if err != nil {
			return nil, fmt.Errorf("image: inode %d chunk %d: %w", in.Ino, i, err)
		}
		out = append(out, b...)
	}
	return out, nil
}

// WriteFileTo streams regular file in to w, chunk by chunk, every chunk
// verified before it is written.
func (im *Image) WriteFileTo(w io.Writer, in *Inode) (int64, error) {
	if in == nil || in.Type != TypeFile {
		return 0, fmt.Errorf("image: inode %d is not a regular file: %w", inoOf(in), fs.ErrInvalid)
	}
	var n int64
	for i, c := range in.Chunks {
		b, err := im.ReadChunk(c)
		if err != nil {
			return n, fmt.Errorf("image: inode %d chunk %d: %w", in.Ino, i, err)
		}
		k, err := w.Write(b)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func inoOf(in *Inode) uint64 {
	if in == nil {
		return 0
	}
	return in.Ino
}

type blobKey struct {
	d          Digest
	compressed bool
}

// blobCache is a byte-bounded LRU of verified, uncompressed chunk blobs.
type blobCache struct {
	max, size int
	order     *list.List // of *cacheEntry, most recent first
	byKey     map[blobKey]*list.Element
}

type cacheEntry struct {
	key blobKey
	b   []byte
}

func (c *blobCache) init(max int) {
	c.max = max
	c.order = list.New()
	c.byKey = map[blobKey]*list.Element{}
}

func (c *blobCache) get(k blobKey) ([]byte, bool) {
	e, ok := c.byKey[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).b, true
}

func (c *blobCache) put(k blobKey, b []byte) {
	if _, ok := c.byKey[k]; ok || len(b) > c.max {
		return
	}
	c.byKey[k] = c.order.PushFront(&cacheEntry{k, b})
	c.size += len(b)
	for c.size > c.max {
		e := c.order.Back()
		ce := e.Value.(*cacheEntry)
		c.order.Remove(e)
		delete(c.byKey, ce.key)
		c.size -= len(ce.b)
	}
}
