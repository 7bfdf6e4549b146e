package blob

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/merkle"
)

// FuzzBlobFile stores arbitrary bytes as the file of a blob and reads it:
// whatever the bytes, every read either fails or returns exactly bytes
// that hash to the name. Seeds: the fixture's files and damaged copies.
func FuzzBlobFile(f *testing.F) {
	for name := range fixtureBlobs {
		b, err := os.ReadFile(filepath.Join("testdata/store-v1", blobsDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(name == "374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c", b)
		f.Add(false, b[:len(b)/2])
	}
	f.Add(true, []byte("sealblob"))
	s := newStore(f)
	f.Fuzz(func(t *testing.T, big bool, file []byte) {
		nameStr := "36e43c7b39beea113ab5070a979023db0b1a47cb9da622169d10660d4f4ad263"
		if big {
			nameStr = "374781f7d770b6ee9c1a63e186d2d0ccdad10d6aef4fd027e82b1be5b70a2a0c"
		}
		name := mustDigest(t, nameStr)
		if err := os.WriteFile(s.path(name), file, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(s.path(name))
		s.Stat(name) // must not panic; any error is fine
		b, err := s.Open(name)
		if err != nil {
			return
		}
		defer b.Close()
		got, err := io.ReadAll(b)
		if err != nil {
			if !errors.Is(err, ErrIntegrity) {
				t.Fatalf("read error %v does not match ErrIntegrity", err)
			}
			return
		}
		if merkle.FuchsiaRoot(got) != name {
			t.Fatalf("returned %d bytes that do not hash to the name", len(got))
		}
	})
}

// FuzzMarker: Open never panics on a marker file and opens only the exact
// version-1 marker (with an optional empty features line).
func FuzzMarker(f *testing.F) {
	f.Add([]byte("sealfs-blob-store 1\nfeatures:\n"))
	f.Add([]byte("sealfs-blob-store 1\n"))
	f.Add([]byte("sealfs-blob-store 2\nfeatures: x\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, marker []byte) {
		dir := filepath.Join(t.TempDir(), "s")
		os.Mkdir(dir, 0o755)
		os.WriteFile(filepath.Join(dir, markerName), marker, 0o644)
		_, err := Open(dir, nil)
		if err == nil && !bytes.HasPrefix(marker, []byte("sealfs-blob-store 1")) {
			t.Fatalf("opened a store with marker %q", marker)
		}
	})
}
