package registry

import (
	"context"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	orasreg "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/sealfs/sealfs/errs"
)

// DefaultConcurrency is how many blobs move at a time unless told otherwise.
const DefaultConcurrency = 4

// Progress is a snapshot of a transfer of many blobs.
type Progress struct {
	Blobs     int   // blobs in the transfer
	BlobsDone int   // blobs finished: moved, mounted or found present
	Bytes     int64 // bytes of all the blobs
	// BytesDone counts the bytes of blobs found present or mounted and the
	// bytes moved so far, so it reaches Bytes when everything is done.
	BytesDone int64
	// Moved counts the bytes actually sent or received.
	Moved int64
}

// ProgressFunc receives progress. Calls are serialized, but may come from
// any goroutine; the function must return quickly.
type ProgressFunc func(Progress)

// Meter keeps the Progress of a transfer and reports every change to a
// ProgressFunc. It is safe for concurrent use; a nil *Meter does nothing.
type Meter struct {
	mu sync.Mutex
	p  Progress
	fn ProgressFunc
}

// NewMeter starts a transfer of blobs totalling bytes. fn may be nil.
func NewMeter(blobs int, bytes int64, fn ProgressFunc) *Meter {
	m := &Meter{p: Progress{Blobs: blobs, Bytes: bytes}, fn: fn}
	m.report()
	return m
}

func (m *Meter) report() {
	if m.fn != nil {
		m.fn(m.p)
	}
}

// Present finishes a blob of size bytes that did not need to move.
func (m *Meter) Present(size int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p.BlobsDone++
	m.p.BytesDone += size
	m.report()
}

// Moved finishes a blob whose bytes were counted through Reader or Writer.
func (m *Meter) Moved() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p.BlobsDone++
	m.report()
}

// Progress returns the current snapshot.
func (m *Meter) Progress() Progress {
	if m == nil {
		return Progress{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.p
}

func (m *Meter) add(n int) {
	if m == nil || n == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.p.BytesDone += int64(n)
	m.p.Moved += int64(n)
	m.report()
}

// Reader counts the bytes read through it as moved.
func (m *Meter) Reader(r io.Reader) io.Reader { return &meterReader{r, m} }

// Writer counts the bytes written through it as moved.
func (m *Meter) Writer(w io.Writer) io.Writer { return &meterWriter{w, m} }

type meterReader struct {
	r io.Reader
	m *Meter
}

func (r *meterReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.m.add(n)
	return n, err
}

type meterWriter struct {
	w io.Writer
	m *Meter
}

func (w *meterWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.m.add(n)
	return n, err
}

// Blob is a local blob to push: its descriptor and a way to read it.
type Blob struct {
	Descriptor ocispec.Descriptor
	// Open returns the blob's bytes. It is called only if the blob is
	// uploaded, at most once, and the reader is closed after the upload.
	Open func() (io.ReadCloser, error)
}

// PushOptions tune PushBlobs. A nil *PushOptions means the defaults.
type PushOptions struct {
	// Concurrency is how many blobs are checked and uploaded at a time;
	// 0 means DefaultConcurrency.
	Concurrency int
	// MountFrom names repositories of the same registry that may hold
	// the blobs already: a blob one of them has is mounted (a cross-
	// repository mount, no bytes uploaded) instead of uploaded.
	MountFrom []string
	// Progress, if set, follows the transfer.
	Progress ProgressFunc
}

// Count is a number of blobs and their bytes.
type Count struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
}

func (c *Count) add(size int64) {
	c.Blobs++
	c.Bytes += size
}

// PushStats says what PushBlobs did with each blob.
type PushStats struct {
	Uploaded Count `json:"uploaded"` // bytes sent
	Mounted  Count `json:"mounted"`  // mounted from another repository
	Skipped  Count `json:"skipped"`  // the repository had them
}

// PushBlobs makes sure the repository has every blob: a HEAD request finds
// those it has (skipped); a blob that a MountFrom repository has is
// mounted; the rest are uploaded (monolithically: POST, then PUT of the
// bytes). Blobs are handled opts.Concurrency at a time. Each upload is
// checked against its descriptor as it is read: a local blob that does not
// match is errs.ErrAuthentication and is not committed by the registry.
// Repeated digests are pushed once. On error, blobs already pushed stay in
// the registry (a later push skips them).
func (r *Repository) PushBlobs(ctx context.Context, blobs []Blob, opts *PushOptions) (PushStats, error) {
	if opts == nil {
		opts = &PushOptions{}
	}
	seen := map[digest.Digest]bool{}
	var todo []Blob
	var total int64
	for _, b := range blobs {
		if seen[b.Descriptor.Digest] {
			continue
		}
		if _, err := newHash(b.Descriptor.Digest); err != nil {
			return PushStats{}, err
		}
		seen[b.Descriptor.Digest] = true
		todo = append(todo, b)
		total += b.Descriptor.Size
	}
	meter := NewMeter(len(todo), total, opts.Progress)
	var mu sync.Mutex
	var st PushStats
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, cmpOr(opts.Concurrency, DefaultConcurrency)))
	for _, b := range todo {
		g.Go(func() error {
			how, err := r.pushBlob(gctx, b, opts.MountFrom, meter)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			switch how {
			case pushedSkipped:
				st.Skipped.add(b.Descriptor.Size)
			case pushedMounted:
				st.Mounted.add(b.Descriptor.Size)
			default:
				st.Uploaded.add(b.Descriptor.Size)
			}
			return nil
		})
	}
	err := g.Wait()
	return st, err
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

