package registry_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/sealfs/sealfs/errs"
	"github.com/sealfs/sealfs/registry"
	"github.com/sealfs/sealfs/registry/registrytest"
)

// testBlobs makes n blobs of distinct bytes.
func testBlobs(n int, size int) ([]registry.Blob, [][]byte) {
	var blobs []registry.Blob
	var data [][]byte
	for i := range n {
		b := bytes.Repeat([]byte{byte(i)}, size+i)
		data = append(data, b)
		blobs = append(blobs, registry.Blob{
			Descriptor: ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))},
			Open:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		})
	}
	return blobs, data
}

// manifestOf is an OCI manifest referencing blobs, config first.
func manifestOf(blobs []registry.Blob) []byte {
	var layers []string
	for _, b := range blobs[1:] {
		layers = append(layers, fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`, b.Descriptor.Digest, b.Descriptor.Size))
	}
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[%s]}`,
		ocispec.MediaTypeImageManifest, blobs[0].Descriptor.Digest, blobs[0].Descriptor.Size, strings.Join(layers, ","))
}

func TestPushFetch(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	repo := srv.Repository(t, "sealfs/test", nil)
	blobs, data := testBlobs(6, 10000)

	var last registry.Progress
	st, err := repo.PushBlobs(ctx, blobs, &registry.PushOptions{Concurrency: 3, Progress: func(p registry.Progress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Uploaded.Blobs != 6 || st.Skipped.Blobs != 0 || st.Mounted.Blobs != 0 {
		t.Errorf("first push: %+v, want 6 uploaded", st)
	}
	if last.BlobsDone != 6 || last.BytesDone != last.Bytes || last.Moved != last.Bytes {
		t.Errorf("last progress %+v: want every blob and byte done and moved", last)
	}
	raw := manifestOf(blobs)
	desc, err := repo.PushManifest(ctx, ocispec.MediaTypeImageManifest, raw, "v1")
	if err != nil {
		t.Fatal(err)
	}

	// Again: everything is there already.
	sent := repo.Stats().BytesSent
	st, err = repo.PushBlobs(ctx, blobs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped.Blobs != 6 || st.Uploaded.Blobs != 0 {
		t.Errorf("second push: %+v, want 6 skipped", st)
	}
	if d := repo.Stats().BytesSent - sent; d != 0 {
		t.Errorf("second push sent %d body bytes, want 0", d)
	}

	// Another repository of the same registry mounts instead of uploading.
	other := srv.Repository(t, "sealfs/other", nil)
	st, err = other.PushBlobs(ctx, blobs, &registry.PushOptions{MountFrom: []string{"sealfs/test"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Mounted.Blobs != 6 || st.Uploaded.Blobs != 0 {
		t.Errorf("push with MountFrom: %+v, want 6 mounted", st)
	}

	for _, ref := range []string{"v1", desc.Digest.String()} {
		d, got, err := repo.FetchManifest(ctx, ref, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) || d.Digest != desc.Digest || d.MediaType != ocispec.MediaTypeImageManifest {
			t.Errorf("FetchManifest(%s) = %v, %q", ref, d, got)
		}
	}
	if _, _, err := repo.FetchManifest(ctx, "v1", 10); !errors.Is(err, errs.ErrUnsupported) {
		t.Errorf("FetchManifest with a 10-byte limit: %v, want errs.ErrUnsupported", err)
	}
	for i, b := range blobs {
		got, err := repo.ReadBlob(ctx, b.Descriptor.Digest, b.Descriptor.Size, 1<<20)
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Errorf("ReadBlob %d: %v", i, err)
		}
		got, err = repo.ReadBlob(ctx, b.Descriptor.Digest, -1, 1<<20)
		if err != nil || !bytes.Equal(got, data[i]) {
			t.Errorf("ReadBlob %d, size unknown: %v", i, err)
		}
		var buf bytes.Buffer
		if n, err := repo.CopyBlob(ctx, b.Descriptor.Digest, -1, &buf); err != nil || n != b.Descriptor.Size || !bytes.Equal(buf.Bytes(), data[i]) {
			t.Errorf("CopyBlob %d: %d, %v", i, n, err)
		}
	}
	if _, err := repo.ReadBlob(ctx, blobs[0].Descriptor.Digest, -1, 100); !errors.Is(err, errs.ErrCorrupt) {
		t.Errorf("ReadBlob over the limit: %v, want errs.ErrCorrupt", err)
	}
	if _, err := repo.ReadBlob(ctx, blobs[0].Descriptor.Digest, 5, 1<<20); !errors.Is(err, registry.ErrDigestMismatch) {
		t.Errorf("ReadBlob with the wrong size: %v, want ErrDigestMismatch", err)
	}
	tags, err := repo.Tags(ctx)
	if err != nil || len(tags) != 1 || tags[0] != "v1" {
		t.Errorf("Tags = %q, %v", tags, err)
	}
}

func TestNotFound(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	repo := srv.Repository(t, "nothing/here", nil)
	_, _, err := repo.FetchManifest(ctx, "v1", 1<<20)
	if !errors.Is(err, registry.ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing tag: %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	_, err = repo.ReadBlob(ctx, digest.FromString("x"), -1, 1<<20)
	if !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("missing blob: %v, want ErrNotFound", err)
	}
	if ok, err := repo.Exists(ctx, digest.FromString("x")); ok || err != nil {
		t.Errorf("Exists(missing) = %v, %v", ok, err)
	}
}

// TestAlteredBlob: bytes changed in the registry's storage are refused.
func TestAlteredBlob(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	repo := srv.Repository(t, "sealfs/test", nil)
	blobs, _ := testBlobs(1, 5000)
	if _, err := repo.PushBlobs(ctx, blobs, nil); err != nil {
		t.Fatal(err)
	}
	d := blobs[0].Descriptor.Digest
	p := srv.BlobPath(d.String())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[1234] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := repo.ReadBlob(ctx, d, -1, 1<<20); !errors.Is(err, registry.ErrDigestMismatch) || !errors.Is(err, errs.ErrAuthentication) || got != nil {
		t.Errorf("ReadBlob of an altered blob: %d bytes, %v; want nothing and ErrDigestMismatch", len(got), err)
	}
	if _, err := repo.CopyBlob(ctx, d, -1, io.Discard); !errors.Is(err, registry.ErrDigestMismatch) {
		t.Errorf("CopyBlob of an altered blob: %v, want ErrDigestMismatch", err)
	}
}

// TestLocalMismatch: a local blob that does not match its descriptor is
// not committed.
func TestLocalMismatch(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	ctx := context.Background()
	repo := srv.Repository(t, "sealfs/test", nil)
	blobs, _ := testBlobs(1, 5000)
	blobs[0].Open = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte{9}, 5000))), nil
	}
	if _, err := repo.PushBlobs(ctx, blobs, nil); !errors.Is(err, errs.ErrAuthentication) {
		t.Errorf("pushing a blob that does not match: %v, want errs.ErrAuthentication", err)
	}
	if ok, err := repo.Exists(ctx, blobs[0].Descriptor.Digest); ok || err != nil {
		t.Errorf("after a refused upload, Exists = %v, %v", ok, err)
	}
}

func TestAuth(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{Auth: true})
	ctx := context.Background()
	blobs, _ := testBlobs(2, 100)
	push := func(opts *registry.Options) error {
		_, err := srv.Repository(t, "sealfs/auth", opts).PushBlobs(ctx, blobs, nil)
		return err
	}
	anon := srv.Options()
	anon.Username, anon.Password = "", ""
	err := push(anon)
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("anonymous push: %v, want ErrUnauthorized", err)
	}
	wrong := srv.Options()
	wrong.Password = "not the password"
	err = push(wrong)
	if !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("push with a wrong password: %v, want ErrUnauthorized", err)
	}
	if strings.Contains(err.Error(), wrong.Password) {
		t.Errorf("the error shows the password: %v", err)
	}
	if err := push(srv.Options()); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}

	// Credentials from docker's config file, as `docker login` leaves them.
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(registrytest.Username + ":" + registrytest.Password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, srv.Host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	docker := srv.Options()
	docker.Username, docker.Password, docker.NoDockerConfig = "", "", false
	if err := push(docker); err != nil {
		t.Fatalf("push with docker's stored credentials: %v", err)
	}

	// A credential helper, as docker-credential-pass and the cloud ones
	// are: docker-credential-NAME get, server on stdin, JSON on stdout.
	bin := t.TempDir()
	helper := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{\"ServerURL\":\"%%s\",\"Username\":%q,\"Secret\":%q}' \"$server\"\n",
		registrytest.Username, registrytest.Password)
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-sealfstest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	cfg = fmt.Sprintf(`{"credHelpers":{%q:"sealfstest"}}`, srv.Host)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := push(docker); err != nil {
		t.Fatalf("push with a credential helper: %v", err)
	}
}

