package cocoonfs

import (
	"bytes"
	"testing"
)

// TestTreeBuildMatchesReference recomputes every data block digest of each
// vector image and rebuilds the whole tree: the result must equal the tree
// the reference implementation stored, byte for byte, and give the stored
// root digest.
func TestTreeBuildMatchesReference(t *testing.T) {
	var images []string
	for _, v := range formatted {
		images = append(images, v.image)
	}
	for _, v := range strengthVectors {
		images = append(images, v.image)
	}
	for _, v := range featureVectors {
		images = append(images, v.image)
	}
	for _, image := range images {
		t.Run(image, func(t *testing.T) {
			f, err := Open(openVector(t, image), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			tr := f.tree
			ab := f.layout.AllocBlockSize()
			per := uint64(1) << f.layout.AuthTreeDataBlockLog2
			built := tr.build(func(d uint64) []byte {
				a := f.physicalDataBlock(d)
				cnt := min(per, f.imageAllocBlocks-a)
				blk, err := f.readRaw(a*ab, cnt*ab)
				if err != nil {
					t.Fatal(err)
				}
				word, err := f.digestBits(a, cnt)
				if err != nil {
					t.Fatal(err)
				}
				return tr.dataDigest(blk, word, d)
			})
			var stored []byte
			for _, e := range tr.extents {
				b, err := f.readRaw(e.Start*ab, e.Len*ab)
				if err != nil {
					t.Fatal(err)
				}
				stored = append(stored, b...)
			}
			if !bytes.Equal(built, stored) {
				for i := range built {
					if built[i] != stored[i] {
						t.Fatalf("rebuilt tree differs from the stored one at byte %d (node %d)", i, uint64(i)/tr.nodeSize)
					}
				}
			}
			root := tr.rootHMAC(built[:tr.nodeSize], f.header.EncryptedCounter, f.imageContext())
			if !bytes.Equal(root, f.header.RootHMAC) {
				t.Fatal("root digest of the rebuilt tree differs")
			}
		})
	}
}
