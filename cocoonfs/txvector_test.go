package cocoonfs

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// TestTxOnReferenceImages writes to copies of the reference's images: add,
// overwrite and remove files, reopen, verify; the files not touched keep
// their published sha256.
func TestTxOnReferenceImages(t *testing.T) {
	for _, v := range formatted {
		t.Run(v.image, func(t *testing.T) {
			dev := blockdev.NewMemoryFrom(vectorBytes(t, v.image), 512)
			f, err := Open(dev, vectorKey, &Options{ReadWrite: true})
			if err != nil {
				t.Fatal(err)
			}
			counter := f.UpdateCounter()
			want := map[uint64][]byte{}
			for ino := range v.files {
				want[ino], _ = f.ReadFile(ino)
			}
			// Remove the lowest file, overwrite the highest, add two.
			inos := sortedKeys(v.files)
			tx, _ := f.Begin()
			if len(inos) > 1 {
				if err := tx.Remove(inos[0]); err != nil {
					t.Fatal(err)
				}
				delete(want, inos[0])
			}
			last := inos[len(inos)-1]
			want[last] = []byte("overwritten by sealfs")
			want[100] = make([]byte, 70000)
			want[0x54504d0001000000] = []byte("an NV index")
			for _, ino := range []uint64{last, 100, 0x54504d0001000000} {
				if err := tx.WriteFile(ino, want[ino], 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			if f.UpdateCounter().Cmp(counter) <= 0 {
				t.Error("update counter did not grow")
			}
			g, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkState(t, g, want)
			for ino, name := range v.files {
				if ino == last || ino == inos[0] && len(inos) > 1 {
					continue
				}
				data, _ := g.ReadFile(ino)
				sum := sha256.Sum256(data)
				if hex.EncodeToString(sum[:]) != plainSHA[name] {
					t.Errorf("untouched inode %d lost its contents", ino)
				}
			}
		})
	}
}

func sortedKeys[V any](m map[uint64]V) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}