func TestTLS(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{TLS: true})
	ctx := context.Background()
	if _, err := srv.Repository(t, "sealfs/tls", nil).Tags(ctx); err != nil && !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("with the CA: %v", err)
	}
	noCA := srv.Options()
	noCA.CAFile = ""
	_, err := srv.Repository(t, "sealfs/tls", noCA).Tags(ctx)
	if !errors.Is(err, registry.ErrNetwork) || !strings.Contains(err.Error(), "--ca-file") {
		t.Errorf("without the CA: %v, want ErrNetwork suggesting --ca-file", err)
	}
	plain := srv.Options()
	plain.PlainHTTP = true
	if _, err := srv.Repository(t, "sealfs/tls", plain).Tags(ctx); !errors.Is(err, registry.ErrNetwork) {
		t.Errorf("plain HTTP to a TLS registry: %v, want ErrNetwork", err)
	}
}

func TestNetworkError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nobody listens there now
	ref, _ := registry.ParseReference(addr + "/x")
	repo, err := registry.Open(ref, &registry.Options{PlainHTTP: true, NoDockerConfig: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.FetchManifest(context.Background(), "v1", 1<<20); !errors.Is(err, registry.ErrNetwork) {
		t.Errorf("closed port: %v, want ErrNetwork", err)
	}
}

func TestOpenOptions(t *testing.T) {
	ref, _ := registry.ParseReference("127.0.0.1:5000/x")
	bad := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	for _, c := range []struct {
		name string
		opts registry.Options
		want error
	}{
		{"username without password", registry.Options{Username: "u"}, fs.ErrInvalid},
		{"CA file without certificates", registry.Options{CAFile: bad}, fs.ErrInvalid},
		{"missing CA file", registry.Options{CAFile: bad + ".missing"}, fs.ErrNotExist},
	} {
		if _, err := registry.Open(ref, &c.opts); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
