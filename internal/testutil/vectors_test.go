package testutil

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fileSHA256 hashes a file, decompressing it first when gz is set.
func fileSHA256(t *testing.T, p string, gz bool) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		r = zr
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestRepositoryVectors checks testdata/vectors against its SHA256SUMS both
// ways: every listed vector is there with its bytes, nothing unlisted is.
func TestRepositoryVectors(t *testing.T) {
	m := loadManifest(t)
	if len(m.files) == 0 {
		t.Fatal("SHA256SUMS lists nothing")
	}
	stored := map[string]bool{}
	err := filepath.WalkDir(repoVectors, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoVectors, p)
		switch rel = filepath.ToSlash(rel); rel {
		case "SHA256SUMS", "README.md", "make.sh":
		default:
			stored[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range m.files {
		p := filepath.Join(repoVectors, filepath.FromSlash(name))
		gz := !stored[name]
		if gz {
			p += ".gz"
			if !stored[name+".gz"] {
				t.Errorf("%s: listed in SHA256SUMS, but neither it nor %s.gz is in testdata/vectors", name, name)
				continue
			}
			delete(stored, name+".gz")
		} else {
			delete(stored, name)
		}
		if got := fileSHA256(t, p, gz); got != want {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", p, got, want)
		}
	}
	for rel := range stored {
		t.Errorf("testdata/vectors/%s is not listed in SHA256SUMS (run testdata/vectors/make.sh)", rel)
	}
}

// TestRepositoryVectorsMatchShared checks that every copy in testdata/vectors
// is byte for byte the vector of the same name in ../shared/vectors.
func TestRepositoryVectorsMatchShared(t *testing.T) {
	m := loadManifest(t)
	shared := RequireShared(t, "vectors")
	var own []string
	for name, want := range m.files {
		p := filepath.Join(shared, filepath.FromSlash(name))
		if _, err := os.Stat(p); err != nil {
			own = append(own, name)
			continue
		}
		if got := fileSHA256(t, p, false); got != want {
			t.Errorf("%s: sha256 %s, but the repository's copy has %s", p, got, want)
		}
	}
	// Only the f0* CocoonFS feature images are the repository's own (README).
	for _, name := range own {
		if !strings.HasPrefix(name, "cocoonfs/f0") {
			t.Errorf("%s is in the repository but not in %s", name, shared)
		}
	}
}

func TestVectorServesRepositoryCopy(t *testing.T) {
	for _, c := range []struct {
		name string
		size int64 // -1: a directory
	}{
		{"cocoonfs/v09-mkfsinfo-header-trimmed.img", 1024},        // stored as is
		{"cocoonfs/s01-sha2-aes128-1m.img", 1 << 20},              // gzipped
		{"cocoonfs/v08-mkfsinfo-header-sha2-aes128.img", 8 << 20}, // gzipped
		{"./cocoonfs/plaintext/small.bin", 51},
		{"puzzlefs/oci", -1},
		{"puzzlefs", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := Vector(t, c.name)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if c.size < 0 {
				if !fi.IsDir() || !strings.HasPrefix(p, repoVectors) {
					t.Errorf("%s: want the repository's directory", p)
				}
				return
			}
			if fi.Size() != c.size || !fi.Mode().IsRegular() {
				t.Errorf("%s: %v, %d bytes; want a %d-byte file", p, fi.Mode(), fi.Size(), c.size)
			}
			// A decompressed copy is read-only, as ../shared is.
			if !strings.HasPrefix(p, repoVectors) && fi.Mode().Perm()&0o222 != 0 {
				t.Errorf("%s: mode %v, want read-only", p, fi.Mode())
			}
		})
	}
}

// recorder is a testing.TB that records Skipf and Fatalf instead of
// stopping, so that the missing-material paths can be tested.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

// TestMissingShared runs the lookups as a clone without ../shared sees
// them: the repository's vectors are served, anything else skips the test
// with a message naming the file, or fails it under CI=true.
func TestMissingShared(t *testing.T) {
	old := sharedRoot
	sharedRoot = filepath.Join(t.TempDir(), "shared")
	t.Cleanup(func() { sharedRoot = old })
	want := filepath.Join(sharedRoot, "vectors", "cocoonfs", "v01-sha2-aes128.img")

	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			check := func(what string, r *recorder, mention string) {
				t.Helper()
				msg := r.skipped + r.failed
				if (ci == "true") != (r.failed != "") || (ci == "true") == (r.skipped != "") {
					t.Errorf("%s: skipped %q, failed %q; want a %s", what, r.skipped, r.failed, map[string]string{"": "skip", "true": "failure"}[ci])
				}
				if !strings.Contains(msg, mention) {
					t.Errorf("%s: message %q does not name %s", what, msg, mention)
				}
			}

			r := &recorder{TB: t}
			Vector(r, "cocoonfs/v01-sha2-aes128.img")
			check("Vector", r, want)

			r = &recorder{TB: t}
			RequireShared(r, "reference/cocoonfs")
			check("RequireShared", r, filepath.Join(sharedRoot, "reference", "cocoonfs"))

			r = &recorder{TB: t}
			SharedDir(r)
			check("SharedDir", r, sharedRoot)

			if p, ok := LookupVector(t, "cocoonfs/v01-sha2-aes128.img"); ok || p != want {
				t.Errorf("LookupVector = %s, %v; want %s, false", p, ok, want)
			}
			r = &recorder{TB: t}
			if p := Vector(r, "cocoonfs/s02-sha3-camellia128-1m.img"); r.skipped != "" || r.failed != "" || !strings.HasPrefix(p, os.TempDir()) && !strings.HasPrefix(p, repoVectors) {
				t.Errorf("repository vector without ../shared: %s, skipped %q, failed %q", p, r.skipped, r.failed)
			}
		})
	}
}

