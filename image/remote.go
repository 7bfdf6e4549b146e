package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/registry"
)

// Remote is a Source for the images of one repository in an OCI registry:
// the lazy path behind `image mount REGISTRY/REPO:TAG`. Manifests are
// fetched from the registry every time (tags move); blobs are fetched whole
// when first needed, checked against their sha256 name, and kept in a local
// cache directory, from which later reads, mounts and pulls take them.
//
// The cache is an OCI image layout holding blobs only (no tags), shared by
// every image, repository, registry and process that uses it: a blob is
// the same bytes wherever it comes from, because it is named by its sha256
// and is only ever written after matching it. Copies are written through
// the layout's verify-then-link path, so a crash never leaves a partial
// blob under a blob's name; a copy damaged later is found when read
// (Remote checks its sha256 again), removed and fetched anew. Nothing that
// failed its check is ever written to the cache. The cache is not bounded:
// delete the directory to reclaim its space.
//
// A *Remote is safe for concurrent use; concurrent reads of one blob wait
// for a single fetch.
type Remote struct {
	repo    *registry.Repository
	cache   *Layout
	timeout time.Duration

	flight singleflight.Group

	fetchedBlobs, fetchedBytes atomic.Int64
	cachedBlobs, cachedBytes   atomic.Int64
	cacheErrors                atomic.Int64
}

// RemoteOptions configure NewRemote.
type RemoteOptions struct {
	// CacheDir is the cache directory, created (as an OCI layout) if it
	// does not exist. "" means no cache: every blob is fetched when read
	// (an Image still keeps the most recent ones in memory).
	CacheDir string
	// FetchTimeout bounds each fetch of a blob from the registry (retries
	// included), so that a read of a lazy mount fails (EIO) rather than
	// hangs when the registry stops answering; 0 means DefaultFetchTimeout.
	FetchTimeout time.Duration
}

// DefaultFetchTimeout is how long a Remote waits for one blob.
const DefaultFetchTimeout = 2 * time.Minute

// RemoteStats count where a Remote's blobs came from.
type RemoteStats struct {
	// Fetched are the blobs fetched from the registry.
	Fetched registry.Count `json:"fetched"`
	// Cached are the blobs found in the cache.
	Cached registry.Count `json:"cached"`
	// CacheErrors counts copies that could not be written to the cache
	// (a full or read-only disk); reads went on without them.
	CacheErrors int64 `json:"cache_errors"`
}

// NewRemote makes a Source of repo's images.
func NewRemote(repo *registry.Repository, opts *RemoteOptions) (*Remote, error) {
	r := &Remote{repo: repo, timeout: DefaultFetchTimeout}
	if opts != nil && opts.FetchTimeout > 0 {
		r.timeout = opts.FetchTimeout
	}
	if opts != nil && opts.CacheDir != "" {
		c, err := openCache(opts.CacheDir)
		if err != nil {
			return nil, err
		}
		r.cache = c
	}
	return r, nil
}

// openCache opens or creates the cache layout in dir (its parents too).
func openCache(dir string) (*Layout, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("image: cache: %w", err)
	}
	c, err := createLayout(dir)
	if err != nil {
		return nil, fmt.Errorf("image: cache %s: %w", dir, err)
	}
	return c, nil
}

// Repository returns the repository the Remote reads.
func (r *Remote) Repository() *registry.Repository { return r.repo }

// Stats returns the counts so far.
func (r *Remote) Stats() RemoteStats {
	return RemoteStats{
		Fetched:     registry.Count{Blobs: int(r.fetchedBlobs.Load()), Bytes: r.fetchedBytes.Load()},
		Cached:      registry.Count{Blobs: int(r.cachedBlobs.Load()), Bytes: r.cachedBytes.Load()},
		CacheErrors: r.cacheErrors.Load(),
	}
}

// FetchManifest fetches the manifest reference names from the registry,
// checked against the digest the registry resolved it to.
func (r *Remote) FetchManifest(ctx context.Context, reference string) (Descriptor, []byte, error) {
	desc, raw, err := r.repo.FetchManifest(ctx, reference, maxJSONSize)
	if err != nil {
		return Descriptor{}, nil, err
	}
	return Descriptor{MediaType: desc.MediaType, Digest: desc.Digest.String(), Size: desc.Size}, raw, nil
}

