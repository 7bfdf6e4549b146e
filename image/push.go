package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/registry"
)

// PushOptions tune Push. The zero value pushes with the defaults.
type PushOptions struct {
	// Concurrency is how many blobs are checked and uploaded at a time;
	// 0 means registry.DefaultConcurrency.
	Concurrency int
	// MountFrom names repositories of the same registry to mount blobs
	// from instead of uploading them.
	MountFrom []string
	// Progress, if set, follows the upload.
	Progress registry.ProgressFunc
}

// PushResult describes a push.
type PushResult struct {
	// Manifest is the manifest blob's sha256, its digest in the registry.
	Manifest Digest
	// RootDigest is the manifest's fs-verity digest: the root of trust
	// to mount or pull the pushed image with.
	RootDigest Digest
	// Blobs says which blobs were uploaded, mounted or already there.
	Blobs registry.PushStats
}

// Push uploads image tag of layout l to repo and tags it remoteTag there.
// The manifest is pushed byte for byte as it is in the layout, so its
// digest and fs-verity root digest stay the same. Only blobs the registry
// lacks are uploaded (see registry.Repository.PushBlobs); each is checked
// against its name as it is read. The blobs are the manifest's config
// (from the layout, or from the descriptor's inline data), rootfs and chunk
// layers, and any chunk the visible files use that the manifest does not
// list (an image stacked by puzzlefs); the manifest is pushed last, when
// the registry has everything it references.
func Push(ctx context.Context, l *Layout, tag string, repo *registry.Repository, remoteTag string, opts PushOptions) (*PushResult, error) {
	m, err := l.Manifest(tag)
	if err != nil {
		return nil, err
	}
	rootfsRaw, _, err := l.ReadDescriptor(m.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs of %q: %w", tag, err)
	}
	rootfs, err := ReadRootfs(rootfsRaw)
	if err != nil {
		return nil, fmt.Errorf("image: rootfs %s of %q: %w", m.RootfsDigest, tag, err)
	}
	visible, _, err := (&Image{Manifest: m, Rootfs: rootfs}).visibleChunks()
	if err != nil {
		return nil, fmt.Errorf("image: %q: %w", tag, err)
	}

	var blobs []registry.Blob
	seen := map[Digest]bool{}
	fromBytes := func(mediaType string, d Digest, b []byte) {
		seen[d] = true
		blobs = append(blobs, registry.Blob{
			Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.Digest(d.OCI()), Size: int64(len(b))},
			Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		})
	}
	fromFile := func(mediaType string, d Digest) error {
		if seen[d] {
			return nil
		}
		seen[d] = true
		st, err := os.Stat(l.BlobPath(d))
		if err != nil {
			return fmt.Errorf("image: %q: chunk %s: %w: %w", tag, d, err, errs.ErrCorrupt)
		}
		blobs = append(blobs, registry.Blob{
			Descriptor: ocispec.Descriptor{MediaType: mediaType, Digest: digest.Digest(d.OCI()), Size: st.Size()},
			Open:       func() (io.ReadCloser, error) { return os.Open(l.BlobPath(d)) },
		})
		return nil
	}
	cfg, err := configBlob(l, m)
	if err != nil {
		return nil, fmt.Errorf("image: %q: %w", tag, err)
	}
	fromBytes(MediaTypeEmpty, configDigestOf(m), cfg)
	fromBytes(MediaTypeRootfs, m.RootfsDigest, rootfsRaw)
	for _, c := range m.Chunks {
		d, _ := ParseDigest(c.Digest) // parseManifest checked it
		if err := fromFile(c.MediaType, d); err != nil {
			return nil, err
		}
	}
	for _, d := range visible {
		if err := fromFile(MediaTypeChunk, d); err != nil {
			return nil, err
		}
	}
	res := &PushResult{Manifest: m.Digest, RootDigest: VerityDigest(m.Raw)}
	res.Blobs, err = repo.PushBlobs(ctx, blobs, &registry.PushOptions{
		Concurrency: opts.Concurrency, MountFrom: opts.MountFrom, Progress: opts.Progress,
	})
	if err != nil {
		return nil, fmt.Errorf("image: push %q: %w", tag, err)
	}
	if _, err := repo.PushManifest(ctx, MediaTypeImageManifest, m.Raw, remoteTag); err != nil {
		return nil, fmt.Errorf("image: push %q: %w", tag, err)
	}
	return res, nil
}

// configBlob returns the manifest's config blob: from the layout, or from
// the descriptor's inline data (puzzlefs stores the empty config only
// there), checked against its digest either way.
func configBlob(l *Layout, m *Manifest) ([]byte, error) {
	desc := m.JSON.Config
	d := configDigestOf(m)
	if b, err := l.readBlob(d, desc.Size, maxJSONSize); err == nil {
		return b, nil
	}
	if desc.Data != nil && int64(len(desc.Data)) == desc.Size && sha256.Sum256(desc.Data) == d {
		return desc.Data, nil
	}
	if sha256.Sum256(emptyConfig) == d {
		return emptyConfig, nil
	}
	return nil, fmt.Errorf("config blob %s is neither in the layout nor inline: %w", d, errs.ErrCorrupt)
}