func TestReadManifestRefuses(t *testing.T) {
	for _, body := range []string{
		"nothex  a/b\n",
		strings.Repeat("0", 64) + " a/b\n", // one space
		strings.Repeat("0", 64) + "  ../b\n",
		strings.Repeat("0", 64) + "  /b\n",
		strings.Repeat("0", 64) + "  a//b\n",
		strings.Repeat("0", 63) + "  a\n",
	} {
		p := filepath.Join(t.TempDir(), "SHA256SUMS")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if m := readManifest(p); m.err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

// TestVectorDir checks the directory of vectors for path-based tests: the
// repository's decompressed, and ../shared's where the repository has no
// copy, but only when ../shared is there.
func TestVectorDir(t *testing.T) {
	has := func(dir, name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	dir := VectorDir(t, "cocoonfs")
	p := filepath.Join(dir, "s01-sha2-aes128-1m.img")
	if fi, err := os.Stat(p); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("%s: %v", p, err)
	}
	for _, name := range []string{"v09-mkfsinfo-header-trimmed.img", "plaintext/small.bin"} {
		if !has(dir, name) {
			t.Errorf("%s missing from %s", name, dir)
		}
	}
	if has(dir, "small.bin") || has(dir, "cocoonfs") {
		t.Errorf("%s holds names from outside cocoonfs/", dir)
	}
	if _, err := os.Stat(filepath.Join(sharedRoot, "vectors", "cocoonfs")); err == nil && !has(dir, "v01-sha2-aes128.img") {
		t.Errorf("v01 from ../shared missing from %s", dir)
	}

	old := sharedRoot
	sharedRoot = filepath.Join(t.TempDir(), "shared")
	t.Cleanup(func() { sharedRoot = old })
	dir = VectorDir(t, "cocoonfs")
	if !has(dir, "s01-sha2-aes128-1m.img") || has(dir, "v01-sha2-aes128.img") {
		t.Errorf("without ../shared: %s should hold s01 and not v01", dir)
	}
}
