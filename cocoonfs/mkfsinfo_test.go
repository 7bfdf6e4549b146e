package cocoonfs

import (
	"testing"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

func TestScratchAux(t *testing.T) {
	for _, name := range []string{"v01-sha2-aes128.img", "v11-sha2-aes128-auxmeta.img", "v06-sha2-aes128-io4k.img"} {
		f, err := Open(openVector(t, name), vectorKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s heads %x %x auxExtents %v tree %v bm %v", name, uint64(f.header.AuxHeads[0]), uint64(f.header.AuxHeads[1]), f.auxExtents, f.treeExtents, f.bitmapExtents)
		for _, e := range f.auxExtents {
			raw, _ := f.readRawExtent(e)
			p, _ := disk.NewExtentPtr(e.Start, e.Len, false)
			off := 16
			if p == f.header.AuxHeads[0] || p == f.header.AuxHeads[1] {
				off = 17
			}
			if err := disk.VerifyAndRemoveIntegrity(raw, 0, off, f.layout); err != nil {
				t.Logf("  %v: %v", e, err)
				continue
			}
			t.Logf("  %v: next %x nbo %x state %d payload %x", e, raw[0:8], raw[8:16], raw[16], raw[off+disk.IntegrityLen(f.layout):][:120])
		}
	}
}
