package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	orasreg "oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/sealfs/sealfs/errs"
)

// Options configure how a Repository talks to its registry. A nil *Options
// means the zero value: HTTPS with the system's certificate authorities and
// docker's stored credentials.
type Options struct {
	// PlainHTTP talks HTTP instead of HTTPS (a registry on a trusted
	// network or loopback without TLS).
	PlainHTTP bool
	// CAFile is a PEM file of certificate authorities to trust for the
	// registry's certificate, in addition to the system's.
	CAFile string
	// Username and Password are the credentials to present. When Username
	// is empty, credentials come from docker's configuration instead.
	Username string
	Password string
	// NoDockerConfig does not look up docker's stored credentials: without
	// Username, requests go out anonymously.
	NoDockerConfig bool
	// WrapTransport, if set, wraps the HTTP transport beneath retries and
	// authentication: tests count requests with it or make them fail.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Repository is one repository of a registry, opened with Open.
type Repository struct {
	ref    Reference
	remote *remote.Repository
	stats  *counters
}

// Stats counts what a Repository has sent and received over the network,
// HTTP bodies only (headers and retries included).
type Stats struct {
	Requests      int64
	BytesSent     int64
	BytesReceived int64
}

type counters struct{ requests, sent, received atomic.Int64 }

// manifestMediaTypes are accepted when resolving a tag.
var manifestMediaTypes = []string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}

// Open prepares access to the repository ref names (its tag and digest are
// ignored). It reads opts.CAFile and docker's configuration but does not
// contact the registry: the first request does.
func Open(ref Reference, opts *Options) (*Repository, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := ref.validate(); err != nil {
		return nil, fmt.Errorf("registry: reference %q: %w: %w", ref, err, fs.ErrInvalid)
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 32
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("registry: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry: CA file %s holds no PEM certificate: %w", opts.CAFile, fs.ErrInvalid)
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = base
	if opts.WrapTransport != nil {
		rt = opts.WrapTransport(rt)
	}
	stats := &counters{}
	rt = retry.NewTransport(&countingTransport{rt, stats})

	client := &auth.Client{Client: &http.Client{Transport: rt}, Cache: auth.NewCache()}
	client.SetUserAgent("sealfs")
	switch {
	case opts.Username != "":
		if opts.Password == "" {
			return nil, fmt.Errorf("registry: a username needs a password: %w", fs.ErrInvalid)
		}
		client.Credential = auth.StaticCredential(ref.Registry, auth.Credential{Username: opts.Username, Password: opts.Password})
	case !opts.NoDockerConfig:
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("registry: docker credentials: %w", err)
		}
		client.Credential = credentials.Credential(store)
	}
	return &Repository{
		ref: Reference{Registry: ref.Registry, Repository: ref.Repository},
		remote: &remote.Repository{
			Client:             client,
			Reference:          orasreg.Reference{Registry: ref.Registry, Repository: ref.Repository},
			PlainHTTP:          opts.PlainHTTP,
			ManifestMediaTypes: manifestMediaTypes,
		},
		stats: stats,
	}, nil
}

// Reference returns REGISTRY/REPOSITORY (no tag, no digest).
func (r *Repository) Reference() Reference { return r.ref }

// Stats returns the traffic so far.
func (r *Repository) Stats() Stats {
	return Stats{Requests: r.stats.requests.Load(), BytesSent: r.stats.sent.Load(), BytesReceived: r.stats.received.Load()}
}

func (r *Repository) classify(op string, err error) error {
	return classify(r.ref.Registry, op, err)
}

// Resolve returns the descriptor of the manifest that reference (a tag or
// a digest) names, with a HEAD request.
func (r *Repository) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	d, err := r.remote.Resolve(ctx, reference)
	return d, r.classify("resolve "+r.name(reference), err)
}

// FetchManifest fetches the manifest reference (a tag or a digest) names,
// at most limit bytes, and checks it against the digest the registry gave
// for it (or the one asked for) before returning it.
func (r *Repository) FetchManifest(ctx context.Context, reference string, limit int64) (ocispec.Descriptor, []byte, error) {
	op := "fetch manifest " + r.name(reference)
	desc, rc, err := r.remote.Manifests().FetchReference(ctx, reference)
	if err != nil {
		return desc, nil, r.classify(op, err)
	}
	defer rc.Close()
	if want, err := digest.Parse(reference); err == nil && want != desc.Digest {
		return desc, nil, r.classify(op, fmt.Errorf("the registry answered with manifest %s: %w", desc.Digest, ErrDigestMismatch))
	}
	if desc.Size > limit {
		return desc, nil, fmt.Errorf("registry %s: %s: %d bytes, more than the %d accepted: %w", r.ref.Registry, op, desc.Size, limit, errs.ErrUnsupported)
	}
	b, err := readVerified(rc, desc.Digest, desc.Size)
	if err != nil {
		return desc, nil, r.classify(op, err)
	}
	return desc, b, nil
}

// PushManifest uploads a manifest and, if tag is not empty, tags it. The
// blobs it references must be in the repository already.
func (r *Repository) PushManifest(ctx context.Context, mediaType string, raw []byte, tag string) (ocispec.Descriptor, error) {
	desc := content.NewDescriptorFromBytes(mediaType, raw)
	var err error
	if tag != "" {
		err = r.remote.PushReference(ctx, desc, bytes.NewReader(raw), tag)
	} else {
		err = r.remote.Push(ctx, desc, bytes.NewReader(raw))
	}
	return desc, r.classify("push manifest "+r.name(tag), err)
}

