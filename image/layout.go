package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sealfs/sealfs/errs"
)

// Media types and annotations of a PuzzleFS image.
const (
	MediaTypeImageIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeImageManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeEmpty         = "application/vnd.oci.empty.v1+json"
	// MediaTypeRootfs is the Cap'n Proto metadata blob, always layers[0].
	MediaTypeRootfs = "application/vnd.puzzlefs.image.rootfs.v1"
	// MediaTypeChunk is a file-data chunk stored raw.
	MediaTypeChunk = "application/vnd.puzzlefs.image.filedata.v1"
	// MediaTypeChunkZstd labels every chunk of an image built with
	// compression, whether or not the chunk itself ended up compressed;
	// BlobRef.Compressed is the authoritative flag.
	MediaTypeChunkZstd = MediaTypeChunk + "+zstd"

	// AnnotationVerityRootHash on the rootfs layer holds the hex fs-verity
	// digest (SHA-256, 4 KiB blocks, no salt) of the rootfs blob.
	AnnotationVerityRootHash = "io.puzzlefsoci.puzzlefs.puzzlefs_verity_root_hash"
	// AnnotationRefName on an index entry holds its tag.
	AnnotationRefName = "org.opencontainers.image.ref.name"

	// ImageLayoutVersion is the oci-layout file's imageLayoutVersion.
	ImageLayoutVersion = "1.0.0"
)

// Size caps for the JSON documents of a layout (index.json, oci-layout, image
// manifests). OCI recommends registries accept manifests of at least 4 MiB.
const maxJSONSize = 4 << 20

// Digest is a sha256 digest: a blob's name under blobs/sha256.
type Digest [sha256.Size]byte

// String returns the digest as lowercase hex, without the "sha256:" prefix.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// OCI returns the digest in OCI form, "sha256:<hex>".
func (d Digest) OCI() string { return "sha256:" + d.String() }

// ParseDigest parses an OCI digest "sha256:<64 lowercase hex digits>". Other
// algorithms are errs.ErrUnsupportedAlgorithm.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	alg, enc, ok := strings.Cut(s, ":")
	if !ok {
		return d, fmt.Errorf("image: digest %q: no algorithm prefix: %w", s, errs.ErrCorrupt)
	}
	if alg != "sha256" {
		return d, fmt.Errorf("image: digest %q: algorithm %q: %w", s, alg, errs.ErrUnsupportedAlgorithm)
	}
	if len(enc) != 2*sha256.Size || strings.ToLower(enc) != enc {
		return d, fmt.Errorf("image: digest %q: want 64 lowercase hex digits: %w", s, errs.ErrCorrupt)
	}
	if _, err := hex.Decode(d[:], []byte(enc)); err != nil {
		return d, fmt.Errorf("image: digest %q: %v: %w", s, err, errs.ErrCorrupt)
	}
	return d, nil
}

// Platform is an OCI platform.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Data        []byte            `json:"data,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// ImageManifest is an OCI image manifest as stored.
type ImageManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Manifest is a validated PuzzleFS image manifest.
type Manifest struct {
	// Tag is the tag the manifest was resolved from.
	Tag string
	// Digest is the sha256 of the manifest blob. The PuzzleFS root of trust
	// is the manifest blob's fs-verity digest, which is not stored anywhere.
	Digest Digest
	// Raw is the manifest blob, verified against Digest.
	Raw []byte
	// JSON is the manifest as decoded.
	JSON ImageManifest
	// Rootfs is the metadata blob (layers[0]).
	Rootfs Descriptor
	// RootfsDigest is Rootfs.Digest parsed.
	RootfsDigest Digest
	// RootfsVerity is the fs-verity digest of the rootfs blob from the
	// AnnotationVerityRootHash annotation, nil when the annotation is absent.
	RootfsVerity []byte
	// Chunks are layers[1:], the file-data blobs.
	Chunks []Descriptor
}

// Layout is an OCI image layout directory.
type Layout struct {
	dir string
}

type ociLayout struct {
	ImageLayoutVersion string `json:"imageLayoutVersion"`
}

// OpenLayout opens the OCI image layout in dir: it checks the oci-layout
// file and that index.json is a readable image index.
func OpenLayout(dir string) (*Layout, error) {
	b, err := readSmall(filepath.Join(dir, "oci-layout"), maxJSONSize)
	if err != nil {
		return nil, fmt.Errorf("image: open layout %s: %w", dir, err)
	}
	var ol ociLayout
	if err := strictJSON(b, &ol); err != nil {
		return nil, fmt.Errorf("image: %s/oci-layout: %v: %w", dir, err, errs.ErrCorrupt)
	}
	if ol.ImageLayoutVersion != ImageLayoutVersion {
		return nil, fmt.Errorf("image: %s/oci-layout: imageLayoutVersion %q, want %q: %w", dir, ol.ImageLayoutVersion, ImageLayoutVersion, errs.ErrUnsupported)
	}
	l := &Layout{dir: dir}
	if _, err := l.Index(); err != nil {
		return nil, err
	}
	return l, nil
}

