package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/sealfs/sealfs/cdc"
)

// BuildOptions control Build.
type BuildOptions struct {
	// Base is the tag of an image in the same layout to stack the new one
	// on: paths that exist in it keep their inode numbers, names it has and
	// the tree lacks become whiteouts, and its layers stay below the new one.
	Base string
	// Compress stores each chunk as seekable zstd when that is smaller.
	Compress bool
}

// BuildResult describes a built image.
type BuildResult struct {
	Tag string
	// RootDigest is the fs-verity digest of the manifest blob: the root of
	// trust to give to OpenImage, `image mount --digest` and puzzlefs.
	RootDigest Digest
	// Manifest is the manifest blob's sha256 (its name in the layout).
	Manifest Digest
	Inodes   int   // inodes in the new layer
	Files    int   // regular files (hard links counted once)
	Bytes    int64 // bytes of regular file data

	Chunks       int   // chunks the data was cut into
	NewChunks    int   // chunk blobs this build added to the layout
	ReusedChunks int   // chunks whose blob the layout already had
	NewBytes     int64 // stored bytes of the added chunk blobs
	ReusedBytes  int64 // stored bytes of the reused ones
}

// Chunking parameters of PuzzleFS: FastCDC v2020, normalization level 1.
const (
	chunkMin = 16 << 10
	chunkAvg = 64 << 10
	chunkMax = 256 << 10
	// seekable zstd as puzzlefs writes it: 4 KiB frames, level 3.
	zstdFrame = 4 << 10
)

// ValidTag reports whether tag is a valid OCI tag: the image-layout tag
// grammar [A-Za-z0-9_][A-Za-z0-9._-]{0,127}; anything else could not be
// named in a reference and is refused early. (Checked by hand: compiling the
// equivalent regexp at start-up costs every sealfs command half a
// millisecond.)
func ValidTag(tag string) bool {
	if len(tag) == 0 || len(tag) > 128 {
		return false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// Build makes a PuzzleFS image of the directory tree src and tags it in the
// OCI layout ociDir (created if needed). The result is what puzzlefs build
// writes for the same tree, byte for byte, with these differences, each
// a fix: xattrs are sorted by name (puzzlefs keeps the file system's order);
// with Compress, a chunk stored raw gets the fs-verity digest of its stored
// bytes (puzzlefs records that of the discarded compressed bytes, which no
// verity-checked reader accepts), its layer keeps the plain media type, and
// chunk descriptors give the stored size; whiteouts never share an inode
// number with a live inode.
//
// Nothing in the tree is followed out of it: symlinks are stored as links,
// mount points as empty directories. Regular files must not change while
// they are read; a file whose size or identity changes is an error. Blobs
// are written under their sha256 names and synced before the manifest, and
// index.json is replaced atomically last, so an interrupted build leaves the
// layout's tags as they were.
func Build(ctx context.Context, src, ociDir, tag string, opts BuildOptions) (*BuildResult, error) {
	if !ValidTag(tag) {
		return nil, fmt.Errorf("image: tag %q: want letters, digits, '_', '.' or '-', at most 128, not starting with '.' or '-': %w", tag, fs.ErrInvalid)
	}
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return nil, fmt.Errorf("image: source: %w", err)
	}
	lay, err := createLayout(ociDir)
	if err != nil {
		return nil, err
	}
	b := &builder{ctx: ctx, lay: lay, opts: opts, res: &BuildResult{Tag: tag}, hostIno: map[devIno]uint64{}, nextIno: 2}
	if opts.Base != "" {
		if !ValidTag(opts.Base) {
			return nil, fmt.Errorf("image: base tag %q is not a valid tag: %w", opts.Base, fs.ErrInvalid)
		}
		b.base, err = lay.OpenImage(opts.Base, nil)
		if err != nil {
			return nil, fmt.Errorf("image: base %q: %w", opts.Base, err)
		}
		for _, l := range b.base.Rootfs.Layers {
			if n := len(l.Inodes); n > 0 && l.Inodes[n-1].Ino >= b.nextIno {
				b.nextIno = l.Inodes[n-1].Ino + 1
			}
		}
	}
	if err := b.walk(root); err != nil {
		return nil, err
	}
	if err := b.chunkFiles(); err != nil {
		return nil, err
	}
	if err := b.finish(); err != nil {
		return nil, err
	}
	return b.res, nil
}

type devIno struct{ dev, ino uint64 }

// node is an entry of the tree being built.
type node struct {
	ino   uint64
	path  string // on the host
	st    *syscall.Stat_t
	inode Inode
}

type builder struct {
	ctx  context.Context
	lay  *Layout
	opts BuildOptions
	res  *BuildResult
	base *Image

	nextIno uint64
	hostIno map[devIno]uint64
	rootDev uint64
	inodes  []*node // every inode of the new layer
	files   []*node // regular files, in stream order

	whiteouts []whiteoutRef

	layers   []Descriptor          // chunk layers, in stream order
	verity   map[Digest]Digest     // chunk sha256 → fs-verity digest
	seenBlob map[Digest]blobResult // chunks already stored by this build
}

// walk numbers and renders the tree: directories depth first in name
// order, and at each directory all its entries numbered before any
// subdirectory is entered, as puzzlefs's walk does.
func (b *builder) walk(root string) error {
	st, err := lstat(root)
	if err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("image: source %s is not a directory: %w", root, fs.ErrInvalid)
	}
	b.rootDev = st.Dev
	rootNode, err := b.newNode(root, st, RootIno)
	if err != nil {
		return err
	}
	return b.walkDir(rootNode, "/")
}