// name is REGISTRY/REPOSITORY:TAG or @DIGEST for reference.
func (r *Repository) name(reference string) string {
	switch {
	case reference == "":
		return r.ref.Name()
	case strings.Contains(reference, ":"):
		return r.ref.Name() + "@" + reference
	}
	return r.ref.Name() + ":" + reference
}

// Exists reports whether the repository has blob d (a HEAD request).
func (r *Repository) Exists(ctx context.Context, d digest.Digest) (bool, error) {
	ok, err := r.remote.Blobs().Exists(ctx, ocispec.Descriptor{Digest: d})
	return ok, r.classify("check blob "+d.String(), err)
}

// Tags lists the repository's tags.
func (r *Repository) Tags(ctx context.Context) ([]string, error) {
	var out []string
	err := r.remote.Tags(ctx, "", func(tags []string) error {
		out = append(out, tags...)
		return nil
	})
	return out, r.classify("list tags of "+r.ref.Name(), err)
}

// ReadBlob fetches blob d whole and returns it once it matches d and, when
// size >= 0, has size bytes. A blob larger than limit bytes is refused
// before it is read (errs.ErrCorrupt).
func (r *Repository) ReadBlob(ctx context.Context, d digest.Digest, size, limit int64) ([]byte, error) {
	op := "fetch blob " + d.String()
	rc, n, err := r.openBlob(ctx, d, size)
	if err != nil {
		return nil, r.classify(op, err)
	}
	defer rc.Close()
	if n > limit {
		return nil, fmt.Errorf("registry %s: %s: %d bytes, more than the %d allowed here: %w", r.ref.Registry, op, n, limit, errs.ErrCorrupt)
	}
	b, err := readVerified(rc, d, n)
	return b, r.classify(op, err)
}

// CopyBlob streams blob d to w and returns the bytes copied. The bytes
// reach w before they can be checked: an error means w received a blob
// that is wrong or incomplete, and the caller must discard it
// (ErrDigestMismatch when the registry sent other bytes).
func (r *Repository) CopyBlob(ctx context.Context, d digest.Digest, size int64, w io.Writer) (int64, error) {
	op := "fetch blob " + d.String()
	rc, n, err := r.openBlob(ctx, d, size)
	if err != nil {
		return 0, r.classify(op, err)
	}
	defer rc.Close()
	h, err := newHash(d)
	if err != nil {
		return 0, err
	}
	k, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, n+1))
	if err == nil {
		err = checkSum(d, n, k, h)
	}
	return k, r.classify(op, err)
}

// openBlob starts a GET of blob d and returns its body and size, checking
// the size the registry announces against size (if >= 0).
func (r *Repository) openBlob(ctx context.Context, d digest.Digest, size int64) (io.ReadCloser, int64, error) {
	if _, err := newHash(d); err != nil {
		return nil, 0, err
	}
	desc, rc, err := r.remote.Blobs().FetchReference(ctx, d.String())
	if err != nil {
		return nil, 0, err
	}
	if size >= 0 && desc.Size != size {
		rc.Close()
		return nil, 0, fmt.Errorf("the registry has %d bytes for it, %d expected: %w", desc.Size, size, ErrDigestMismatch)
	}
	return rc, desc.Size, nil
}

// newHash returns the hash for d's algorithm; only sha256 is accepted.
func newHash(d digest.Digest) (hash.Hash, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("registry: digest %q: %v: %w", d, err, errs.ErrCorrupt)
	}
	if d.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("registry: digest %q: %w", d, errs.ErrUnsupportedAlgorithm)
	}
	return sha256.New(), nil
}

// readVerified reads exactly size bytes from r and checks them against d.
func readVerified(r io.Reader, d digest.Digest, size int64) ([]byte, error) {
	h, err := newHash(d)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("negative size %d: %w", size, errs.ErrCorrupt)
	}
	b := make([]byte, size)
	n, err := io.ReadFull(r, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if n == len(b) {
		// One more byte means the body is longer than announced.
		var one [1]byte
		if k, _ := io.ReadFull(r, one[:]); k > 0 {
			n++
		}
	}
	h.Write(b[:min(n, len(b))])
	if err := checkSum(d, size, int64(n), h); err != nil {
		return nil, err
	}
	return b, nil
}

// checkSum compares what was read (got bytes, hashed into h) with what d
// and size promise.
func checkSum(d digest.Digest, size, got int64, h hash.Hash) error {
	if got != size {
		return fmt.Errorf("got %d bytes, %d expected: %w", got, size, ErrDigestMismatch)
	}
	if sum := digest.NewDigest(d.Algorithm(), h); sum != d {
		return fmt.Errorf("the registry sent bytes with digest %s: %w", sum, ErrDigestMismatch)
	}
	return nil
}

// countingTransport counts requests and body bytes in both directions.
type countingTransport struct {
	next http.RoundTripper
	c    *counters
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.c.requests.Add(1)
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &countingBody{req.Body, &t.c.sent}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.Body != nil {
		resp.Body = &countingBody{resp.Body, &t.c.received}
	}
	if resp.StatusCode == http.StatusBadRequest && req.URL.Scheme == "http" {
		// Go's TLS servers (distribution among them) answer a plain HTTP
		// request with this 400; say what happened instead.
		const tlsHint = "Client sent an HTTP request to an HTTPS server"
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		if bytes.Contains(b, []byte(tlsHint)) {
			return nil, errPlainToTLS
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

// errPlainToTLS: a plain HTTP request reached a TLS server.
var errPlainToTLS = errors.New("the registry answered a plain HTTP request as a TLS server")

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}