type pushOutcome int

const (
	pushedUploaded pushOutcome = iota
	pushedMounted
	pushedSkipped
)

func (r *Repository) pushBlob(ctx context.Context, b Blob, mountFrom []string, meter *Meter) (pushOutcome, error) {
	desc := b.Descriptor
	op := "push blob " + desc.Digest.String()
	ok, err := r.remote.Blobs().Exists(ctx, desc)
	if err != nil {
		return 0, r.classify(op, err)
	}
	if ok {
		meter.Present(desc.Size)
		return pushedSkipped, nil
	}
	uploaded := false
	open := func() (io.ReadCloser, error) {
		uploaded = true
		rc, err := b.Open()
		if err != nil {
			return nil, err
		}
		return &verifyingReader{r: meter.Reader(rc), c: rc, desc: desc, h: mustHash(desc.Digest)}, nil
	}
	for _, from := range mountFrom {
		if from == r.ref.Repository {
			continue
		}
		src := &remote.Repository{Client: r.remote.Client, PlainHTTP: r.remote.PlainHTTP,
			Reference: orasreg.Reference{Registry: r.ref.Registry, Repository: from}}
		has, err := src.Blobs().Exists(ctx, desc)
		if err != nil || !has {
			continue // a source we cannot read is no source
		}
		if err := r.remote.Mount(ctx, desc, from, open); err != nil {
			return 0, r.classify(op, err)
		}
		if uploaded {
			meter.Moved()
			return pushedUploaded, nil
		}
		meter.Present(desc.Size)
		return pushedMounted, nil
	}
	rc, err := open()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer rc.Close()
	if err := r.remote.Push(ctx, desc, rc); err != nil {
		return 0, r.classify(op, err)
	}
	meter.Moved()
	return pushedUploaded, nil
}

func mustHash(d digest.Digest) hash.Hash {
	h, err := newHash(d)
	if err != nil {
		panic("registry: BUG: digest checked by PushBlobs fails later: " + err.Error())
	}
	return h
}

// verifyingReader hashes a local blob as it is uploaded and checks it
// before its last bytes leave: the read that completes the blob returns
// them only if the blob matches its descriptor and has nothing more, and
// fails without them otherwise, so the registry never receives a whole
// upload to commit (or to answer with its own error first, which would
// race with ours).
type verifyingReader struct {
	r    io.Reader
	c    io.Closer
	desc ocispec.Descriptor
	h    hash.Hash
	n    int64
	done bool
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.done {
		return 0, io.EOF
	}
	k, err := v.r.Read(p)
	v.h.Write(p[:k])
	v.n += int64(k)
	if v.n > v.desc.Size {
		return 0, v.tooLong()
	}
	if err != nil && err != io.EOF {
		return k, err
	}
	if v.n < v.desc.Size {
		if err == io.EOF {
			return 0, fmt.Errorf("local blob %s has %d bytes, %d expected: %w", v.desc.Digest, v.n, v.desc.Size, errs.ErrAuthentication)
		}
		return k, nil
	}
	// The blob is complete: nothing may follow, and it must match.
	if err == nil {
		var one [1]byte
		m, err := io.ReadFull(v.r, one[:])
		if m > 0 {
			return 0, v.tooLong()
		}
		if err != io.EOF {
			return 0, err
		}
	}
	if sum := digest.NewDigest(v.desc.Digest.Algorithm(), v.h); sum != v.desc.Digest {
		return 0, fmt.Errorf("local blob %s does not match its name (its digest is %s): %w", v.desc.Digest, sum, errs.ErrAuthentication)
	}
	v.done = true
	return k, nil
}

func (v *verifyingReader) tooLong() error {
	return fmt.Errorf("local blob %s is longer than its %d bytes: %w", v.desc.Digest, v.desc.Size, errs.ErrAuthentication)
}

func (v *verifyingReader) Close() error { return v.c.Close() }
