package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sealfs/sealfs/errs"
)

// Usage is what the images of a layout occupy in blobs/sha256, from
// Layout.Usage. Sizes are those of the blob files (lstat), in bytes.
type Usage struct {
	// Tags has one entry per image manifest in index.json, in index order.
	Tags []TagUsage
	// Shared are the blobs referenced by two images or more.
	Shared BlobSet
	// Unique are the blobs referenced by exactly one image.
	Unique BlobSet
	// Garbage are the files in blobs/sha256 that no image references:
	// what a garbage collection would free.
	Garbage BlobSet
	// Total is every file in blobs/sha256.
	Total BlobSet
	// Missing counts blobs some image references that are not in the
	// layout (such an image cannot be read whole).
	Missing int
}

// BlobSet is a number of blobs and their total size.
type BlobSet struct {
	Count int
	Bytes int64
}

// TagUsage describes one image.
type TagUsage struct {
	// Tag is the image's org.opencontainers.image.ref.name, "" if it has none.
	Tag string
	// Manifest is the sha256 of the image manifest blob.
	Manifest Digest
	// RootfsSize is the size of the metadata blob.
	RootfsSize int64
	// Files counts the regular files of the visible tree, each hard-linked
	// inode once; LogicalBytes is the sum of their sizes.
	Files        int
	LogicalBytes uint64
	// Chunks counts the distinct chunk blobs the image references.
	Chunks int
	// StoredBytes is what the image needs in the layout: its manifest,
	// config, rootfs and chunk blobs, each once.
	StoredBytes int64
	// UniqueBytes is the part of StoredBytes no other image references:
	// what removing this image (and collecting garbage) would free.
	UniqueBytes int64
	// Missing counts the blobs it references that the layout lacks.
	Missing int
}

// Usage accounts for the layout's blobs. An image references its manifest
// blob, its config blob, its rootfs blob, the chunk layers of its manifest,
// and every chunk of the files it shows (resolved top-down through its
// layers, whiteouts hidden), so that nothing an image can still read ever
// counts as garbage. Chunks only a hidden lower-layer inode names are not
// references: a delta's top layer holds its whole tree. Index entries
// without a tag are images too. Every manifest and rootfs is read and
// checked against its sha256 (errs.ErrAuthentication); chunks are only
// stat'ed.
func (l *Layout) Usage() (*Usage, error) {
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	sizes := map[Digest]int64{} // blob → size; -1 when missing
	size := func(d Digest) (int64, error) {
		if n, ok := sizes[d]; ok {
			return n, nil
		}
		fi, err := os.Lstat(l.BlobPath(d))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			sizes[d] = -1
			return -1, nil
		case err != nil:
			return 0, fmt.Errorf("image: usage: %w", err)
		}
		sizes[d] = fi.Size()
		return fi.Size(), nil
	}
	u := &Usage{}
	refs := map[Digest]int{} // blob → number of images referencing it
	perTag := make([]map[Digest]bool, len(idx.Manifests))
	for i, desc := range idx.Manifests {
		tag := desc.Annotations[AnnotationRefName]
		tu, set, err := l.tagUsage(desc)
		if err != nil {
			return nil, fmt.Errorf("image: usage of index entry %d (tag %q): %w", i, tag, err)
		}
		tu.Tag = tag
		for d := range set {
			n, err := size(d)
			if err != nil {
				return nil, err
			}
			if n < 0 {
				tu.Missing++
				continue
			}
			tu.StoredBytes += n
			refs[d]++
		}
		perTag[i] = set
		u.Tags = append(u.Tags, tu)
	}
	for i, set := range perTag {
		for d := range set {
			if n := sizes[d]; n >= 0 && refs[d] == 1 {
				u.Tags[i].UniqueBytes += n
			}
		}
	}
	for d, k := range refs {
		if k > 1 {
			u.Shared.add(sizes[d])
		} else {
			u.Unique.add(sizes[d])
		}
	}
	for _, n := range sizes {
		if n < 0 {
			u.Missing++
		}
	}
	dir := filepath.Join(l.dir, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image: usage: %w", err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("image: usage: %w", err)
		}
		if fi.IsDir() {
			continue
		}
		u.Total.add(fi.Size())
		// Anything that is not a referenced blob is garbage: unreferenced
		// blobs, and leftovers such as the temporary files of an
		// interrupted write.
		d, err := ParseDigest("sha256:" + e.Name())
		if err != nil || refs[d] == 0 {
			u.Garbage.add(fi.Size())
		}
	}
	return u, nil
}

