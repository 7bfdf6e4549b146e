package testutil

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Where the reference material lives. Variables so that this package's
// tests can point them elsewhere.
var (
	// repoVectors is the repository's copy of the vectors the core tests
	// need, listed in its SHA256SUMS (see its README).
	repoVectors = filepath.Join(repoRoot(), "testdata", "vectors")
	// sharedRoot is ../shared beside the repository: specs, the reference
	// tools and every vector, as CI has it.
	sharedRoot = filepath.Join(repoRoot(), "..", "shared")
)

// repoRoot is the repository's top directory, found from this file's path
// so that it does not depend on the directory a test runs in.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Vector returns the path of a reference vector, named as under
// ../shared/vectors ("cocoonfs/s01-sha2-aes128-1m.img", "puzzlefs/oci",
// "cdc/SekienAkashita.jpg"). The repository's copy in testdata/vectors comes
// first; a gzipped one is served decompressed in a per-test directory,
// read-only. A vector the repository does not carry is read from
// ../shared/vectors, and without it the test is skipped with a message
// naming the file (it fails under CI=true).
func Vector(t testing.TB, name string) string {
	t.Helper()
	p, ok := LookupVector(t, name)
	if !ok {
		missing(t, "reference vector %s is not in the repository (testdata/vectors) and %s is absent", name, p)
	}
	return p
}

// LookupVector is Vector for optional material, such as fuzz seeds: it
// reports whether the vector is available instead of skipping. When it is
// not, the path returned is where ../shared would hold it.
func LookupVector(t testing.TB, name string) (string, bool) {
	t.Helper()
	m := loadManifest(t)
	name = path.Clean(name)
	if sum, ok := m.files[name]; ok {
		return repoVector(t, name, sum), true
	}
	if m.dirs[name] {
		return filepath.Join(repoVectors, filepath.FromSlash(name)), true
	}
	p := filepath.Join(sharedRoot, "vectors", filepath.FromSlash(name))
	_, err := os.Stat(p)
	return p, err == nil
}

// VectorDir returns a new directory holding every vector available under
// dir ("cocoonfs"), for tests that reach vectors by path rather than
// through Vector, such as CLI scripts: the repository's (decompressed) and,
// where the repository has no copy, those in ../shared/vectors/dir, as
// symbolic links. Without ../shared it holds only the repository's.
func VectorDir(t testing.TB, dir string) string {
	t.Helper()
	dir = path.Clean(dir)
	out := t.TempDir()
	link := func(rel, target string) {
		t.Helper()
		p := filepath.Join(out, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Fatal(err)
		}
	}
	for name, sum := range loadManifest(t).files {
		if rel, ok := strings.CutPrefix(name, dir+"/"); ok {
			link(rel, repoVector(t, name, sum))
		}
	}
	shared := filepath.Join(sharedRoot, "vectors", filepath.FromSlash(dir))
	if _, err := os.Stat(shared); err != nil {
		return out
	}
	err := filepath.WalkDir(shared, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(shared, p)
		if err == nil {
			link(filepath.ToSlash(rel), p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RequireShared returns the path of rel (slash-separated) under ../shared,
// for material too large for the repository or not a vector (specs, the
// reference tools). Without it the test is skipped with a message naming
// the path (it fails under CI=true).
func RequireShared(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(sharedRoot, filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		missing(t, "reference material %s is absent (../shared must sit beside the repository)", p)
	}
	return p
}

// SharedDir returns the path of ../shared beside the repository, skipping
// the test without it (failing under CI=true).
func SharedDir(t testing.TB) string {
	t.Helper()
	return RequireShared(t, ".")
}

// repoVector returns the repository's copy of a vector: the file itself,
// or NAME.gz decompressed into the test's temporary directory and checked
// against the sha256 SHA256SUMS records for it.
func repoVector(t testing.TB, name, sum string) string {
	t.Helper()
	p := filepath.Join(repoVectors, filepath.FromSlash(name))
	if _, err := os.Stat(p); err == nil {
		return p
	}
	out := filepath.Join(t.TempDir(), path.Base(name))
	if err := gunzip(p+".gz", out, sum); err != nil {
		t.Fatalf("repository vector %s: %v", name, err)
	}
	return out
}

// gunzip decompresses src into a new read-only file dst whose contents
// must have the sha256 want.
func gunzip(src, dst, want string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err // names src; a listed vector with neither form is a broken checkout
	}
	defer in.Close()
	zr, err := gzip.NewReader(bufio.NewReader(in))
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), zr); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s decompresses to sha256 %s, SHA256SUMS says %s", src, got, want)
	}
	return nil
}

// manifest is testdata/vectors/SHA256SUMS: the vectors the repository
// carries, by name, with the sha256 of their uncompressed bytes.
type manifest struct {
	files map[string]string // name → hex sha256
	dirs  map[string]bool   // every directory above a listed file
	err   error
}

var (
	manifestOnce sync.Once
	manifestVal  manifest
)

func loadManifest(t testing.TB) manifest {
	t.Helper()
	manifestOnce.Do(func() { manifestVal = readManifest(filepath.Join(repoVectors, "SHA256SUMS")) })
	if manifestVal.err != nil {
		t.Fatalf("repository vectors: %v", manifestVal.err)
	}
	return manifestVal
}

func readManifest(p string) manifest {
	m := manifest{files: map[string]string{}, dirs: map[string]bool{}}
	b, err := os.ReadFile(p)
	if err != nil {
		m.err = err
		return m
	}
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if _, herr := hex.DecodeString(sum); !ok || herr != nil || len(sum) != 64 || name == "" || path.Clean(name) != name || path.IsAbs(name) || strings.HasPrefix(name, "../") {
			m.err = fmt.Errorf("%s:%d: want \"SHA256  NAME\", got %q", p, i+1, line)
			return m
		}
		m.files[name] = sum
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			m.dirs[d] = true
		}
	}
	return m
}