// FetchBlob returns blob d from the cache or, failing that, from the
// registry, in which case it is written to the cache after it matched its
// sha256.
func (r *Remote) FetchBlob(ctx context.Context, d Digest, size, limit int64) ([]byte, error) {
	v, err, _ := r.flight.Do(d.String(), func() (any, error) {
		return r.fetch(ctx, d, size, limit)
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

func (r *Remote) fetch(ctx context.Context, d Digest, size, limit int64) ([]byte, error) {
	if b, ok := r.fromCache(d, size, limit); ok {
		return b, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	b, err := r.repo.ReadBlob(ctx, digest.Digest(d.OCI()), size, limit)
	if err != nil {
		return nil, err
	}
	r.fetchedBlobs.Add(1)
	r.fetchedBytes.Add(int64(len(b)))
	r.toCache(d, b)
	return b, nil
}

// fromCache returns the cached copy of d if there is one that matches its
// name; a damaged copy is removed.
func (r *Remote) fromCache(d Digest, size, limit int64) ([]byte, bool) {
	if r.cache == nil {
		return nil, false
	}
	b, err := r.cache.readBlob(d, size, limit)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			os.Remove(r.cache.BlobPath(d))
		}
		return nil, false
	}
	r.cachedBlobs.Add(1)
	r.cachedBytes.Add(int64(len(b)))
	return b, true
}

// toCache writes b, which matched its name d, to the cache.
func (r *Remote) toCache(d Digest, b []byte) {
	if r.cache == nil {
		return
	}
	if err := writeNewFile(r.cache.BlobPath(d), b); err != nil {
		r.cacheErrors.Add(1)
	}
}

// Prefetch fetches every chunk the image's visible files use, concurrency
// at a time, and returns when all are fetched, so that reading the files
// afterwards finds them in the source's cache: what extracting an image
// from a registry does first. Each chunk is checked as a read would check
// it (sha256, and the fs-verity chain when the image has a root digest).
// progress, if not nil, follows it. Prefetch only helps a Source that
// keeps copies (a Remote with a cache).
func (im *Image) Prefetch(ctx context.Context, concurrency int, progress registry.ProgressFunc) error {
	chunks, _, err := im.visibleChunks()
	if err != nil {
		return err
	}
	meter := registry.NewMeter(len(chunks), 0, progress)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, concurrency))
	for _, d := range chunks {
		g.Go(func() error {
			b, err := im.fetchVerified(gctx, d, -1, MaxChunkSize)
			if err != nil {
				return fmt.Errorf("image: chunk %s: %w", d, err)
			}
			if err := im.checkChunkVerity(d, b); err != nil {
				return err
			}
			meter.Present(int64(len(b)))
			return nil
		})
	}
	return g.Wait()
}

// visibleChunks returns the distinct chunk blobs the files of the visible
// tree use, in walk order, and how many regular files (each inode once)
// and bytes they hold.
func (im *Image) visibleChunks() ([]Digest, TagUsage, error) {
	var tu TagUsage
	var out []Digest
	seenChunk := map[Digest]bool{}
	seenIno := map[uint64]bool{}
	err := im.Walk(func(_ string, in *Inode) error {
		if in.Type != TypeFile || seenIno[in.Ino] {
			return nil
		}
		seenIno[in.Ino] = true
		tu.Files++
		tu.LogicalBytes += in.Size()
		for _, c := range in.Chunks {
			if !seenChunk[c.Blob.Digest] {
				seenChunk[c.Blob.Digest] = true
				out = append(out, c.Blob.Digest)
			}
		}
		return nil
	})
	return out, tu, err
}

// checkChunkVerity checks a stored chunk blob against the fs-verity digest
// the rootfs records for it, when the image is verity-checked.
func (im *Image) checkChunkVerity(d Digest, stored []byte) error {
	if !im.Verity {
		return nil
	}
	want, ok := im.Rootfs.VerityOf(d)
	if !ok {
		return fmt.Errorf("image: chunk %s: the rootfs records no fs-verity digest for it: %w", d, errs.ErrAuthentication)
	}
	if got := VerityDigest(stored); got != want {
		return fmt.Errorf("image: chunk %s: fs-verity digest %s, rootfs says %s: %w", d, got, want, errs.ErrAuthentication)
	}
	return nil
}
