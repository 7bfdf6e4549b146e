package blob

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/merkle"
	"github.com/sealfs/sealfs/registry"
	"github.com/sealfs/sealfs/registry/registrytest"
)

// registryStore makes a store holding blobs of the given sizes, of
// pseudo-random bytes, and returns it with the blobs by name.
func registryStore(t *testing.T, sizes ...int) (*Store, map[merkle.Digest][]byte) {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"), &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(len(sizes)), 99))
	blobs := map[merkle.Digest][]byte{}
	for _, n := range sizes {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		name, err := s.Put(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		blobs[name] = b
	}
	return s, blobs
}

func emptyStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "store"), &Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sameBlobs checks that s holds exactly blobs, each verified.
func sameBlobs(t *testing.T, s *Store, blobs map[merkle.Digest][]byte) {
	t.Helper()
	names, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(blobs) {
		t.Errorf("the store has %d blobs, want %d", len(names), len(blobs))
	}
	for name, want := range blobs {
		b, err := s.Open(name)
		if err != nil {
			t.Errorf("blob %s: %v", name, err)
			continue
		}
		got := make([]byte, b.Size())
		_, err = b.ReadAt(got, 0)
		b.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("blob %s: %v or different bytes", name, err)
		}
	}
}

func TestRegistryPushPull(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	s, blobs := registryStore(t, 0, 1, 8192, 8193, 100000, 1<<20)
	repo := srv.Repository(t, "sealfs/blobs", nil)
	pr, err := Push(ctx, s, repo, "v1", &RegistryOptions{Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Blobs != 6 || pr.Transfer.Uploaded.Blobs != 7 { // and the empty config
		t.Errorf("push: %+v, want 6 blobs and the config uploaded", pr)
	}

	// The artifact is a standard OCI manifest naming each blob's root.
	desc, raw, err := repo.FetchManifest(ctx, "v1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if desc.Digest != pr.Manifest || m.ArtifactType != ArtifactType || len(m.Layers) != 6 || m.Config.Digest != ocispec.DescriptorEmptyJSON.Digest {
		t.Errorf("artifact manifest: %s", raw)
	}
	for _, l := range m.Layers {
		name, _ := merkle.ParseDigest(l.Annotations[AnnotationMerkleRoot])
		if b, ok := blobs[name]; !ok || digest.FromBytes(b) != l.Digest || l.Annotations[ocispec.AnnotationTitle] != name.String() {
			t.Errorf("layer %+v does not describe a blob of the store", l)
		}
	}

	dst := emptyStore(t)
	res, err := Pull(ctx, repo, "v1", dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Installed.Blobs != 6 || res.Present.Blobs != 0 || res.Manifest != pr.Manifest {
		t.Errorf("pull: %+v", res)
	}
	sameBlobs(t, dst, blobs)
	if rep, err := dst.VerifyAll(ctx, nil); err != nil || len(rep.Problems) != 0 {
		t.Errorf("verify after pull: %+v, %v", rep, err)
	}

	// Again: nothing to move either way.
	res, err = Pull(ctx, repo, "v1", dst, nil)
	if err != nil || res.Installed.Blobs != 0 || res.Present.Blobs != 6 {
		t.Errorf("second pull: %+v, %v", res, err)
	}
	pr, err = Push(ctx, s, repo, "v2", nil)
	if err != nil || pr.Transfer.Skipped.Blobs != 7 || pr.Transfer.Uploaded.Blobs != 0 {
		t.Errorf("second push: %+v, %v", pr, err)
	}

	// An empty store round-trips too.
	if _, err := Push(ctx, emptyStore(t), repo, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if res, err := Pull(ctx, repo, "empty", emptyStore(t), nil); err != nil || res.Installed.Blobs != 0 {
		t.Errorf("pull of an empty store: %+v, %v", res, err)
	}
}

// TestRegistryPullTampered: a blob altered in the registry is refused and
// never installed; one the manifest misnames is refused by the store.
func TestRegistryPullTampered(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	s, blobs := registryStore(t, 50000, 60000)
	repo := srv.Repository(t, "sealfs/blobs", nil)
	if _, err := Push(ctx, s, repo, "v1", nil); err != nil {
		t.Fatal(err)
	}
	var victim merkle.Digest
	for name := range blobs {
		victim = name
		break
	}
	p := srv.BlobPath(digest.FromBytes(blobs[victim]).String())
	b, _ := os.ReadFile(p)
	b[777] ^= 0x80
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := emptyStore(t)
	if _, err := Pull(ctx, repo, "v1", dst, nil); !errors.Is(err, registry.ErrDigestMismatch) {
		t.Errorf("pull of an altered blob: %v, want registry.ErrDigestMismatch", err)
	}
	if _, err := dst.Stat(victim); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the altered blob was installed: %v", err)
	}
	checkNoTempFiles(t, dst)

	// A manifest that gives a blob another blob's name.
	var good []byte
	for name, b := range blobs {
		if name != victim {
			good = b // intact in the registry
		}
	}
	raw, err := storeManifest([]ocispec.Descriptor{{
		MediaType: MediaTypeBlob, Digest: digest.FromBytes(good), Size: int64(len(good)),
		Annotations: map[string]string{AnnotationMerkleRoot: merkle.FuchsiaRoot([]byte("something else")).String()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.PushManifest(ctx, ocispec.MediaTypeImageManifest, raw, "liar"); err != nil {
		t.Fatal(err)
	}
	dst = emptyStore(t)
	if _, err := Pull(ctx, repo, "liar", dst, nil); !errors.Is(err, ErrIntegrity) || !errors.Is(err, errs.ErrAuthentication) {
		t.Errorf("pull of a misnamed blob: %v, want ErrIntegrity", err)
	}
	if names, _ := dst.List(); len(names) != 0 {
		t.Errorf("a misnamed pull installed %v", names)
	}
	checkNoTempFiles(t, dst)
}

func checkNoTempFiles(t *testing.T, s *Store) {
	t.Helper()
	if tmp, err := s.tempFiles(); err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left: %q (%v)", tmp, err)
	}
}

type cutTransport struct {
	next http.RoundTripper
	ok   int64
	n    atomic.Int64
}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") && c.n.Add(1) > c.ok {
		return nil, errors.New("test: connection cut")
	}
	return c.next.RoundTrip(req)
}

// TestRegistryPullResumes: a pull cut off leaves whole blobs only; the next
// one installs the rest.
func TestRegistryPullResumes(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	sizes := make([]int, 12)
	for i := range sizes {
		sizes[i] = 20000 + i*3000
	}
	s, blobs := registryStore(t, sizes...)
	if _, err := Push(ctx, s, srv.Repository(t, "sealfs/blobs", nil), "v1", nil); err != nil {
		t.Fatal(err)
	}
	opts := srv.Options()
	opts.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &cutTransport{next: rt, ok: 5} }
	dst := emptyStore(t)
	if _, err := Pull(ctx, srv.Repository(t, "sealfs/blobs", opts), "v1", dst, &RegistryOptions{Concurrency: 1}); err == nil {
		t.Fatal("the cut pull succeeded")
	}
	names, _ := dst.List()
	if len(names) != 5 {
		t.Errorf("the cut pull installed %d blobs, want the 5 it fetched", len(names))
	}
	checkNoTempFiles(t, dst)
	res, err := Pull(ctx, srv.Repository(t, "sealfs/blobs", nil), "v1", dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Present.Blobs != 5 || res.Installed.Blobs != 7 {
		t.Errorf("resumed pull: %+v, want 5 present and 7 installed", res)
	}
	sameBlobs(t, dst, blobs)
}

func TestRegistryPullNotAStore(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	repo := srv.Repository(t, "sealfs/other", nil)
	cfg := []registry.Blob{{Descriptor: ocispec.DescriptorEmptyJSON, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(ocispec.DescriptorEmptyJSON.Data)), nil
	}}}
	if _, err := repo.PushBlobs(ctx, cfg, nil); err != nil {
		t.Fatal(err)
	}
	raw := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeEmptyJSON, ocispec.DescriptorEmptyJSON.Digest)
	if _, err := repo.PushManifest(ctx, ocispec.MediaTypeImageManifest, raw, "img"); err != nil {
		t.Fatal(err)
	}
	if _, err := Pull(ctx, repo, "img", emptyStore(t), nil); !errors.Is(err, errs.ErrUnsupported) {
		t.Errorf("pull of another artifact: %v, want errs.ErrUnsupported", err)
	}
	if _, err := Pull(ctx, repo, "missing", emptyStore(t), nil); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("pull of a missing tag: %v, want registry.ErrNotFound", err)
	}
}

func FuzzParseStoreManifest(f *testing.F) {
	good, _ := storeManifest([]ocispec.Descriptor{{
		MediaType: MediaTypeBlob, Digest: digest.FromString("x"), Size: 1,
		Annotations: map[string]string{AnnotationMerkleRoot: merkle.FuchsiaRoot([]byte("x")).String()},
	}})
	empty, _ := storeManifest(nil)
	f.Add(good)
	f.Add(empty)
	f.Add([]byte(`{"schemaVersion":2}`))
	f.Add([]byte(`{"schemaVersion":2,"artifactType":"application/vnd.sealfs.blob-store.v1","annotations":{"dev.sealfs.blob-store.version":"1"},"layers":[{"mediaType":"application/vnd.sealfs.blob.v1","digest":"sha256:","size":-1}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		layers, err := parseStoreManifest(raw)
		if err != nil {
			if !errors.Is(err, errs.ErrCorrupt) && !errors.Is(err, errs.ErrUnsupported) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		seen := map[merkle.Digest]bool{}
		for _, l := range layers {
			if seen[l.name] || l.desc.Size < 0 || l.desc.Digest.Validate() != nil {
				t.Fatalf("accepted a bad layer %+v", l)
			}
			seen[l.name] = true
		}
	})
}