func lstat(p string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("image: %w", &fs.PathError{Op: "lstat", Path: p, Err: err})
	}
	return &st, nil
}

func (b *builder) newNode(p string, st *syscall.Stat_t, ino uint64) (*node, error) {
	n := &node{ino: ino, path: p, st: st}
	in := &n.inode
	in.Ino = ino
	in.UID, in.GID = st.Uid, st.Gid
	in.Permissions = uint16(st.Mode & 0o7777)
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		in.Type = TypeDir
		in.Dir = &Dir{}
	case syscall.S_IFREG:
		in.Type = TypeFile
		b.files = append(b.files, n)
	case syscall.S_IFLNK:
		in.Type = TypeSymlink
		t, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		in.SymlinkTarget = []byte(t)
	case syscall.S_IFIFO:
		in.Type = TypeFifo
	case syscall.S_IFCHR, syscall.S_IFBLK:
		in.Type = TypeChar
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			in.Type = TypeBlock
		}
		in.Major, in.Minor = uint64(unix.Major(st.Rdev)), uint64(unix.Minor(st.Rdev))
	case syscall.S_IFSOCK:
		in.Type = TypeSocket
	default:
		in.Type = TypeUnknown
	}
	xs, err := readXattrs(p)
	if err != nil {
		return nil, err
	}
	in.Xattrs = xs
	b.inodes = append(b.inodes, n)
	return n, nil
}

// readXattrs returns a file's extended attributes (of a symlink itself, not
// its target), sorted by name so that the image does not depend on the order
// the file system lists them in.
func readXattrs(p string) ([]Xattr, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image: %w", &fs.PathError{Op: "llistxattr", Path: p, Err: err})
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("image: %w", &fs.PathError{Op: "llistxattr", Path: p, Err: err})
	}
	var out []Xattr
	for _, k := range bytes.Split(buf[:size], []byte{0}) {
		if len(k) == 0 {
			continue
		}
		v, err := getXattr(p, string(k))
		if errors.Is(err, unix.ENODATA) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("image: %w", &fs.PathError{Op: "lgetxattr " + string(k), Path: p, Err: err})
		}
		out = append(out, Xattr{Key: append([]byte{}, k...), Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out, nil
}

func getXattr(p, k string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, k, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// baseLookup resolves a path ("/a/b") in the base image the way puzzlefs
// does for a delta: through the stored entries, whiteouts included.
func (b *builder) baseLookup(p string) *Inode {
	if b.base == nil {
		return nil
	}
	in := b.base.Root()
	for _, name := range bytes.Split([]byte(p), []byte{'/'}) {
		if len(name) == 0 {
			continue
		}
		if in == nil || in.Type != TypeDir {
			return nil
		}
		var next *Inode
		for _, e := range in.Dir.Entries {
			if bytes.Equal(e.Name, name) {
				next = b.base.Rootfs.Inode(e.Ino)
				break
			}
		}
		in = next
	}
	return in
}

func (b *builder) walkDir(dir *node, rel string) error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir.path) // sorted by name, bytewise
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	names := make(map[string]bool, len(ents))
	for _, e := range ents {
		names[e.Name()] = true
	}
	// Names the base has here and the tree does not become whiteouts,
	// listed before the live entries (as puzzlefs lists them).
	if old := b.baseLookup(rel); old != nil && old.Type == TypeDir {
		for _, e := range old.Dir.Entries {
			if !names[string(e.Name)] {
				b.whiteout(dir, e)
			}
		}
	}
	var subdirs []*node
	for _, e := range ents {
		p := filepath.Join(dir.path, e.Name())
		childRel := rel + e.Name()
		st, err := lstat(p)
		if err != nil {
			return err
		}
		ino := b.nextIno
		if old := b.baseLookup(childRel); old != nil {
			ino = old.Ino
		} else {
			b.nextIno++
		}
		key := devIno{uint64(st.Dev), st.Ino}
		if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			if first, ok := b.hostIno[key]; ok { // another name of a file already seen
				dir.inode.Dir.Entries = append(dir.inode.Dir.Entries, DirEntry{Ino: first, Name: []byte(e.Name())})
				continue
			}
		}
		b.hostIno[key] = ino
		dir.inode.Dir.Entries = append(dir.inode.Dir.Entries, DirEntry{Ino: ino, Name: []byte(e.Name())})
		n, err := b.newNode(p, st, ino)
		if err != nil {
			return err
		}
		// Directories on other file systems are kept, empty.
		if n.inode.Type == TypeDir && uint64(st.Dev) == b.rootDev {
			subdirs = append(subdirs, n)
		}
	}
	for _, sd := range subdirs {
		if err := b.walkDir(sd, rel+filepath.Base(sd.path)+"/"); err != nil {
			return err
		}
	}
	return nil
}