func (s *BlobSet) add(n int64) {
	s.Count++
	s.Bytes += n
}

// tagUsage reads one image's manifest and rootfs and returns its
// description (sizes not yet filled in) and the blobs it references.
func (l *Layout) tagUsage(desc Descriptor) (TagUsage, map[Digest]bool, error) {
	var tu TagUsage
	if desc.MediaType != MediaTypeImageManifest {
		return tu, nil, fmt.Errorf("media type %q, want %q: %w", desc.MediaType, MediaTypeImageManifest, errs.ErrUnsupported)
	}
	if desc.Size > maxJSONSize {
		return tu, nil, fmt.Errorf("manifest of %d bytes is larger than %d: %w", desc.Size, maxJSONSize, errs.ErrUnsupported)
	}
	raw, md, err := l.ReadDescriptor(desc)
	if err != nil {
		return tu, nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return tu, nil, fmt.Errorf("manifest %s: %w", md, err)
	}
	m.Digest = md
	tu.Manifest = md
	set := map[Digest]bool{md: true, m.RootfsDigest: true}
	if cd, err := ParseDigest(m.JSON.Config.Digest); err == nil {
		// The empty config is often only inline (descriptor data); it
		// counts where it is stored.
		if _, err := os.Lstat(l.BlobPath(cd)); err == nil {
			set[cd] = true
		}
	}
	for _, c := range m.Chunks {
		d, err := ParseDigest(c.Digest)
		if err != nil {
			return tu, nil, err
		}
		set[d] = true
	}
	rraw, _, err := l.ReadDescriptor(m.Rootfs)
	if err != nil {
		return tu, nil, fmt.Errorf("rootfs: %w", err)
	}
	tu.RootfsSize = int64(len(rraw))
	r, err := ReadRootfs(rraw)
	if err != nil {
		return tu, nil, fmt.Errorf("rootfs %s: %w", m.RootfsDigest, err)
	}
	// The chunks an image needs are those of the files it shows (resolved
	// top-down, whiteouts hidden), not every chunk of every layer: a delta
	// built on a base holds the whole tree in its top layer, so the base's
	// chunks may be gone without harm. The manifest's chunk layers count
	// too, since OCI tools copy and keep them.
	chunks := map[Digest]bool{}
	for _, c := range m.Chunks {
		d, _ := ParseDigest(c.Digest)
		chunks[d] = true
	}
	im := &Image{Layout: l, Manifest: m, Rootfs: r}
	seen := map[uint64]bool{}
	err = im.Walk(func(_ string, in *Inode) error {
		if in.Type == TypeFile && !seen[in.Ino] {
			seen[in.Ino] = true
			tu.Files++
			tu.LogicalBytes += in.Size()
			for _, c := range in.Chunks {
				chunks[c.Blob.Digest] = true
			}
		}
		return nil
	})
	if err != nil {
		return tu, nil, err
	}
	tu.Chunks = len(chunks)
	for d := range chunks {
		set[d] = true
	}
	return tu, set, nil
}

// Usage describes an open image from its manifest and metadata alone,
// without looking at any chunk: what `image ls` shows for an image in a
// registry. StoredBytes counts the manifest, config, rootfs and chunk
// layers at the sizes the manifest gives (each distinct blob once); Chunks
// counts the distinct chunks the manifest lists or the visible files use.
// UniqueBytes and Missing, which need the other images and the blobs
// themselves, are zero.
func (im *Image) Usage() (TagUsage, error) {
	m := im.Manifest
	chunks, tu, err := im.visibleChunks()
	if err != nil {
		return tu, err
	}
	tu.Tag = m.Tag
	tu.Manifest = m.Digest
	tu.RootfsSize = m.Rootfs.Size
	tu.StoredBytes = int64(len(m.Raw)) + m.JSON.Config.Size + m.Rootfs.Size
	set := map[Digest]bool{}
	for _, c := range m.Chunks {
		d, _ := ParseDigest(c.Digest) // parseManifest checked it
		if !set[d] {
			set[d] = true
			tu.StoredBytes += c.Size
		}
	}
	for _, d := range chunks {
		set[d] = true
	}
	tu.Chunks = len(set)
	return tu, nil
}