// Dir returns the layout's directory.
func (l *Layout) Dir() string { return l.dir }

// Index reads and checks index.json. It is read anew on every call, so tags
// added by another writer show up.
func (l *Layout) Index() (*Index, error) {
	b, err := readSmall(filepath.Join(l.dir, "index.json"), maxJSONSize)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	var idx Index
	if err := strictJSON(b, &idx); err != nil {
		return nil, fmt.Errorf("image: %s/index.json: %v: %w", l.dir, err, errs.ErrCorrupt)
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("image: %s/index.json: schemaVersion %d, want 2: %w", l.dir, idx.SchemaVersion, errs.ErrUnsupported)
	}
	if idx.MediaType != "" && idx.MediaType != MediaTypeImageIndex {
		return nil, fmt.Errorf("image: %s/index.json: media type %q: %w", l.dir, idx.MediaType, errs.ErrUnsupported)
	}
	return &idx, nil
}

// Tags returns the tags of index.json (the AnnotationRefName of each entry),
// in index order.
func (l *Layout) Tags() ([]string, error) {
	idx, err := l.Index()
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, d := range idx.Manifests {
		if t, ok := d.Annotations[AnnotationRefName]; ok {
			tags = append(tags, t)
		}
	}
	return tags, nil
}

// Manifest resolves tag through index.json, reads the image manifest blob
// (checking its size and sha256 before parsing it) and checks that it is a
// PuzzleFS manifest: an empty config, the rootfs first, chunk layers after.
// A missing tag is fs.ErrNotExist.
func (l *Layout) Manifest(tag string) (*Manifest, error) {
	found, err := l.manifestDescriptor(tag)
	if err != nil {
		return nil, err
	}
	raw, d, err := l.ReadDescriptor(found)
	if err != nil {
		return nil, fmt.Errorf("image: tag %q: %w", tag, err)
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("image: tag %q: manifest %s: %w", tag, d, err)
	}
	m.Tag = tag
	m.Digest = d
	return m, nil
}

// manifestDescriptor finds tag's entry in index.json and checks that it is
// an image manifest of an acceptable size.
func (l *Layout) manifestDescriptor(tag string) (Descriptor, error) {
	idx, err := l.Index()
	if err != nil {
		return Descriptor{}, err
	}
	var found *Descriptor
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		if d.Annotations[AnnotationRefName] != tag {
			continue
		}
		if found != nil {
			return Descriptor{}, fmt.Errorf("image: tag %q appears more than once in index.json: %w", tag, errs.ErrCorrupt)
		}
		found = d
	}
	if found == nil {
		return Descriptor{}, fmt.Errorf("image: tag %q: %w", tag, fs.ErrNotExist)
	}
	if found.MediaType != MediaTypeImageManifest {
		return Descriptor{}, fmt.Errorf("image: tag %q: media type %q, want %q: %w", tag, found.MediaType, MediaTypeImageManifest, errs.ErrUnsupported)
	}
	if found.Size > maxJSONSize {
		return Descriptor{}, fmt.Errorf("image: tag %q: manifest of %d bytes is larger than %d: %w", tag, found.Size, maxJSONSize, errs.ErrUnsupported)
	}
	return *found, nil
}

