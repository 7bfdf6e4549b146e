package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sealfs/sealfs/errs"
)

// FuzzReadRootfs feeds arbitrary bytes to the metadata decoder, seeded with
// the reference images' rootfs blobs: it must decode or return ErrCorrupt /
// ErrUnsupported, never panic, and what it accepts must be consistent.
func FuzzReadRootfs(f *testing.F) {
	for _, p := range []string{
		"oci/blobs/sha256/6f22c324b00162170f5bfaa0fa2c837f368bbf85718351fcfada79c7b150ce0b",
		"oci/blobs/sha256/192687649a9fc5be298262837a0cc53f166dc15c1069b24ebedea2381c54b2a2",
		"oci-compressed-tree1/blobs/sha256/65d6a7bf92eb2fcfe9a6cf2a4869cd9ec01f6a4661b9cdd637dceeabb10c8470",
	} {
		if b, err := os.ReadFile(filepath.Join(vectorDir, p)); err == nil {
			f.Add(b)
		}
	}
	f.Add(encodeRootfs(f, minimalRootfs(nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadRootfs(data)
		if err != nil {
			if !errors.Is(err, errs.ErrCorrupt) && !errors.Is(err, errs.ErrUnsupported) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrUnsupported", err)
			}
			return
		}
		if r.ManifestVersion != ManifestVersion || r.Inode(RootIno) == nil || r.Inode(RootIno).Dir == nil {
			t.Fatal("accepted rootfs without version 3 and a root directory")
		}
		for _, l := range r.Layers {
			for _, in := range l.Inodes {
				_ = in.Mode()
				_ = in.Size()
				if in.Dir != nil {
					for _, e := range in.Dir.Entries {
						if checkName(e.Name) != nil || r.Inode(e.Ino) == nil {
							t.Fatalf("accepted bad entry %q -> %d", e.Name, e.Ino)
						}
					}
				}
			}
		}
		// Whatever the decoder accepts, the encoder writes back so that it
		// decodes to the same values, and encoding is a fixed point.
		enc, err := EncodeRootfs(r)
		if err != nil {
			t.Fatalf("accepted rootfs does not encode: %v", err)
		}
		r2, err := ReadRootfs(enc)
		if err != nil {
			t.Fatalf("encoded rootfs does not decode: %v", err)
		}
		enc2, err := EncodeRootfs(r2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %v", err)
		}
	})
}
