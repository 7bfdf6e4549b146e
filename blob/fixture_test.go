package blob

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateFixture = flag.Bool("update-fixture", false, "rewrite testdata/store-v1 (only for a new layout version: old fixtures stay frozen)")

// fixtureBlobs are the blobs of testdata/store-v1: "hello" (5 bytes, no
// tree) and 8193 bytes of 0xFF (two blocks, one tree block); both names are
// merkle-formats.md 1.4 vectors.
var fixtureBlobs = map[string][]byte{
	"36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263": []byte("hello"),
	"374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c": ff(8193),
}

// copyDir copies a fixture store so tests never write into testdata.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "store")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestFixtureV1 opens the frozen version-1 store and checks the layout of
// docs/format/blob-store.md byte for byte.
func TestFixtureV1(t *testing.T) {
	const dir = "testdata/store-v1"
	if *updateFixture {
		os.RemoveAll(dir)
		s, err := Open(dir, &Options{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range fixtureBlobs {
			install(t, s, data)
		}
		os.Remove(filepath.Join(dir, tmpDir))
	}
	marker, err := os.ReadFile(filepath.Join(dir, markerName))
	if err != nil {
		t.Fatal(err)
	}
	if string(marker) != "sealfs-blob-store 1\nfeatures:\n" {
		t.Fatalf("marker %q", marker)
	}
	hello, _ := os.ReadFile(filepath.Join(dir, blobsDir, "36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263"))
	want, _ := hex.DecodeString("7365616c626c6f62" + "01000000" + "00000000" + "0500000000000000" + "0000000000000000" + hex.EncodeToString([]byte("hello")))
	if !bytes.Equal(hello, want) {
		t.Fatalf("hello blob file:\n%x\nwant\n%x", hello, want)
	}
	two, _ := os.ReadFile(filepath.Join(dir, blobsDir, "374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c"))
	if len(two) != 16417 {
		t.Fatalf("8193-byte blob file is %d bytes, want 16417 (docs/format/blob-store.md)", len(two))
	}

	s, err := Open(copyDir(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	names, err := s.List()
	if err != nil || len(names) != len(fixtureBlobs) {
		t.Fatalf("List = %v, %v", names, err)
	}
	for _, n := range names {
		if got := readAll(t, s, n); !bytes.Equal(got, fixtureBlobs[n.String()]) {
			t.Fatalf("%s: wrong contents", n)
		}
	}
	if _, err := s.VerifyAll(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
}