// whiteout records a deleted name. puzzlefs gives the whiteout the old
// inode number; fixWhiteouts renumbers the ones that would collide.
func (b *builder) whiteout(dir *node, e DirEntry) {
	dir.inode.Dir.Entries = append(dir.inode.Dir.Entries, DirEntry{Ino: e.Ino, Name: append([]byte{}, e.Name...)})
	n := &node{ino: e.Ino, inode: Inode{Ino: e.Ino, Type: TypeWhiteout, Permissions: 0o644}}
	b.inodes = append(b.inodes, n)
	b.whiteouts = append(b.whiteouts, whiteoutRef{n, dir, len(dir.inode.Dir.Entries) - 1})
}

type whiteoutRef struct {
	n     *node
	dir   *node
	entry int
}

// fixWhiteouts gives a fresh inode number to each whiteout whose old number
// is still used by a live name (another hard link of a deleted file) or by
// an earlier whiteout (several names of one deleted inode): puzzlefs writes
// the duplicate, which breaks the sorted inode vector readers search.
func (b *builder) fixWhiteouts() {
	used := map[uint64]bool{}
	for _, n := range b.inodes {
		if n.inode.Type != TypeWhiteout {
			used[n.ino] = true
		}
	}
	for _, w := range b.whiteouts {
		if used[w.n.ino] {
			w.n.ino = b.nextIno
			w.n.inode.Ino = b.nextIno
			w.dir.inode.Dir.Entries[w.entry].Ino = b.nextIno
			b.nextIno++
		}
		used[w.n.ino] = true
	}
}

// blobResult is a stored chunk.
type blobResult struct {
	digest     Digest
	verity     Digest
	compressed bool
	size       int64 // stored bytes
	isNew      bool
}

type chunkJob struct {
	data []byte
	res  blobResult
	err  error
	done chan struct{}
}

// filesReader streams the regular files' bytes back to back, in walk
// order, checking that each file is still the one walked and still has the
// size it had.
type filesReader struct {
	files []*node
	i     int
	cur   *os.File
	left  int64
}

func (r *filesReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if r.i == len(r.files) {
				return 0, io.EOF
			}
			n := r.files[r.i]
			r.i++
			if n.st.Size == 0 {
				continue
			}
			f, err := os.OpenFile(n.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return 0, fmt.Errorf("image: %w", err)
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Ino != n.st.Ino || st.Dev != n.st.Dev {
				f.Close()
				return 0, fmt.Errorf("image: %s was replaced during the build", n.path)
			}
			r.cur, r.left = f, n.st.Size
		}
		if r.left == 0 {
			// The file must end where it ended when it was walked.
			var one [1]byte
			k, _ := r.cur.Read(one[:])
			name := r.cur.Name()
			r.cur.Close()
			r.cur = nil
			if k != 0 {
				return 0, fmt.Errorf("image: %s grew during the build", name)
			}
			continue
		}
		if int64(len(p)) > r.left {
			p = p[:r.left]
		}
		k, err := r.cur.Read(p)
		r.left -= int64(k)
		if k > 0 {
			return k, nil
		}
		if err == io.EOF {
			return 0, fmt.Errorf("image: %s shrank during the build", r.cur.Name())
		}
		if err != nil {
			return 0, fmt.Errorf("image: %w", err)
		}
	}
}

