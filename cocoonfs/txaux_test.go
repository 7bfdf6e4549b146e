package cocoonfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
)

// TestTxAuxMetadata edits aux metadata in transactions on reference images:
// the new contents are read back (keyless and through the FS), the files
// keep their contents, and the image verifies.
func TestTxAuxMetadata(t *testing.T) {
	uuid := [16]byte{0xca, 0xfe}
	for _, image := range []string{"v01-sha2-aes128.img", "v11-sha2-aes128-auxmeta.img"} {
		t.Run(image, func(t *testing.T) {
			dev := blockdev.NewMemoryFrom(vectorBytes(t, image), 512)
			f, err := Open(dev, vectorKey, &Options{ReadWrite: true})
			if err != nil {
				t.Fatal(err)
			}
			m, err := f.AuxMetadata()
			if err != nil {
				t.Fatal(err)
			}
			want := len(m.Entries) + 1
			big := bytes.Repeat([]byte("wrapped key "), 500) // more than the 1 KiB reserve
			if err := m.Add(uuid, big); err != nil {
				t.Fatal(err)
			}
			reserve := uint64(4096)
			m.Reserve = &reserve
			tx, _ := f.Begin()
			if err := tx.SetAuxMetadata(m); err != nil {
				t.Fatal(err)
			}
			tx.WriteFile(77, []byte("and a file"), 0)
			if err := tx.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
			for _, got := range []func() (*AuxMetadata, error){f.AuxMetadata, func() (*AuxMetadata, error) { return ReadAuxMetadata(dev) }} {
				g, err := got()
				if err != nil {
					t.Fatal(err)
				}
				if len(g.Entries) != want || g.Reserve == nil || *g.Reserve != 4096 {
					t.Fatalf("aux metadata after the commit: %d entries, reserve %v", len(g.Entries), g.Reserve)
				}
				if d, ok := g.Get(uuid, 0); !ok || !bytes.Equal(d, big) {
					t.Fatal("the new entry does not read back")
				}
				if g.Capacity < 4096 {
					t.Errorf("capacity %d below the reserve", g.Capacity)
				}
			}
			g, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep, err := g.Verify(t.Context(), nil); err != nil {
				t.Fatalf("Verify: %v %v", err, rep.Problems)
			}
			data, _ := g.ReadFile(42)
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != plainSHA["small.bin"] {
				t.Error("inode 42 changed")
			}
			// An offline update has room again afterwards.
			if err := UpdateAuxMetadataOffline(dev, func(m *AuxMetadata) error { return m.Add([16]byte{1}, []byte("offline")) }); err != nil {
				t.Fatalf("offline update after the online one: %v", err)
			}
			if _, err := Open(blockdev.NewMemoryFrom(dev.Bytes(), 512), vectorKey, nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}
