package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
	"github.com/sealfs/sealfs/registry"
)

// A blob store travels through an OCI registry as one artifact: an OCI
// image manifest (docs/format/oci-blob-store.md)
//
//	artifactType  ArtifactType
//	config        the empty descriptor ("{}", inline)
//	layers        one per blob, by name: MediaTypeBlob, the sha256 of the
//	              blob's bytes, AnnotationMerkleRoot = its name
//	annotations   AnnotationStoreVersion = "1"
const (
	// ArtifactType identifies a blob store artifact.
	ArtifactType = "application/vnd.sealfs.blob-store.v1"
	// MediaTypeBlob is a layer holding one blob's bytes, as they are.
	MediaTypeBlob = "application/vnd.sealfs.blob.v1"
	// AnnotationMerkleRoot on a layer is the blob's name: its Fuchsia
	// Merkle root, 64 lowercase hex digits.
	AnnotationMerkleRoot = "dev.sealfs.blob.merkle-root"
	// AnnotationStoreVersion on the manifest is the artifact's format
	// version, "1".
	AnnotationStoreVersion = "dev.sealfs.blob-store.version"
	// annotationTitle makes `oras pull` write each blob to a file named
	// after it.
	annotationTitle = ocispec.AnnotationTitle

	storeArtifactVersion = "1"
	// maxStoreManifest is the largest manifest pushed or pulled, the size
	// OCI asks every registry to accept: about 13,000 blobs.
	maxStoreManifest = 4 << 20
)

// RegistryOptions tune Push and Pull. A nil *RegistryOptions means the
// defaults.
type RegistryOptions struct {
	// Concurrency is how many blobs are read, checked and moved at a
	// time; 0 means registry.DefaultConcurrency.
	Concurrency int
	// MountFrom (Push only) names repositories of the same registry to
	// mount blobs from instead of uploading them.
	MountFrom []string
	// Progress, if set, follows the transfer (for Push, once the blobs
	// have been read and hashed).
	Progress registry.ProgressFunc
}

// PushResult describes a Push.
type PushResult struct {
	// Manifest is the digest of the artifact's manifest.
	Manifest digest.Digest
	// Blobs is the number of blobs in the artifact.
	Blobs int
	// Transfer says which blobs were uploaded, mounted or already there
	// (the empty config included).
	Transfer registry.PushStats
}

// Push uploads every blob of s to repo as one artifact tagged tag. Each
// blob is read through the store's verified path twice: once to compute
// the sha256 the registry names it by, once to upload it if the registry
// lacks it. A store whose manifest would exceed 4 MiB (more than about
// 13,000 blobs) is errs.ErrUnsupported.
func Push(ctx context.Context, s *Store, repo *registry.Repository, tag string, opts *RegistryOptions) (*PushResult, error) {
	if opts == nil {
		opts = &RegistryOptions{}
	}
	names, err := s.List()
	if err != nil {
		return nil, err
	}
	layers := make([]ocispec.Descriptor, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, concurrency(opts.Concurrency)))
	for i, name := range names {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			d, n, err := s.sha256(name)
			if err != nil {
				return err
			}
			layers[i] = ocispec.Descriptor{
				MediaType: MediaTypeBlob, Digest: d, Size: n,
				Annotations: map[string]string{AnnotationMerkleRoot: name.String(), annotationTitle: name.String()},
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("blob: push: %w", err)
	}
	raw, err := storeManifest(layers)
	if err != nil {
		return nil, err
	}
	blobs := []registry.Blob{{
		Descriptor: ocispec.DescriptorEmptyJSON,
		Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(ocispec.DescriptorEmptyJSON.Data)), nil
		},
	}}
	for i, l := range layers {
		name := names[i]
		blobs = append(blobs, registry.Blob{Descriptor: l, Open: func() (io.ReadCloser, error) { return s.Open(name) }})
	}
	res := &PushResult{Manifest: digest.FromBytes(raw), Blobs: len(names)}
	res.Transfer, err = repo.PushBlobs(ctx, blobs, &registry.PushOptions{Concurrency: opts.Concurrency, MountFrom: opts.MountFrom, Progress: opts.Progress})
	if err != nil {
		return nil, fmt.Errorf("blob: push: %w", err)
	}
	if _, err := repo.PushManifest(ctx, ocispec.MediaTypeImageManifest, raw, tag); err != nil {
		return nil, fmt.Errorf("blob: push: %w", err)
	}
	return res, nil
}

