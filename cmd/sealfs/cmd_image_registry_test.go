package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sealfs/sealfs/image"
	"github.com/sealfs/sealfs/internal/testutil"
	"github.com/sealfs/sealfs/registry"
	"github.com/sealfs/sealfs/registry/registrytest"
)

// registryTree writes a small tree: two files of pseudo-random bytes (so
// every chunk is distinct), a text file and a symlink.
func registryTree(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 1))
	if err := os.MkdirAll(filepath.Join(dir, "usr", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"usr/lib/libbig.so": 1 << 20, "usr/lib/libsmall.so": 200 << 10} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "release"), []byte("version 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/lib/libbig.so", filepath.Join(dir, "lib")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildImage runs 'image build' and returns the root digest it printed.
func buildImage(t *testing.T, src, ref string, extra ...string) string {
	t.Helper()
	args := append([]string{"--json", "image", "build"}, extra...)
	code, out, errOut := runCLI(t, nil, append(args, src, ref)...)
	if code != 0 {
		t.Fatalf("image build: exit %d: %s", code, errOut)
	}
	var r imageBuildResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r.RootDigest
}

func diffTrees(t *testing.T, want, got string) {
	t.Helper()
	if out, err := exec.Command("diff", "-r", "--no-dereference", want, got).CombinedOutput(); err != nil {
		t.Errorf("trees differ: %v\n%s", err, out)
	}
}

// TestImageRegistryCLI: push, pull, extract and ls against a real registry,
// with the exit status of every kind of failure.
func TestImageRegistryCLI(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	work := t.TempDir()
	oci := filepath.Join(work, "oci")
	src := registryTree(t, 1)
	root := buildImage(t, src, oci+":v1")
	ref := srv.Ref("team/rootfs", "v1")

	code, out, errOut := runCLI(t, nil, "image", "push", "--plain-http", oci+":v1", ref)
	if code != 0 {
		t.Fatalf("push: exit %d: %s", code, errOut)
	}
	if !regexp.MustCompile(`^pushed .*:v1 to .*/team/rootfs:v1: \d+ blobs \(1\.2 MiB\) uploaded, 0 blobs \(0 B\) mounted, 0 blobs \(0 B\) skipped \(already there\); manifest sha256:[0-9a-f]{64}, root digest ` + root + "\n$").MatchString(out) {
		t.Errorf("push summary: %q", out)
	}
	if errOut != "" {
		t.Errorf("push wrote to stderr off a terminal: %q", errOut)
	}
	// Again, as JSON: everything skipped.
	code, out, _ = runCLI(t, nil, "--json", "image", "push", "--plain-http", oci+":v1", ref)
	var pr imagePushResult
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil || pr.Uploaded.Blobs != 0 || pr.Skipped.Blobs == 0 || pr.Traffic.Sent != int64(len(mustManifest(t, oci, "v1").Raw)) {
		t.Errorf("second push: exit %d, %+v", code, pr)
	}

	// A second version: a few chunks and the metadata go up.
	if err := os.WriteFile(filepath.Join(src, "release"), []byte("version 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root2 := buildImage(t, src, oci+":v2", "--base", "v1")
	code, out, _ = runCLI(t, nil, "--json", "image", "push", "--plain-http", oci+":v2", srv.Ref("team/rootfs", ""))
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil || pr.Uploaded.Blobs > 3 || pr.To != srv.Ref("team/rootfs", "v2") {
		t.Errorf("push of v2: exit %d, %+v", code, pr)
	}

	// Pull with the root digest, extract, compare.
	pulled := filepath.Join(work, "pulled")
	code, out, errOut = runCLI(t, nil, "image", "pull", "--plain-http", "--cache", filepath.Join(work, "nocache"), "--digest", root2, srv.Ref("team/rootfs", "v2"), pulled+":v2")
	if code != 0 || !strings.Contains(out, "fs-verity chain checked") {
		t.Fatalf("pull: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "image", "extract", "--digest", root2, pulled+":v2", filepath.Join(work, "x1")); code != 0 {
		t.Fatalf("extract of the pulled image: exit %d: %s", code, errOut)
	}
	diffTrees(t, src, filepath.Join(work, "x1"))

	// Extract straight from the registry.
	cache := filepath.Join(work, "cache")
	code, out, errOut = runCLI(t, nil, "image", "extract", "--plain-http", "--cache", cache, "--digest", root2, srv.Ref("team/rootfs", "v2"), filepath.Join(work, "x2"))
	if code != 0 || !strings.Contains(out, "fs-verity chain checked") {
		t.Fatalf("extract from the registry: exit %d: %s%s", code, out, errOut)
	}
	diffTrees(t, src, filepath.Join(work, "x2"))

	// ls of the repository and of one tag.
	code, out, _ = runCLI(t, nil, "image", "ls", "--plain-http", "--cache", cache, srv.Ref("team/rootfs", ""))
	if code != 0 || !regexp.MustCompile(`(?m)^v1 +[0-9a-f]{12} +3 +1\.2 MiB`).MatchString(out) || !regexp.MustCompile(`(?m)^v2 `).MatchString(out) {
		t.Errorf("ls of the repository: exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "--json", "image", "ls", "--plain-http", "--cache", cache, ref)
	var ls struct {
		Repository string       `json:"repository"`
		Tags       []imageLsTag `json:"tags"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ls) != nil || len(ls.Tags) != 1 || ls.Tags[0].Files != 3 || ls.Tags[0].Manifest != mustManifest(t, oci, "v1").Digest.OCI() {
		t.Errorf("ls of one tag: exit %d: %s", code, out)
	}

	for _, c := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"missing tag", "", []string{"image", "pull", "--plain-http", srv.Ref("team/rootfs", "v9"), filepath.Join(work, "p9") + ":v9"}, ExitRegistryNotFound, "not found"},
		{"missing repository", "", []string{"image", "ls", "--plain-http", "--cache", cache, srv.Ref("no/such", "")}, ExitRegistryNotFound, "not found"},
		{"https to a plain registry", "", []string{"image", "pull", ref, filepath.Join(work, "p") + ":v1"}, ExitNetwork, "--plain-http"},
		{"nobody listening", "", []string{"image", "pull", "--plain-http", "127.0.0.1:1/x:v1", filepath.Join(work, "p") + ":v1"}, ExitNetwork, "unreachable"},
		{"wrong root digest", "", []string{"image", "extract", "--plain-http", "--cache", cache, "--digest", root, srv.Ref("team/rootfs", "v2"), filepath.Join(work, "x3")}, ExitAuthentication, "fs-verity"},
		{"wrong root digest on pull", "", []string{"image", "pull", "--plain-http", "--digest", root, srv.Ref("team/rootfs", "v2"), filepath.Join(work, "p") + ":v2"}, ExitAuthentication, "fs-verity"},
		{"push of a missing tag", "", []string{"image", "push", "--plain-http", oci + ":v9", ref}, ExitNotFound, `"v9"`},
		{"push to a digest", "", []string{"image", "push", "--plain-http", oci + ":v1", ref + "@sha256:" + strings.Repeat("0", 64)}, ExitUsage, "digest"},
		{"pull without a tag", "", []string{"image", "pull", "--plain-http", srv.Ref("team/rootfs", ""), filepath.Join(work, "p") + ":v1"}, ExitUsage, ":TAG"},
		{"password without user", "pw\n", []string{"image", "push", "--plain-http", "--password-stdin", oci + ":v1", ref}, ExitUsage, "--username"},
		{"user without password", "", []string{"image", "push", "--plain-http", "-u", "me", oci + ":v1", ref}, ExitUsage, "--password-stdin"},
		{"empty password", "\n", []string{"image", "push", "--plain-http", "-u", "me", "--password-stdin", oci + ":v1", ref}, ExitUsage, "no password"},
		{"bad reference", "", []string{"image", "pull", "--plain-http", "127.0.0.1:5000/UPPER:v1", filepath.Join(work, "p") + ":v1"}, ExitUsage, "UPPER"},
		{"zero concurrency", "", []string{"image", "push", "--plain-http", "-j", "0", oci + ":v1", ref}, ExitUsage, "concurrency"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, []byte(c.stdin), c.args...)
			if code != c.code || !strings.Contains(errOut, c.msg) {
				t.Errorf("exit %d, want %d; stderr should contain %q: %s", code, c.code, c.msg, errOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(work, "x3")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused extract left %s behind", filepath.Join(work, "x3"))
	}
}

func mustManifest(t *testing.T, oci, tag string) *image.Manifest {
	t.Helper()
	l, err := image.OpenLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	m, err := l.Manifest(tag)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestImageRegistryAuthTLS: a registry with htpasswd and a self-signed
// certificate: without credentials a push fails with a clear message and
// 11, with --username/--password-stdin or docker's stored credentials it
// works; without the CA it is 14; the password never shows.
func TestImageRegistryAuthTLS(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{Auth: true, TLS: true})
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no stored credentials yet
	work := t.TempDir()
	oci := filepath.Join(work, "oci")
	src := registryTree(t, 2)
	root := buildImage(t, src, oci+":v1")
	ref := srv.Ref("secure/rootfs", "v1")
	pw := []byte(registrytest.Password + "\n")

	code, out, errOut := runCLI(t, nil, "image", "push", "--ca-file", srv.CAFile, oci+":v1", ref)
	if code != ExitUnauthorized || !strings.Contains(errOut, "unauthorized") || !strings.Contains(errOut, "no credentials") {
		t.Errorf("push without credentials: exit %d: %s%s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, []byte("wrong password\n"), "image", "push", "--ca-file", srv.CAFile, "-u", registrytest.Username, "--password-stdin", oci+":v1", ref)
	if code != ExitUnauthorized || strings.Contains(errOut, "wrong password") {
		t.Errorf("push with a wrong password: exit %d: %s", code, errOut)
	}
	code, _, errOut = runCLI(t, pw, "image", "push", "-u", registrytest.Username, "--password-stdin", oci+":v1", ref)
	if code != ExitNetwork || !strings.Contains(errOut, "--ca-file") {
		t.Errorf("push without the CA: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCLI(t, pw, "image", "push", "--ca-file", srv.CAFile, "-u", registrytest.Username, "--password-stdin", oci+":v1", ref)
	if code != 0 {
		t.Fatalf("push with credentials: exit %d: %s", code, errOut)
	}
	if strings.Contains(out+errOut, registrytest.Password) {
		t.Errorf("the password shows in the output: %s%s", out, errOut)
	}

	// Pull and blob push/pull with docker's stored credentials.
	auth := base64.StdEncoding.EncodeToString([]byte(registrytest.Username + ":" + registrytest.Password))
	if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, srv.Host, auth), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCLI(t, nil, "image", "pull", "--ca-file", srv.CAFile, "--digest", root, ref, filepath.Join(work, "pulled")+":v1")
	if code != 0 {
		t.Fatalf("pull with docker's credentials: exit %d: %s", code, errOut)
	}
	store := filepath.Join(work, "store")
	for _, content := range []string{"first blob", strings.Repeat("second blob ", 5000)} {
		if code, _, errOut := runCLI(t, []byte(content), "blob", "put", store, "-"); code != 0 {
			t.Fatalf("blob put: %s", errOut)
		}
	}
	code, out, errOut = runCLI(t, nil, "blob", "push", "--ca-file", srv.CAFile, store, srv.Ref("secure/blobs", "v1"))
	if code != 0 || !strings.HasPrefix(out, "pushed 2 blobs of ") {
		t.Fatalf("blob push: exit %d: %s%s", code, out, errOut)
	}
	store2 := filepath.Join(work, "store2")
	code, out, errOut = runCLI(t, nil, "--json", "blob", "pull", "--ca-file", srv.CAFile, srv.Ref("secure/blobs", "v1"), store2)
	var bp blobPullResult
	if code != 0 || json.Unmarshal([]byte(out), &bp) != nil || bp.Installed.Blobs != 2 {
		t.Fatalf("blob pull: exit %d: %s%s", code, out, errOut)
	}
	if code, out, _ := runCLI(t, nil, "blob", "verify", store2); code != 0 || !strings.Contains(out, "2") {
		t.Errorf("verify of the pulled store: exit %d: %s", code, out)
	}
	os.Remove(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
	if code, _, errOut := runCLI(t, nil, "blob", "pull", "--ca-file", srv.CAFile, srv.Ref("secure/blobs", "v1"), store2); code != ExitUnauthorized {
		t.Errorf("blob pull without credentials: exit %d: %s", code, errOut)
	}
}

// TestImageRegistryTampered: a blob altered in the registry's storage makes
// extract, pull and blob pull fail with 13 and keep nothing.
func TestImageRegistryTampered(t *testing.T) {
	srv := registrytest.Start(t, registrytest.Options{})
	work := t.TempDir()
	oci := filepath.Join(work, "oci")
	src := registryTree(t, 3)
	buildImage(t, src, oci+":v1")
	ref := srv.Ref("bad/rootfs", "v1")
	if code, _, errOut := runCLI(t, nil, "image", "push", "--plain-http", oci+":v1", ref); code != 0 {
		t.Fatalf("push: %s", errOut)
	}
	m := mustManifest(t, oci, "v1")
	victim := m.Chunks[len(m.Chunks)-1].Digest
	alter(t, srv.BlobPath(victim))

	cache := filepath.Join(work, "cache")
	code, _, errOut := runCLI(t, nil, "image", "extract", "--plain-http", "--cache", cache, ref, filepath.Join(work, "x"))
	if code != ExitDigestMismatch || !strings.Contains(errOut, "digest mismatch") {
		t.Errorf("extract: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(work, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a refused extract left its directory behind")
	}
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(victim, "sha256:"))); !errors.Is(err, fs.ErrNotExist) {
		t.Error("the altered blob is in the cache")
	}
	code, _, errOut = runCLI(t, nil, "image", "pull", "--plain-http", ref, filepath.Join(work, "p")+":v1")
	if code != ExitDigestMismatch {
		t.Errorf("pull: exit %d: %s", code, errOut)
	}

	store := filepath.Join(work, "store")
	runCLI(t, []byte(strings.Repeat("a blob ", 3000)), "blob", "put", store, "-")
	if code, _, errOut := runCLI(t, nil, "blob", "push", "--plain-http", store, srv.Ref("bad/blobs", "v1")); code != 0 {
		t.Fatalf("blob push: %s", errOut)
	}
	alter(t, srv.BlobPath(mustBlobLayer(t, srv, "bad/blobs", "v1")))
	if code, _, errOut := runCLI(t, nil, "blob", "pull", "--plain-http", srv.Ref("bad/blobs", "v1"), filepath.Join(work, "store2")); code != ExitDigestMismatch {
		t.Errorf("blob pull: exit %d: %s", code, errOut)
	}
}

func alter(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mustBlobLayer returns the digest of the first layer of a blob store
// artifact, read from the registry as a plain HTTP client would.
func mustBlobLayer(t *testing.T, srv *registrytest.Server, repo, tag string) string {
	t.Helper()
	resp := srv.Get(t, "/v2/"+repo+"/manifests/"+tag, "application/vnd.oci.image.manifest.v1+json")
	defer resp.Body.Close()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("blob store manifest: %v", err)
	}
	return m.Layers[0].Digest
}

// TestImageMountRegistry: a lazy mount of an image in an authenticated
// registry (password on stdin, handed to the background server) reads
// files right, fetches only what is read into the cache, and gives EIO for
// a chunk altered in the registry, which is never cached.
func TestImageMountRegistry(t *testing.T) {
	testutil.RequireFUSE(t)
	srv := registrytest.Start(t, registrytest.Options{Auth: true})
	work := t.TempDir()
	oci := filepath.Join(work, "oci")
	src := registryTree(t, 4)
	root := buildImage(t, src, oci+":v1")
	ref := srv.Ref("lazy/rootfs", "v1")
	pw := registrytest.Password + "\n"
	if code, _, errOut := runCLI(t, []byte(pw), "image", "push", "--plain-http", "-u", registrytest.Username, "--password-stdin", oci+":v1", ref); code != 0 {
		t.Fatalf("push: %s", errOut)
	}
	l, err := image.OpenLayout(oci)
	if err != nil {
		t.Fatal(err)
	}
	im, err := l.OpenImage("v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	chunksOf := func(p string) []image.Digest {
		in := im.Root()
		for _, name := range strings.Split(p, "/") {
			if in, err = im.Lookup(in, []byte(name)); err != nil {
				t.Fatal(err)
			}
		}
		var out []image.Digest
		for _, c := range in.Chunks {
			out = append(out, c.Blob.Digest)
		}
		return out
	}
	small, big := chunksOf("usr/lib/libsmall.so"), chunksOf("usr/lib/libbig.so")
	// A chunk in the middle of libbig.so: the file's first and last chunks
	// also hold bytes of its neighbours in the build's chunk stream.
	victim := big[len(big)/2]
	alter(t, srv.BlobPath(victim.OCI()))

	cache := filepath.Join(work, "cache")
	mnt := newMountpoint(t)
	logFile := filepath.Join(work, "server.log")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sealfsBinary(t), "image", "mount", "--plain-http", "-u", registrytest.Username, "--password-stdin",
		"--cache", cache, "--log", logFile, "--digest", root, ref, mnt)
	cmd.Stdin = strings.NewReader(pw)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	defer func() {
		if code, out := runSealfs(t, "image", "umount", mnt); code != 0 {
			t.Errorf("umount: exit %d: %s", code, out)
		}
		waitServerGone(t, mnt)
	}()
	cached := func() int {
		ents, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
		return len(ents)
	}
	if n := cached(); n != 1 {
		t.Errorf("after mounting, the cache holds %d blobs, want the metadata only", n)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "usr/lib/libsmall.so")); err != nil {
		t.Fatal(err)
	} else if want, _ := os.ReadFile(filepath.Join(src, "usr/lib/libsmall.so")); !bytes.Equal(got, want) {
		t.Fatal("libsmall.so read through the lazy mount differs")
	}
	if n, want := cached(), 1+len(uniq(small)); n != want {
		t.Errorf("after reading one file the cache holds %d blobs, want %d (metadata and its chunks)", n, want)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "release")); err != nil || string(got) != "version 1\n" {
		t.Errorf("release: %q, %v", got, err)
	}
	_, err = os.ReadFile(filepath.Join(mnt, "usr/lib/libbig.so"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("reading a file with an altered chunk: %v, want EIO", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", victim.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Error("the altered chunk is in the cache")
	}
	// The good chunks of that file could be read, and are cached.
	f, err := os.Open(filepath.Join(mnt, "usr/lib/libbig.so"))
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4096)
	_, err = f.ReadAt(head, 0)
	f.Close()
	if want, _ := os.ReadFile(filepath.Join(src, "usr/lib/libbig.so")); err != nil || !bytes.Equal(head, want[:4096]) {
		t.Errorf("the first block of libbig.so: %v", err)
	}
	if log, _ := os.ReadFile(logFile); !bytes.Contains(log, []byte(victim.String())) {
		t.Errorf("the server log does not name the altered chunk:\n%s", log)
	}
}

func uniq(ds []image.Digest) map[image.Digest]bool {
	m := map[image.Digest]bool{}
	for _, d := range ds {
		m[d] = true
	}
	return m
}

func TestTransferProgress(t *testing.T) {
	var buf bytes.Buffer
	if update, _ := transferProgress(&buf, "pushing"); update != nil {
		t.Fatal("progress drawn on a non-terminal")
	}
	update, finish := drawTransfer(&buf, "pushing")
	for i := 0; i <= 10; i++ {
		update(registry.Progress{Blobs: 10, BlobsDone: i, Bytes: 10 << 20, BytesDone: int64(i) << 20, Moved: int64(i) << 20})
	}
	finish()
	out := buf.String()
	// The first update and the last (everything done) are always drawn;
	// the ones in between only every 100 ms.
	if !strings.HasPrefix(out, "\rpushing 0/10 blobs, 0 B/10.0 MiB, ") || !strings.Contains(out, "\rpushing 10/10 blobs, 10.0 MiB/10.0 MiB, ") {
		t.Errorf("progress output %q", out)
	}
	if !strings.HasSuffix(out, "\r") || strings.Count(out, "pushing") > 11 {
		t.Errorf("progress output %q: want a blanked line at the end", out)
	}
}