func (r *filesReader) close() {
	if r.cur != nil {
		r.cur.Close()
	}
}

// chunkFiles cuts the files' bytes into chunks, stores them (hashing,
// compressing and writing on every core, in order) and gives each file its
// chunk list.
func (b *builder) chunkFiles() error {
	b.verity = map[Digest]Digest{}
	b.seenBlob = map[Digest]blobResult{}
	src := &filesReader{files: b.files}
	defer src.close()
	opts := cdc.DefaultOptions()
	opts.Min, opts.Avg, opts.Max = chunkMin, chunkAvg, chunkMax
	chunker := cdc.NewChunker(src, opts)

	workers := runtime.GOMAXPROCS(0)
	jobs := make(chan *chunkJob, workers)
	ordered := make(chan *chunkJob, 2*workers)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var enc *zstd.Encoder
			for j := range jobs {
				if ctx.Err() == nil {
					j.res, j.err = b.storeChunk(j.data, &enc)
				} else {
					j.err = ctx.Err()
				}
				close(j.done)
			}
		}()
	}
	var cutErr error
	go func() {
		defer close(ordered)
		defer close(jobs)
		for ctx.Err() == nil {
			_, data, err := chunker.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				cutErr = err
				cancel()
				return
			}
			j := &chunkJob{data: append([]byte(nil), data...), done: make(chan struct{})}
			select {
			case ordered <- j:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				close(j.done)
				return
			}
		}
	}()

	fileIdx, fileUsed := 0, uint64(0)
	nextFile := func() {
		for fileIdx < len(b.files) && b.files[fileIdx].st.Size == 0 {
			fileIdx++
		}
	}
	nextFile()
	var err error
	for j := range ordered {
		<-j.done
		if err == nil && j.err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			continue // drain
		}
		if j.err != nil {
			err = j.err
			cancel()
			continue
		}
		b.recordChunk(j.res)
		for used := uint64(0); used < uint64(len(j.data)); {
			if fileIdx == len(b.files) {
				err = fmt.Errorf("image: the files yielded more bytes than they had when walked")
				cancel()
				break
			}
			f := b.files[fileIdx]
			room := min(uint64(f.st.Size)-fileUsed, uint64(len(j.data))-used)
			f.inode.Chunks = append(f.inode.Chunks, FileChunk{
				Blob: BlobRef{Digest: j.res.digest, Offset: used, Compressed: j.res.compressed},
				Len:  room,
			})
			used += room
			fileUsed += room
			if fileUsed == uint64(f.st.Size) {
				fileIdx++
				fileUsed = 0
				nextFile()
			}
		}
	}
	wg.Wait()
	if cutErr != nil {
		return cutErr
	}
	if err != nil {
		return err
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if fileIdx != len(b.files) {
		return fmt.Errorf("image: the files yielded fewer bytes than they had when walked")
	}
	for _, f := range b.files {
		b.res.Files++
		b.res.Bytes += f.st.Size
	}
	return nil
}

func (b *builder) recordChunk(r blobResult) {
	b.res.Chunks++
	mt := MediaTypeChunk
	if r.compressed {
		mt = MediaTypeChunkZstd
	}
	b.layers = append(b.layers, Descriptor{MediaType: mt, Digest: r.digest.OCI(), Size: r.size})
	b.verity[r.digest] = r.verity
	if _, ok := b.seenBlob[r.digest]; ok {
		return // a repeat within this build: stored once, counted once
	}
	b.seenBlob[r.digest] = r
	if r.isNew {
		b.res.NewChunks++
		b.res.NewBytes += r.size
	} else {
		b.res.ReusedChunks++
		b.res.ReusedBytes += r.size
	}
}

// storeChunk compresses a chunk if asked and that makes it smaller, and
// stores it under its sha256 name.
func (b *builder) storeChunk(data []byte, enc **zstd.Encoder) (blobResult, error) {
	stored, compressed := data, false
	if b.opts.Compress {
		if *enc == nil {
			e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
			if err != nil {
				return blobResult{}, err
			}
			*enc = e
		}
		if z := seekableZstd(*enc, data); len(z) < len(data) {
			stored, compressed = z, true
		}
	}
	d, isNew, err := b.lay.putBlob(stored)
	if err != nil {
		return blobResult{}, err
	}
	return blobResult{digest: d, verity: VerityDigest(stored), compressed: compressed, size: int64(len(stored)), isNew: isNew}, nil
}