func parseManifest(raw []byte) (*Manifest, error) {
	m := &Manifest{Raw: raw}
	if err := strictJSON(raw, &m.JSON); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errs.ErrCorrupt)
	}
	j := &m.JSON
	if j.SchemaVersion != 2 {
		return nil, fmt.Errorf("schemaVersion %d, want 2: %w", j.SchemaVersion, errs.ErrUnsupported)
	}
	if j.MediaType != "" && j.MediaType != MediaTypeImageManifest {
		return nil, fmt.Errorf("media type %q: %w", j.MediaType, errs.ErrUnsupported)
	}
	if j.Config.MediaType != MediaTypeEmpty {
		return nil, fmt.Errorf("config media type %q, want %q: %w", j.Config.MediaType, MediaTypeEmpty, errs.ErrUnsupported)
	}
	if _, err := ParseDigest(j.Config.Digest); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(j.Layers) == 0 {
		return nil, fmt.Errorf("no layers: %w", errs.ErrCorrupt)
	}
	m.Rootfs = j.Layers[0]
	if m.Rootfs.MediaType != MediaTypeRootfs {
		return nil, fmt.Errorf("layers[0] media type %q, want %q: %w", m.Rootfs.MediaType, MediaTypeRootfs, errs.ErrUnsupported)
	}
	var err error
	if m.RootfsDigest, err = ParseDigest(m.Rootfs.Digest); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	if m.Rootfs.Size < 0 {
		return nil, fmt.Errorf("rootfs: negative size %d: %w", m.Rootfs.Size, errs.ErrCorrupt)
	}
	if h, ok := m.Rootfs.Annotations[AnnotationVerityRootHash]; ok {
		v, err := hex.DecodeString(h)
		if err != nil || len(v) != sha256.Size {
			return nil, fmt.Errorf("rootfs annotation %s = %q: want 64 hex digits: %w", AnnotationVerityRootHash, h, errs.ErrCorrupt)
		}
		m.RootfsVerity = v
	}
	m.Chunks = j.Layers[1:]
	for i, c := range m.Chunks {
		if c.MediaType != MediaTypeChunk && c.MediaType != MediaTypeChunkZstd {
			return nil, fmt.Errorf("layers[%d] media type %q, want %q or %q: %w", i+1, c.MediaType, MediaTypeChunk, MediaTypeChunkZstd, errs.ErrUnsupported)
		}
		if _, err := ParseDigest(c.Digest); err != nil {
			return nil, fmt.Errorf("layers[%d]: %w", i+1, err)
		}
		if c.Size < 0 {
			return nil, fmt.Errorf("layers[%d]: negative size %d: %w", i+1, c.Size, errs.ErrCorrupt)
		}
	}
	return m, nil
}

// BlobPath returns the file name of blob d.
func (l *Layout) BlobPath(d Digest) string {
	return filepath.Join(l.dir, "blobs", "sha256", d.String())
}

// ReadDescriptor reads the blob a descriptor names. The file must have the
// descriptor's size and sha256; otherwise nothing is returned.
func (l *Layout) ReadDescriptor(desc Descriptor) ([]byte, Digest, error) {
	d, err := ParseDigest(desc.Digest)
	if err != nil {
		return nil, d, err
	}
	if desc.Size < 0 {
		return nil, d, fmt.Errorf("image: blob %s: negative size %d: %w", d, desc.Size, errs.ErrCorrupt)
	}
	b, err := l.readBlob(d, desc.Size, -1)
	return b, d, err
}

// ReadBlob reads blob d whole and checks its sha256 before returning it. A
// missing blob is fs.ErrNotExist; a mismatch is errs.ErrAuthentication.
func (l *Layout) ReadBlob(d Digest) ([]byte, error) {
	return l.readBlob(d, -1, -1)
}

// readBlob reads blob d, which must be size bytes long if size >= 0 and at
// most max bytes if max >= 0, and checks its sha256.
func (l *Layout) readBlob(d Digest, size, max int64) ([]byte, error) {
	b, err := l.readBlobRaw(d, size, max)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); sum != d {
		return nil, fmt.Errorf("image: blob %s: sha256 is %x: %w", d, sum, errs.ErrAuthentication)
	}
	return b, nil
}

// readBlobRaw is readBlob without the sha256 check, for callers that check
// it themselves (an Image checks every blob any Source gives it).
func (l *Layout) readBlobRaw(d Digest, size, max int64) ([]byte, error) {
	f, err := os.Open(l.BlobPath(d))
	if err != nil {
		return nil, fmt.Errorf("image: blob %s: %w", d, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("image: blob %s: %w", d, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("image: blob %s: not a regular file: %w", d, errs.ErrCorrupt)
	}
	if size >= 0 && st.Size() != size {
		return nil, fmt.Errorf("image: blob %s: %d bytes, descriptor says %d: %w", d, st.Size(), size, errs.ErrAuthentication)
	}
	n := st.Size()
	if max >= 0 && n > max {
		return nil, fmt.Errorf("image: blob %s: %d bytes, more than the %d allowed here: %w", d, n, max, errs.ErrCorrupt)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("image: blob %s: %w", d, err)
	}
	// A file that grew after Stat is not what the digest names either.
	if k, _ := f.Read(make([]byte, 1)); k != 0 {
		return nil, fmt.Errorf("image: blob %s: changed while read: %w", d, errs.ErrAuthentication)
	}
	return b, nil
}

func readSmall(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", name, limit, errs.ErrUnsupported)
	}
	return b, nil
}

// strictJSON decodes one JSON value and refuses trailing data.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
