package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/registry"
)

// PullOptions tune Pull. The zero value pulls with the defaults.
type PullOptions struct {
	// RootDigest, if set, is the trusted fs-verity digest of the image
	// manifest: the manifest, the rootfs and every chunk are checked
	// against the chain before the tag is written.
	RootDigest *Digest
	// CacheDir is a Remote's cache directory: blobs found there (and
	// matching their names) are copied instead of fetched. It is only
	// read.
	CacheDir string
	// Concurrency is how many blobs are fetched at a time; 0 means
	// registry.DefaultConcurrency.
	Concurrency int
	// Progress, if set, follows the transfer.
	Progress registry.ProgressFunc
}

// PullResult describes a pull.
type PullResult struct {
	Tag string
	// Manifest is the manifest blob's sha256.
	Manifest Digest
	// RootDigest is the manifest's fs-verity digest, the image's root of
	// trust; with PullOptions.RootDigest it was checked to be that.
	RootDigest Digest
	Verity     bool
	// Fetched, Cached and Present count the blobs fetched from the
	// registry, copied from the cache, and found in the layout already.
	Fetched registry.Count
	Cached  registry.Count
	Present registry.Count
}

// Pull copies the image that reference (a tag or a digest) names in repo
// into the OCI layout ociDir (created if needed) and tags it tag there.
//
// Blobs go through the same verify-then-link path as Build: each is
// fetched whole, checked against its sha256 (and, with a root digest, its
// fs-verity digest) and only then linked into blobs/sha256 under its name;
// blobs are synced, then the manifest, and index.json is replaced
// atomically last. An interrupted pull therefore leaves the layout's tags
// as they were and only whole blobs behind, and a second pull finds those
// (each is read and checked again) and fetches the rest.
//
// The blobs pulled are the manifest's config, rootfs and chunk layers, and
// any chunk the image's visible files use that the manifest does not list.
// A manifest that is not a PuzzleFS image manifest is errs.ErrUnsupported.
func Pull(ctx context.Context, repo *registry.Repository, reference, ociDir, tag string, opts PullOptions) (*PullResult, error) {
	if !ValidTag(tag) {
		return nil, fmt.Errorf("image: tag %q: want letters, digits, '_', '.' or '-', at most 128, not starting with '.' or '-': %w", tag, fs.ErrInvalid)
	}
	name := remoteName(repo, reference)
	lay, err := createLayout(ociDir)
	if err != nil {
		return nil, err
	}
	var cache *Layout
	if opts.CacheDir != "" {
		if c, err := OpenLayout(opts.CacheDir); err == nil {
			cache = c
		}
	}
	desc, raw, err := repo.FetchManifest(ctx, reference, maxJSONSize)
	if err != nil {
		return nil, fmt.Errorf("image: pull: %w", err) // it names the reference
	}
	if desc.MediaType != MediaTypeImageManifest {
		return nil, fmt.Errorf("image: pull %s: media type %q, want %q (not a PuzzleFS image): %w", name, desc.MediaType, MediaTypeImageManifest, errs.ErrUnsupported)
	}
	md := Digest(sha256.Sum256(raw)) // FetchManifest checked it is desc.Digest
	m, err := parseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("image: pull %s: manifest %s: %w", name, md, err)
	}
	m.Tag, m.Digest = reference, md
	res := &PullResult{Tag: tag, Manifest: md, RootDigest: VerityDigest(raw), Verity: opts.RootDigest != nil}
	if opts.RootDigest != nil {
		if res.RootDigest != *opts.RootDigest {
			return nil, fmt.Errorf("image: pull %s: manifest %s has fs-verity digest %s, not the trusted %s: %w", name, md, res.RootDigest, *opts.RootDigest, errs.ErrAuthentication)
		}
		if len(m.RootfsVerity) != len(Digest{}) {
			return nil, fmt.Errorf("image: pull %s: rootfs layer has no %s annotation to verify it by: %w", name, AnnotationVerityRootHash, errs.ErrAuthentication)
		}
	}
	p := &puller{repo: repo, lay: lay, cache: cache, res: res}

	// The rootfs first: it says which chunks the files need, and with a
	// root digest it is what the chunks are checked against.
	var rootfsVerity *Digest
	if opts.RootDigest != nil {
		rootfsVerity = (*Digest)(m.RootfsVerity)
	}
	rootfsRaw, err := p.get(ctx, m.RootfsDigest, m.Rootfs.Size, maxRootfsSize, rootfsVerity, nil)
	if err != nil {
		return nil, fmt.Errorf("image: pull %s: rootfs: %w", name, err)
	}
	rootfs, err := ReadRootfs(rootfsRaw)
	if err != nil {
		return nil, fmt.Errorf("image: pull %s: rootfs %s: %w", name, m.RootfsDigest, err)
	}
	im := &Image{Manifest: m, Rootfs: rootfs}
	visible, _, err := im.visibleChunks()
	if err != nil {
		return nil, fmt.Errorf("image: pull %s: %w", name, err)
	}

	type job struct {
		d    Digest
		size int64 // checked; -1 when not known for sure
		hint int64 // for progress only
	}
	var jobs []job
	var total int64
	seen := map[Digest]bool{m.RootfsDigest: true}
	add := func(d Digest, size, hint int64) {
		if !seen[d] {
			seen[d] = true
			jobs = append(jobs, job{d, size, hint})
			total += max(hint, 0)
		}
	}
	cfg := configDigestOf(m)
	add(cfg, m.JSON.Config.Size, m.JSON.Config.Size)
	for _, c := range m.Chunks {
		d, _ := ParseDigest(c.Digest) // parseManifest checked it
		// Not checked: puzzlefs gives compressed chunks their
		// uncompressed size; the sha256 settles what the blob is.
		add(d, -1, c.Size)
	}
	for _, d := range visible {
		add(d, -1, 0)
	}
	meter := registry.NewMeter(len(jobs), total, opts.Progress)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, cmpOr(opts.Concurrency, registry.DefaultConcurrency)))
	for _, j := range jobs {
		g.Go(func() error {
			var want *Digest
			if opts.RootDigest != nil && j.d != cfg {
				v, ok := rootfs.VerityOf(j.d)
				if !ok {
					return fmt.Errorf("image: pull %s: chunk %s: the rootfs records no fs-verity digest for it: %w", name, j.d, errs.ErrAuthentication)
				}
				want = &v
			}
			limit := int64(MaxChunkSize)
			if j.d == cfg {
				limit = maxJSONSize
			}
			if _, err := p.get(gctx, j.d, j.size, limit, want, meter); err != nil {
				return fmt.Errorf("image: pull %s: blob %s: %w", name, j.d, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := lay.syncBlobs(); err != nil {
		return nil, err
	}
	if err := p.install(md, raw); err != nil {
		return nil, err
	}
	if err := lay.syncBlobs(); err != nil {
		return nil, err
	}
	if err := lay.setTag(tag, Descriptor{
		MediaType:   MediaTypeImageManifest,
		Digest:      md.OCI(),
		Size:        int64(len(raw)),
		Annotations: map[string]string{AnnotationRefName: tag},
	}); err != nil {
		return nil, err
	}
	return res, nil
}

// remoteName is REGISTRY/REPOSITORY:TAG or @DIGEST, for messages.
func remoteName(repo *registry.Repository, reference string) string {
	if strings.Contains(reference, ":") {
		return repo.Reference().Name() + "@" + reference
	}
	return repo.Reference().Name() + ":" + reference
}

// configDigestOf returns the manifest's config digest (zero if malformed,
// which parseManifest refuses).
func configDigestOf(m *Manifest) Digest {
	d, _ := ParseDigest(m.JSON.Config.Digest)
	return d
}

type puller struct {
	repo  *registry.Repository
	lay   *Layout
	cache *Layout

	mu  sync.Mutex // guards res
	res *PullResult
}

// get makes sure the layout holds blob d, checked against its sha256, size
// (if >= 0), limit and fs-verity digest (if verity is not nil), and returns
// its bytes: from the layout if a good copy is there, else from the cache,
// else from the registry.
func (p *puller) get(ctx context.Context, d Digest, size, limit int64, verity *Digest, meter *registry.Meter) ([]byte, error) {
	check := func(b []byte) error {
		if verity != nil {
			if got := VerityDigest(b); got != *verity {
				return fmt.Errorf("fs-verity digest %s, the chain says %s: %w", got, *verity, errs.ErrAuthentication)
			}
		}
		return nil
	}
	if b, err := p.lay.readBlob(d, size, limit); err == nil && check(b) == nil {
		p.count(&p.res.Present, b)
		meter.Present(int64(len(b)))
		return b, nil
	}
	if p.cache != nil {
		if b, err := p.cache.readBlob(d, size, limit); err == nil && check(b) == nil {
			if err := p.install(d, b); err != nil {
				return nil, err
			}
			p.count(&p.res.Cached, b)
			meter.Present(int64(len(b)))
			return b, nil
		}
	}
	var buf bytes.Buffer
	w := meter.Writer(&limitedBuffer{&buf, limit})
	if _, err := p.repo.CopyBlob(ctx, digest.Digest(d.OCI()), size, w); err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, fmt.Errorf("more than the %d bytes allowed: %w", limit, errs.ErrCorrupt)
		}
		return nil, err
	}
	b := buf.Bytes()
	if err := check(b); err != nil {
		return nil, err
	}
	if err := p.install(d, b); err != nil {
		return nil, err
	}
	p.count(&p.res.Fetched, b)
	meter.Moved()
	return b, nil
}

// install links b, which matched its name d, into the layout.
func (p *puller) install(d Digest, b []byte) error {
	if err := writeNewFile(p.lay.BlobPath(d), b); err != nil {
		return fmt.Errorf("image: blob %s: %w", d, err)
	}
	return nil
}

func (p *puller) count(c *registry.Count, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Blobs++
	c.Bytes += int64(len(b))
}

var errTooLarge = errors.New("blob larger than allowed")

// limitedBuffer refuses to grow past max bytes.
type limitedBuffer struct {
	b   *bytes.Buffer
	max int64
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if int64(l.b.Len()+len(p)) > l.max {
		return 0, errTooLarge
	}
	return l.b.Write(p)
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}