func concurrency(n int) int {
	if n == 0 {
		return registry.DefaultConcurrency
	}
	return n
}

// sha256 reads blob name through its verified path and returns the sha256
// and the size of its bytes.
func (s *Store) sha256(name merkle.Digest) (digest.Digest, int64, error) {
	b, err := s.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer b.Close()
	h := sha256.New()
	n, err := io.Copy(h, b)
	if err != nil {
		return "", 0, err
	}
	return digest.NewDigest(digest.SHA256, h), n, nil
}

// storeManifest encodes the artifact manifest of layers (sorted by name).
func storeManifest(layers []ocispec.Descriptor) ([]byte, error) {
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       layers,
		Annotations:  map[string]string{AnnotationStoreVersion: storeArtifactVersion},
	}
	m.SchemaVersion = 2
	if m.Layers == nil {
		m.Layers = []ocispec.Descriptor{}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("blob: push: manifest: %w", err)
	}
	if len(raw) > maxStoreManifest {
		return nil, fmt.Errorf("blob: push: %d blobs make a manifest of %d bytes, more than the %d registries must accept: %w", len(layers), len(raw), maxStoreManifest, errs.ErrUnsupported)
	}
	return raw, nil
}

// storeLayer is one blob of an artifact.
type storeLayer struct {
	name merkle.Digest
	desc ocispec.Descriptor
}

// parseStoreManifest checks that raw is a blob store artifact and returns
// its blobs: the artifact type (or, from registries that drop artifactType,
// the config media type), the version, and for every layer its media type,
// digest, size and Merkle root name, no name twice. Anything else is
// errs.ErrCorrupt or, for another artifact or version, errs.ErrUnsupported.
func parseStoreManifest(raw []byte) ([]storeLayer, error) {
	var m ocispec.Manifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, errs.ErrCorrupt)
	}
	if dec.More() {
		return nil, fmt.Errorf("manifest: trailing data: %w", errs.ErrCorrupt)
	}
	if m.SchemaVersion != 2 || (m.MediaType != "" && m.MediaType != ocispec.MediaTypeImageManifest) {
		return nil, fmt.Errorf("manifest: schemaVersion %d, media type %q: not an OCI image manifest: %w", m.SchemaVersion, m.MediaType, errs.ErrUnsupported)
	}
	if m.ArtifactType != ArtifactType && m.Config.MediaType != ArtifactType {
		return nil, fmt.Errorf("manifest: artifact type %q (config %q): not a sealfs blob store: %w", m.ArtifactType, m.Config.MediaType, errs.ErrUnsupported)
	}
	if v := m.Annotations[AnnotationStoreVersion]; v != storeArtifactVersion {
		return nil, fmt.Errorf("manifest: blob store artifact version %q, this sealfs reads %q: %w", v, storeArtifactVersion, errs.ErrUnsupported)
	}
	out := make([]storeLayer, 0, len(m.Layers))
	seen := map[merkle.Digest]bool{}
	for i, l := range m.Layers {
		if l.MediaType != MediaTypeBlob {
			return nil, fmt.Errorf("manifest: layer %d: media type %q, want %q: %w", i, l.MediaType, MediaTypeBlob, errs.ErrUnsupported)
		}
		if err := l.Digest.Validate(); err != nil || l.Digest.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("manifest: layer %d: digest %q: want sha256: %w", i, l.Digest, errs.ErrCorrupt)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("manifest: layer %d: negative size %d: %w", i, l.Size, errs.ErrCorrupt)
		}
		name, err := merkle.ParseDigest(l.Annotations[AnnotationMerkleRoot])
		if err != nil {
			return nil, fmt.Errorf("manifest: layer %d: %s annotation: %v: %w", i, AnnotationMerkleRoot, err, errs.ErrCorrupt)
		}
		if seen[name] {
			return nil, fmt.Errorf("manifest: blob %s appears twice: %w", name, errs.ErrCorrupt)
		}
		seen[name] = true
		out = append(out, storeLayer{name, l})
	}
	return out, nil
}

