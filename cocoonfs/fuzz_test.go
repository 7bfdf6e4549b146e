package cocoonfs

import (
	"bytes"
	"os"
	"testing"
)

func readVector(t testing.TB, name string) ([]byte, error) {
	t.Helper()
	return os.ReadFile(vectorPath(t, name))
}

// FuzzOpenTampered overwrites up to a few bytes of a real image at
// fuzzer-chosen offsets, then opens it, lists, reads and verifies. Nothing
// may panic, and any file that reads back must equal the original.
func FuzzOpenTampered(f *testing.F) {
	img, err := readVector(f, "v01-sha2-aes128.img")
	if err != nil {
		f.Fatal(err)
	}
	orig, err := Open(&flipDevice{data: img, off: -1}, vectorKey, nil)
	if err != nil {
		f.Fatal(err)
	}
	want := map[uint64][]byte{}
	for _, ino := range []uint64{42, 43} {
		if want[ino], err = orig.ReadFile(ino); err != nil {
			f.Fatal(err)
		}
	}
	// Seeds: the static header, mutable header, entry leaf, a file, the
	// tree's root node, the bitmap.
	for _, off := range []uint32{0x20, 0x210, 0x290, 0x310, 0x600, 4020 * 128} {
		f.Add(off, []byte{0x01})
	}
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		if len(patch) == 0 || len(patch) > 16 {
			return
		}
		o := int(off) % len(img)
		data := bytes.Clone(img)
		for i := range patch {
			if o+i < len(data) {
				data[o+i] ^= patch[i]
			}
		}
		fs, err := Open(&flipDevice{data: data, off: -1}, vectorKey, nil)
		if err != nil {
			return
		}
		for ino, err := range fs.Inodes() {
			if err != nil {
				return
			}
			got, err := fs.ReadFile(ino.Ino)
			if err != nil {
				continue
			}
			if w, ok := want[ino.Ino]; !ok || !bytes.Equal(got, w) {
				t.Fatalf("patch %x at %#x: inode %d read back different data without an error", patch, o, ino.Ino)
			}
		}
		_, _ = fs.Verify(t.Context(), nil)
	})
}
