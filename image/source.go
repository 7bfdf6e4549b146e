package image

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/sealfs/sealfs/errs"
)

// Source is where an Image reads its manifest and blobs from: a layout on
// disk ([Layout.Source]), an OCI registry with a local cache ([Remote]), or
// anything else that can hand out blobs by digest.
//
// An Image trusts nothing a Source returns. It checks the manifest against
// the digest the source resolved it to, and every blob against its sha256
// name (and size, when known) before a byte is parsed or returned, and,
// when opened with a root digest, against the fs-verity chain. A Source
// therefore need not verify what it returns; one that keeps copies (a
// cache) should still check them, so that a damaged copy is replaced rather
// than failing every read.
//
// Implementations must be safe for concurrent use.
type Source interface {
	// FetchManifest returns the image manifest that reference (a tag, or
	// an OCI digest "sha256:<hex>") names, with its descriptor: the
	// digest, size and media type the source claims for it. A reference
	// the source does not know is fs.ErrNotExist.
	FetchManifest(ctx context.Context, reference string) (Descriptor, []byte, error)
	// FetchBlob returns the bytes of blob d, which is size bytes long
	// when size >= 0. A blob of more than limit bytes is an error. A blob
	// the source does not have is fs.ErrNotExist.
	FetchBlob(ctx context.Context, d Digest, size, limit int64) ([]byte, error)
}

// maxRootfsSize bounds the metadata blob an Image loads into memory.
const maxRootfsSize = 1 << 30

// Source returns the layout as a Source for OpenImageFrom. References are
// tags of index.json, or digests of manifest blobs in blobs/sha256.
func (l *Layout) Source() Source { return layoutSource{l} }

type layoutSource struct{ l *Layout }

func (s layoutSource) FetchManifest(_ context.Context, reference string) (Descriptor, []byte, error) {
	var desc Descriptor
	if strings.HasPrefix(reference, "sha256:") {
		d, err := ParseDigest(reference)
		if err != nil {
			return desc, nil, err
		}
		raw, err := s.l.readBlobRaw(d, -1, maxJSONSize)
		if err != nil {
			return desc, nil, err
		}
		return Descriptor{MediaType: MediaTypeImageManifest, Digest: reference, Size: int64(len(raw))}, raw, nil
	}
	desc, err := s.l.manifestDescriptor(reference)
	if err != nil {
		return desc, nil, err
	}
	d, err := ParseDigest(desc.Digest)
	if err != nil {
		return desc, nil, fmt.Errorf("image: tag %q: %w", reference, err)
	}
	raw, err := s.l.readBlobRaw(d, desc.Size, maxJSONSize)
	if err != nil {
		return desc, nil, fmt.Errorf("image: tag %q: %w", reference, err)
	}
	return desc, raw, nil
}

func (s layoutSource) FetchBlob(_ context.Context, d Digest, size, limit int64) ([]byte, error) {
	return s.l.readBlobRaw(d, size, limit)
}

// OpenImageFrom opens the image reference names in src, as
// Layout.OpenImage does for a layout: the manifest is checked against the
// digest src resolved it to, and, if rootDigest is not nil, against that
// trusted fs-verity digest; then the rootfs is fetched, checked and
// decoded. Chunks are fetched from src as they are read.
func OpenImageFrom(ctx context.Context, src Source, reference string, rootDigest *Digest) (*Image, error) {
	desc, raw, err := src.FetchManifest(ctx, reference)
	if err != nil {
		return nil, fmt.Errorf("image: %q: %w", reference, err)
	}
	if desc.MediaType != MediaTypeImageManifest {
		return nil, fmt.Errorf("image: %q: media type %q, want %q (not a PuzzleFS image): %w", reference, desc.MediaType, MediaTypeImageManifest, errs.ErrUnsupported)
	}
	d, err := ParseDigest(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("image: %q: %w", reference, err)
	}
	if int64(len(raw)) != desc.Size || len(raw) > maxJSONSize {
		return nil, fmt.Errorf("image: %q: manifest %s: %d bytes, %d expected (at most %d): %w", reference, d, len(raw), desc.Size, maxJSONSize, errs.ErrAuthentication)
	}
	if sum := sha256.Sum256(raw); sum != d {
		return nil, fmt.Errorf("image: %q: manifest %s: sha256 is %x: %w", reference, d, sum, errs.ErrAuthentication)
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("image: %q: manifest %s: %w", reference, d, err)
	}
	m.Tag = reference
	m.Digest = d
	return openImage(ctx, src, m, rootDigest)
}

// fetchVerified fetches blob d from the image's source and checks its size
// (when size >= 0), its limit and its sha256 before returning it.
func (im *Image) fetchVerified(ctx context.Context, d Digest, size, limit int64) ([]byte, error) {
	b, err := im.source().FetchBlob(ctx, d, size, limit)
	if err != nil {
		return nil, err
	}
	if size >= 0 && int64(len(b)) != size {
		return nil, fmt.Errorf("image: blob %s: %d bytes, descriptor says %d: %w", d, len(b), size, errs.ErrAuthentication)
	}
	if limit >= 0 && int64(len(b)) > limit {
		return nil, fmt.Errorf("image: blob %s: %d bytes, more than the %d allowed here: %w", d, len(b), limit, errs.ErrCorrupt)
	}
	if sum := sha256.Sum256(b); sum != d {
		return nil, fmt.Errorf("image: blob %s: sha256 is %x: %w", d, sum, errs.ErrAuthentication)
	}
	return b, nil
}

// source returns where the image's blobs come from: its Source, or its
// Layout for an Image built by hand around one.
func (im *Image) source() Source {
	if im.src != nil {
		return im.src
	}
	return layoutSource{im.Layout}
}
