package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestEncodeRootfsVectors decodes every reference rootfs blob and encodes
// it again: the bytes must be the reference's, byte for byte.
func TestEncodeRootfsVectors(t *testing.T) {
	needVectors(t)
	for _, p := range []string{
		"oci/blobs/sha256/6f22c324b00162170f5bfaa0fa2c837f368bbf85718351fcfada79c7b150ce0b",
		"oci/blobs/sha256/192687649a9fc5be298262837a0cc53f166dc15c1069b24ebedea2381c54b2a2",
		"oci-compressed-tree1/blobs/sha256/65d6a7bf92eb2fcfe9a6cf2a4869cd9ec01f6a4661b9cdd637dceeabb10c8470",
	} {
		want, err := os.ReadFile(filepath.Join(vectorDir, p))
		if err != nil {
			t.Fatal(err)
		}
		r, err := ReadRootfs(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeRootfs(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: encoded %d bytes, reference %d; first difference at byte %d", filepath.Base(p), len(got), len(want), i)
		}
	}
}