// seekableZstd compresses b in the zstd seekable format puzzlefs writes:
// independent frames of zstdFrame input bytes, then the seek table (frame
// sizes, no checksums) in a skippable frame.
func seekableZstd(enc *zstd.Encoder, b []byte) []byte {
	var out, table []byte
	frames := 0
	for off := 0; off < len(b); off += zstdFrame {
		p := b[off:min(off+zstdFrame, len(b))]
		before := len(out)
		out = enc.EncodeAll(p, out)
		table = binary.LittleEndian.AppendUint32(table, uint32(len(out)-before))
		table = binary.LittleEndian.AppendUint32(table, uint32(len(p)))
		frames++
	}
	table = binary.LittleEndian.AppendUint32(table, uint32(frames))
	table = append(table, 0) // descriptor: no checksums
	table = binary.LittleEndian.AppendUint32(table, 0x8F92EAB1)
	out = binary.LittleEndian.AppendUint32(out, 0x184D2A5E)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(table)))
	return append(out, table...)
}

// finish writes the metadata, the manifest and the tag.
func (b *builder) finish() error {
	b.fixWhiteouts()
	sort.Slice(b.inodes, func(i, j int) bool { return b.inodes[i].ino < b.inodes[j].ino })
	layer := Layer{Inodes: make([]Inode, len(b.inodes))}
	for i, n := range b.inodes {
		layer.Inodes[i] = n.inode
	}
	b.res.Inodes = len(layer.Inodes)

	r := &Rootfs{ManifestVersion: ManifestVersion}
	verity := b.verity
	if b.base != nil {
		r.Layers = b.base.Rootfs.Layers
		verity = map[Digest]Digest{}
		for _, v := range b.base.Rootfs.Verity {
			verity[v.Digest] = v.Verity
		}
		for d, v := range b.verity {
			verity[d] = v
		}
	}
	same, err := hasLayer(r.Layers, &layer)
	if err != nil {
		return err
	}
	if !same {
		r.Layers = append([]Layer{layer}, r.Layers...)
	}
	for d, v := range verity {
		r.Verity = append(r.Verity, VerityEntry{Digest: d, Verity: v})
	}
	sort.Slice(r.Verity, func(i, j int) bool { return bytes.Compare(r.Verity[i].Digest[:], r.Verity[j].Digest[:]) < 0 })
	rootfs, err := EncodeRootfs(r)
	if err != nil {
		return err
	}
	rootfsDigest, _, err := b.lay.putBlob(rootfs)
	if err != nil {
		return err
	}
	configDigest, _, err := b.lay.putBlob(emptyConfig)
	if err != nil {
		return err
	}
	m := ImageManifest{
		SchemaVersion: 2,
		Config:        Descriptor{MediaType: MediaTypeEmpty, Digest: configDigest.OCI(), Size: int64(len(emptyConfig)), Data: emptyConfig},
		Layers: append([]Descriptor{{
			MediaType:   MediaTypeRootfs,
			Digest:      rootfsDigest.OCI(),
			Size:        int64(len(rootfs)),
			Annotations: map[string]string{AnnotationVerityRootHash: VerityDigest(rootfs).String()},
		}}, b.layers...),
	}
	manifest, err := canonicalJSON(m)
	if err != nil {
		return fmt.Errorf("image: manifest: %w", err)
	}
	manifestDigest, _, err := b.lay.putBlob(manifest)
	if err != nil {
		return err
	}
	if err := b.lay.syncBlobs(); err != nil {
		return err
	}
	if err := b.lay.setTag(b.res.Tag, Descriptor{
		MediaType:   MediaTypeImageManifest,
		Digest:      manifestDigest.OCI(),
		Size:        int64(len(manifest)),
		Annotations: map[string]string{AnnotationRefName: b.res.Tag},
		Platform:    &Platform{Architecture: ociArch(), OS: "linux"},
	}); err != nil {
		return err
	}
	b.res.Manifest = manifestDigest
	b.res.RootDigest = VerityDigest(manifest)
	return nil
}

// hasLayer reports whether layers already holds a layer identical to l
// (rebuilding an unchanged tree on top of itself adds no layer, as in
// puzzlefs).
func hasLayer(layers []Layer, l *Layer) (bool, error) {
	want, err := EncodeRootfs(&Rootfs{Layers: []Layer{*l}})
	if err != nil {
		return false, err
	}
	for i := range layers {
		got, err := EncodeRootfs(&Rootfs{Layers: []Layer{layers[i]}})
		if err != nil {
			return false, err
		}
		if bytes.Equal(got, want) {
			return true, nil
		}
	}
	return false, nil
}