// PullResult describes a Pull.
type PullResult struct {
	// Manifest is the digest of the artifact's manifest.
	Manifest digest.Digest
	// Installed are the blobs fetched and installed; Present the ones the
	// store had already.
	Installed registry.Count
	Present   registry.Count
}

// Pull installs every blob of the artifact that reference (a tag or a
// digest) names in repo into s, through the store's verified install
// path: each blob streams from the registry into a Writer created for the
// name the manifest records, whose Close installs it only if the bytes
// hash to that name; the sha256 the registry names the blob by is checked
// too, and a mismatch of either installs nothing (registry.ErrDigestMismatch
// for the sha256, ErrIntegrity for the name). Blobs the store has already
// are skipped, so an interrupted pull resumes where it stopped. Blobs of s
// the artifact lacks are kept.
func Pull(ctx context.Context, repo *registry.Repository, reference string, s *Store, opts *RegistryOptions) (*PullResult, error) {
	if opts == nil {
		opts = &RegistryOptions{}
	}
	desc, raw, err := repo.FetchManifest(ctx, reference, maxStoreManifest)
	if err != nil {
		return nil, fmt.Errorf("blob: pull %s: %w", reference, err)
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("blob: pull %s: media type %q: not a sealfs blob store: %w", reference, desc.MediaType, errs.ErrUnsupported)
	}
	layers, err := parseStoreManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("blob: pull %s: %w", reference, err)
	}
	var total int64
	for _, l := range layers {
		total += l.desc.Size
	}
	res := &PullResult{Manifest: desc.Digest}
	var mu sync.Mutex
	count := func(c *registry.Count, n int64) {
		mu.Lock()
		defer mu.Unlock()
		c.Blobs++
		c.Bytes += n
	}
	meter := registry.NewMeter(len(layers), total, opts.Progress)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, concurrency(opts.Concurrency)))
	for _, l := range layers {
		g.Go(func() error {
			if _, err := s.Stat(l.name); err == nil {
				count(&res.Present, l.desc.Size)
				meter.Present(l.desc.Size)
				return nil
			}
			present, err := s.install(gctx, repo, l, meter)
			if err != nil {
				return fmt.Errorf("blob: pull %s: %w", reference, err)
			}
			if present {
				count(&res.Present, l.desc.Size)
				meter.Present(l.desc.Size)
			} else {
				count(&res.Installed, l.desc.Size)
				meter.Moved()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return res, nil
}

// install streams one blob from the registry into a Writer. It reports
// true if another writer installed the blob first.
func (s *Store) install(ctx context.Context, repo *registry.Repository, l storeLayer, meter *registry.Meter) (bool, error) {
	w, err := s.Create(l.name, l.desc.Size)
	if errors.Is(err, fs.ErrExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if _, err := repo.CopyBlob(ctx, l.desc.Digest, l.desc.Size, meter.Writer(w)); err != nil {
		w.Abort()
		return false, fmt.Errorf("blob %s: %w", l.name, err)
	}
	err = w.Close()
	switch {
	case errors.Is(err, fs.ErrExist):
		return true, nil
	case errors.Is(err, ErrIntegrity):
		return false, fmt.Errorf("blob %s: the registry's bytes match their sha256 %s but not the name the manifest gives them: %w", l.name, l.desc.Digest, err)
	}
	return false, err
}
