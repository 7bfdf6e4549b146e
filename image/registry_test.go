package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/registry"
	"github.com/sealfs/sealfs/registry/registrytest"
)

// randomTree writes a tree of files with pseudo-random (incompressible,
// so every chunk distinct) contents: sizes[i] bytes in file i, spread over
// two directories, plus a symlink and an empty file.
func randomTree(t testing.TB, seed uint64, sizes ...int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, d := range []string{"bin", "lib/sub"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range sizes {
		b := make([]byte, n)
		for k := range b {
			b[k] = byte(rng.Uint32())
		}
		sub := "bin"
		if i%2 == 1 {
			sub = "lib/sub"
		}
		if err := os.WriteFile(filepath.Join(dir, sub, fmt.Sprintf("f%d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/f0", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sameFiles compares two trees: names, types, permission bits, file
// contents and symlink targets.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	list := func(root string) map[string]string {
		m := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			desc := fi.Mode().String()
			switch {
			case fi.Mode().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" %x", sha256.Sum256(b))
			case fi.Mode()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				desc += " -> " + target
			}
			m[rel] = desc
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	w, g := list(want), list(got)
	for k, v := range w {
		if g[k] != v {
			t.Errorf("%s: %q, want %q", k, g[k], v)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("%s: not in the source tree", k)
		}
	}
}

func build(t *testing.T, src, oci, tag, base string) *BuildResult {
	t.Helper()
	r, err := Build(context.Background(), src, oci, tag, BuildOptions{Base: base})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func openLayout(t *testing.T, dir string) *Layout {
	t.Helper()
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestPushPullExtract: push, pull into another layout, extract with the
// root digest: the tree comes back, and the manifest is the same bytes.
func TestPushPullExtract(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	src := randomTree(t, 1, 300<<10, 70<<10, 1<<20, 5)
	oci := filepath.Join(t.TempDir(), "oci")
	br := build(t, src, oci, "v1", "")
	repo := srv.Repository(t, "sealfs/img", nil)

	pr, err := Push(ctx, openLayout(t, oci), "v1", repo, "v1", PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pr.RootDigest != br.RootDigest || pr.Manifest != br.Manifest {
		t.Errorf("push: root %s manifest %s, build said %s %s", pr.RootDigest, pr.Manifest, br.RootDigest, br.Manifest)
	}
	// config, rootfs and every distinct chunk
	if want := br.NewChunks + 2; pr.Blobs.Uploaded.Blobs != want || pr.Blobs.Skipped.Blobs != 0 {
		t.Errorf("push uploaded %+v, want %d blobs and none skipped", pr.Blobs, want)
	}

	dst := filepath.Join(t.TempDir(), "pulled")
	res, err := Pull(ctx, repo, "v1", dst, "w", PullOptions{RootDigest: &br.RootDigest})
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest != br.Manifest || res.RootDigest != br.RootDigest || res.Fetched.Blobs != br.NewChunks+2 {
		t.Errorf("pull: %+v", res)
	}
	l := openLayout(t, dst)
	im, err := l.OpenImage("w", &br.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := im.Extract(out, ExtractOptions{Owners: OwnersIgnore}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, src, out)

	// Pulling again finds everything in place.
	res, err = Pull(ctx, repo, "v1", dst, "w", PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched.Blobs != 0 || res.Present.Blobs != br.NewChunks+2 {
		t.Errorf("second pull: fetched %+v present %+v, want nothing fetched and %d present", res.Fetched, res.Present, br.NewChunks+2)
	}

	// A wrong root digest is refused before anything is tagged.
	bad := br.RootDigest
	bad[0] ^= 1
	dst2 := filepath.Join(t.TempDir(), "pulled2")
	if _, err := Pull(ctx, repo, "v1", dst2, "w", PullOptions{RootDigest: &bad}); !errors.Is(err, errs.ErrAuthentication) {
		t.Errorf("pull with a wrong root digest: %v, want errs.ErrAuthentication", err)
	}
	if _, err := repo.Resolve(ctx, "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("resolve a missing tag: %v", err)
	}
	if _, err := Pull(ctx, repo, "nope", dst2, "w", PullOptions{}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("pull of a missing tag: %v, want registry.ErrNotFound", err)
	}
}

// TestPushOnlyChanged: the second version of a tree uploads its new chunks
// and its metadata, nothing else, measured on the wire.
func TestPushOnlyChanged(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	src := randomTree(t, 2, 2<<20, 1<<20, 700<<10)
	oci := filepath.Join(t.TempDir(), "oci")
	build(t, src, oci, "v1", "")
	repo := srv.Repository(t, "sealfs/img", nil)
	if _, err := Push(ctx, openLayout(t, oci), "v1", repo, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}

	// Change 100 bytes in the middle of the largest file.
	p := filepath.Join(src, "bin", "f0")
	b, _ := os.ReadFile(p)
	copy(b[1<<20:], bytes.Repeat([]byte("x"), 100))
	os.WriteFile(p, b, 0o644)
	v2 := build(t, src, oci, "v2", "v1")
	if v2.NewChunks == 0 || v2.NewChunks > 3 {
		t.Fatalf("v2 has %d new chunks; the test wants a small change", v2.NewChunks)
	}

	before := repo.Stats().BytesSent
	pr, err := Push(ctx, openLayout(t, oci), "v2", repo, "v2", PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent := repo.Stats().BytesSent - before
	m, err := openLayout(t, oci).Manifest("v2")
	if err != nil {
		t.Fatal(err)
	}
	// The new chunks and the new rootfs; the config and the other chunks
	// were there.
	if pr.Blobs.Uploaded.Blobs != v2.NewChunks+1 {
		t.Errorf("uploaded %+v, want %d blobs (the new chunks and the rootfs)", pr.Blobs.Uploaded, v2.NewChunks+1)
	}
	if want := v2.NewBytes + m.Rootfs.Size; pr.Blobs.Uploaded.Bytes != want {
		t.Errorf("uploaded %d bytes, want %d", pr.Blobs.Uploaded.Bytes, want)
	}
	if want := pr.Blobs.Uploaded.Bytes + int64(len(m.Raw)); sent != want {
		t.Errorf("%d body bytes went over the wire, want %d (uploads and the manifest)", sent, want)
	}
	t.Logf("v2: %d bytes sent for a %d-byte tree (%d chunks new, %d skipped)", sent, v2.Bytes, v2.NewChunks, pr.Blobs.Skipped.Blobs)

	// Pushing to another repository of the registry mounts the blobs.
	other := srv.Repository(t, "sealfs/copy", nil)
	pr, err = Push(ctx, openLayout(t, oci), "v2", other, "v2", PushOptions{MountFrom: []string{"sealfs/img"}})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Blobs.Uploaded.Blobs != 0 || pr.Blobs.Mounted.Blobs == 0 {
		t.Errorf("push with MountFrom: %+v, want everything mounted", pr.Blobs)
	}
}

// TestManifestReadByCurl: what Push stores is a standard OCI manifest that
// another client, curl on the registry API, reads: the same bytes, digest
// and media type, and blobs that match their digests.
func TestManifestReadByCurl(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	srv := registrytest.Start(t, registrytest.Options{Auth: true})
	ctx := context.Background()
	src := randomTree(t, 3, 200<<10)
	oci := filepath.Join(t.TempDir(), "oci")
	build(t, src, oci, "v1", "")
	l := openLayout(t, oci)
	if _, err := Push(ctx, l, "v1", srv.Repository(t, "curl/img", nil), "latest", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := l.Manifest("v1")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, accept string) ([]byte, string) {
		hdr := filepath.Join(t.TempDir(), "headers")
		out, err := exec.Command(curl, "-sS", "--fail", "-u", registrytest.Username+":"+registrytest.Password,
			"-H", "Accept: "+accept, "-D", hdr, srv.URL(path)).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", path, err)
		}
		h, _ := os.ReadFile(hdr)
		return out, string(h)
	}
	body, headers := get("/v2/curl/img/manifests/latest", ocispec.MediaTypeImageManifest)
	if !bytes.Equal(body, m.Raw) {
		t.Errorf("curl got a manifest of %d bytes that differs from the layout's %d", len(body), len(m.Raw))
	}
	lower := strings.ToLower(headers)
	if !strings.Contains(lower, "content-type: "+ocispec.MediaTypeImageManifest) {
		t.Errorf("Content-Type is not the OCI manifest type:\n%s", headers)
	}
	if !strings.Contains(lower, "docker-content-digest: "+m.Digest.OCI()) {
		t.Errorf("Docker-Content-Digest is not %s:\n%s", m.Digest.OCI(), headers)
	}
	var std ocispec.Manifest // the OCI project's own type
	if err := json.Unmarshal(body, &std); err != nil {
		t.Fatal(err)
	}
	if std.SchemaVersion != 2 || std.Config.MediaType != ocispec.MediaTypeEmptyJSON || len(std.Layers) < 2 || std.Layers[0].MediaType != MediaTypeRootfs {
		t.Errorf("manifest as the OCI types read it: %+v", std)
	}
	for _, layer := range std.Layers {
		blob, _ := get("/v2/curl/img/blobs/"+layer.Digest.String(), "*/*")
		if sum := sha256.Sum256(blob); "sha256:"+hex.EncodeToString(sum[:]) != layer.Digest.String() || int64(len(blob)) != layer.Size {
			t.Errorf("blob %s: curl got %d bytes with sha256 %x", layer.Digest, len(blob), sum)
		}
	}
}

// TestRemoteLazy: an image opened from the registry fetches the rootfs and
// then only the chunks of what is read, keeps them in the cache, and a
// second Remote on the same cache fetches nothing.
func TestRemoteLazy(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	src := randomTree(t, 4, 1<<20, 1<<20, 1<<20, 1<<20)
	oci := filepath.Join(t.TempDir(), "oci")
	br := build(t, src, oci, "v1", "")
	repo := srv.Repository(t, "sealfs/lazy", nil)
	if _, err := Push(ctx, openLayout(t, oci), "v1", repo, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	remote, err := NewRemote(repo, &RemoteOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	received := repo.Stats().BytesReceived
	im, err := OpenImageFrom(ctx, remote, "v1", &br.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	if st := remote.Stats(); st.Fetched.Blobs != 1 {
		t.Errorf("opening fetched %+v, want the rootfs only", st.Fetched)
	}
	in := lookupPath(t, im, "lib/sub/f1")
	got, err := im.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(src, "lib/sub/f1"))
	if !bytes.Equal(got, want) {
		t.Fatal("lib/sub/f1 read from the registry differs from the source")
	}
	chunks := map[Digest]bool{}
	for _, c := range in.Chunks {
		chunks[c.Blob.Digest] = true
	}
	st := remote.Stats()
	if st.Fetched.Blobs != 1+len(chunks) {
		t.Errorf("reading one file fetched %d blobs, want the rootfs and its %d chunks", st.Fetched.Blobs, len(chunks))
	}
	if st.Fetched.Bytes >= br.Bytes/2 {
		t.Errorf("reading a quarter of the image fetched %d of its %d bytes", st.Fetched.Bytes, br.Bytes)
	}
	if wire := repo.Stats().BytesReceived - received; wire > st.Fetched.Bytes+int64(len(im.Manifest.Raw))+64<<10 {
		t.Errorf("%d bytes received for %d bytes of blobs", wire, st.Fetched.Bytes)
	}
	ents, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if len(ents) != 1+len(chunks) {
		t.Errorf("the cache holds %d blobs, want %d", len(ents), 1+len(chunks))
	}

	// A second mount with the same cache fetches no blob for that file.
	remote2, err := NewRemote(repo, &RemoteOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	im2, err := OpenImageFrom(ctx, remote2, "v1", &br.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im2.ReadFile(lookupPath(t, im2, "lib/sub/f1")); err != nil {
		t.Fatal(err)
	}
	if st := remote2.Stats(); st.Fetched.Blobs != 0 || st.Cached.Blobs != 1+len(chunks) {
		t.Errorf("second Remote: %+v, want everything from the cache", st)
	}

	// A pull reuses the cache too.
	res, err := Pull(ctx, repo, "v1", filepath.Join(t.TempDir(), "p"), "v1", PullOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached.Blobs != 1+len(chunks) || res.Fetched.Blobs != br.NewChunks+1-len(chunks) {
		t.Errorf("pull with the cache: %+v", res)
	}

	// Prefetch (what extract from a registry does first) fills the cache.
	if err := im.Prefetch(ctx, 4, nil); err != nil {
		t.Fatal(err)
	}
	ents, _ = os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if len(ents) != 1+br.NewChunks {
		t.Errorf("after Prefetch the cache holds %d blobs, want %d", len(ents), 1+br.NewChunks)
	}
	u, err := im.Usage()
	if err != nil || u.Files != 5 || u.LogicalBytes != uint64(br.Bytes) || u.Chunks != br.NewChunks {
		t.Errorf("Usage = %+v, %v", u, err)
	}
}

func lookupPath(t *testing.T, im *Image, p string) *Inode {
	t.Helper()
	in := im.Root()
	for _, name := range strings.Split(p, "/") {
		var err error
		if in, err = im.Lookup(in, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

// TestRegistryTampered: a chunk altered in the registry's storage fails
// the reads that need it, is never cached, never returned, and a pull of
// the image fails without tagging anything; other files stay readable.
func TestRegistryTampered(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	src := randomTree(t, 5, 300<<10, 300<<10)
	oci := filepath.Join(t.TempDir(), "oci")
	br := build(t, src, oci, "v1", "")
	repo := srv.Repository(t, "sealfs/bad", nil)
	if _, err := Push(ctx, openLayout(t, oci), "v1", repo, "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	remote, err := NewRemote(repo, &RemoteOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	im, err := OpenImageFrom(ctx, remote, "v1", &br.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	bad := lookupPath(t, im, "bin/f0")
	victim := bad.Chunks[0].Blob.Digest
	p := srv.BlobPath(victim.OCI())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if n, err := im.ReadAt(bad, buf, 0); !errors.Is(err, registry.ErrDigestMismatch) || !errors.Is(err, errs.ErrAuthentication) || n != 0 {
		t.Errorf("read of the altered chunk: %d bytes, %v; want none and a digest mismatch", n, err)
	}
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", victim.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the altered chunk is in the cache: %v", err)
	}
	good, err := im.ReadFile(lookupPath(t, im, "lib/sub/f1"))
	if want, _ := os.ReadFile(filepath.Join(src, "lib/sub/f1")); err != nil || !bytes.Equal(good, want) {
		t.Errorf("a file without the altered chunk: %v", err)
	}

	dst := filepath.Join(t.TempDir(), "pulled")
	if _, err := Pull(ctx, repo, "v1", dst, "v1", PullOptions{}); !errors.Is(err, registry.ErrDigestMismatch) {
		t.Errorf("pull: %v, want a digest mismatch", err)
	}
	if tags, err := openLayout(t, dst).Tags(); err != nil || len(tags) != 0 {
		t.Errorf("after a failed pull the layout has tags %q (%v)", tags, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "blobs", "sha256", victim.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the altered chunk was written to the layout: %v", err)
	}
}

// failingTransport fails every blob GET after the first ok ones.
type failingTransport struct {
	next http.RoundTripper
	ok   int64
	n    atomic.Int64
}

func (f *failingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") && f.n.Add(1) > f.ok {
		return nil, errors.New("test: connection cut")
	}
	return f.next.RoundTrip(req)
}

// TestPullResumes: a pull cut off half way leaves a layout that opens, with
// no new tag and only whole blobs, and the next pull fetches the rest.
func TestPullResumes(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	src := randomTree(t, 6, 1<<20, 1<<20, 512<<10)
	oci := filepath.Join(t.TempDir(), "oci")
	br := build(t, src, oci, "v1", "")
	if _, err := Push(ctx, openLayout(t, oci), "v1", srv.Repository(t, "sealfs/resume", nil), "v1", PushOptions{}); err != nil {
		t.Fatal(err)
	}
	opts := srv.Options()
	opts.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &failingTransport{next: rt, ok: 10} }
	cut := srv.Repository(t, "sealfs/resume", opts)
	dst := filepath.Join(t.TempDir(), "pulled")
	if _, err := Pull(ctx, cut, "v1", dst, "v1", PullOptions{Concurrency: 1}); err == nil {
		t.Fatal("the cut pull succeeded")
	}
	l := openLayout(t, dst)
	if tags, err := l.Tags(); err != nil || len(tags) != 0 {
		t.Errorf("after a cut pull the layout has tags %q (%v)", tags, err)
	}
	ents, err := os.ReadDir(filepath.Join(dst, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		d, err := ParseDigest("sha256:" + e.Name())
		if err != nil {
			t.Errorf("stray file %s in blobs/sha256", e.Name())
			continue
		}
		if _, err := l.ReadBlob(d); err != nil {
			t.Errorf("blob left by the cut pull: %v", err)
		}
	}
	if len(ents) != 10 {
		t.Errorf("the cut pull left %d blobs, want the 10 it fetched", len(ents))
	}

	res, err := Pull(ctx, srv.Repository(t, "sealfs/resume", nil), "v1", dst, "v1", PullOptions{RootDigest: &br.RootDigest})
	if err != nil {
		t.Fatal(err)
	}
	total := br.NewChunks + 2 // chunks, config, rootfs
	if res.Present.Blobs != 10 || res.Fetched.Blobs != total-10 {
		t.Errorf("resumed pull: present %+v fetched %+v, want 10 present and %d fetched", res.Present, res.Fetched, total-10)
	}
	im, err := l.OpenImage("v1", &br.RootDigest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := im.Extract(out, ExtractOptions{Owners: OwnersIgnore}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, src, out)
}

// TestSourceIsUntrusted: whatever a Source hands out is checked by the
// Image, so a lying source gets an authentication error, never its bytes.
func TestSourceIsUntrusted(t *testing.T) {
	src := randomTree(t, 7, 100<<10)
	oci := filepath.Join(t.TempDir(), "oci")
	br := build(t, src, oci, "v1", "")
	l := openLayout(t, oci)
	for _, c := range []struct {
		name string
		lie  func(d Digest, b []byte) []byte
	}{
		{"flipped byte", func(_ Digest, b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 1; return b }},
		{"truncated", func(_ Digest, b []byte) []byte { return b[:len(b)-1] }},
	} {
		liar := &lyingSource{Source: l.Source(), lie: c.lie}
		im, err := OpenImageFrom(context.Background(), liar, "v1", &br.RootDigest)
		if !errors.Is(err, errs.ErrAuthentication) {
			t.Errorf("%s rootfs: %v, want errs.ErrAuthentication", c.name, err)
		}
		if im != nil {
			t.Errorf("%s: an image was returned", c.name)
		}
	}
}

type lyingSource struct {
	Source
	lie func(d Digest, b []byte) []byte
}

func (s *lyingSource) FetchBlob(ctx context.Context, d Digest, size, limit int64) ([]byte, error) {
	b, err := s.Source.FetchBlob(ctx, d, size, limit)
	if err != nil {
		return nil, err
	}
	return s.lie(d, b), nil
}

// TestRemoteFetchTimeout: a registry that stops answering fails the read
// (EIO in a mount) within the fetch timeout instead of hanging it.
func TestRemoteFetchTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block) // runs first: lets the handlers return
	ref, err := registry.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/stuck")
	if err != nil {
		t.Fatal(err)
	}
	repo, err := registry.Open(ref, &registry.Options{PlainHTTP: true, NoDockerConfig: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRemote(repo, &RemoteOptions{FetchTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = r.FetchBlob(context.Background(), Digest{1}, -1, MaxChunkSize)
	if !errors.Is(err, registry.ErrNetwork) {
		t.Errorf("fetch from a registry that never answers: %v, want registry.ErrNetwork", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v with a 300ms fetch timeout", d)
	}
}

// FuzzParseManifest: the manifests Pull and OpenImageFrom take from a
// registry are parsed or refused with a class, never half-accepted.
func FuzzParseManifest(f *testing.F) {
	src := randomTree(f, 8, 100<<10)
	oci := filepath.Join(f.TempDir(), "oci")
	if _, err := Build(context.Background(), src, oci, "v1", BuildOptions{Compress: true}); err != nil {
		f.Fatal(err)
	}
	l, err := OpenLayout(oci)
	if err != nil {
		f.Fatal(err)
	}
	m, err := l.Manifest("v1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m.Raw)
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := parseManifest(raw)
		if err != nil {
			if !errors.Is(err, errs.ErrCorrupt) && !errors.Is(err, errs.ErrUnsupported) && !errors.Is(err, errs.ErrUnsupportedAlgorithm) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		if m.Rootfs.MediaType != MediaTypeRootfs || m.Rootfs.Size < 0 || len(m.Chunks) != len(m.JSON.Layers)-1 {
			t.Fatalf("accepted a manifest without a proper rootfs layer: %+v", m.JSON)
		}
		for _, c := range m.Chunks {
			if _, err := ParseDigest(c.Digest); err != nil || c.Size < 0 {
				t.Fatalf("accepted chunk %+v", c)
			}
		}
	})
}
