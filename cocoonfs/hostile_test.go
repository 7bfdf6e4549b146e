package cocoonfs

import (
	"bytes"
	"testing"

	"github.com/sealfs/sealfs/internal/testutil"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// memoryBudget is what one open, format or verify of a small image may
// allocate in all, whatever sizes its headers claim.
const memoryBudget = 256 << 20

// fixedDevice hides a memory device's Resize: a device that cannot grow, so
// a header asking for more than it holds must be refused, not obeyed.
type fixedDevice struct{ blockdev.Device }

// exercise opens dev read-write (formatting a creation info header) and,
// if that works, lists, reads and verifies: nothing may panic, and all of
// it together stays within memoryBudget.
func exercise(t *testing.T, dev blockdev.Device, what string) {
	n, _ := testutil.MemoryOf(func() {
		_, _ = ReadHeaderInfo(dev)
		f, err := Open(dev, txKey, &Options{ReadWrite: true, Force: true})
		if err != nil {
			return
		}
		for ino, err := range f.Inodes() {
			if err != nil {
				break
			}
			_, _ = f.Stat(ino.Ino)
		}
		_, _ = f.Verify(t.Context(), nil)
	})
	if n > memoryBudget {
		t.Fatalf("%s: allocated %d MiB, more than the %d MiB budget", what, n>>20, memoryBudget>>20)
	}
}

// FuzzHostileHeaders writes headers whose every field the fuzzer chooses,
// encoded validly (checksums and integrity protection right, so they get
// past the first checks): a creation info header (formatted at the first
// open), a static header's layout on a formatted image, and the mutable
// header's image size and pointers (encrypted and authenticated as the key
// holder would write them). Opening, formatting, listing and verifying must
// not panic and must stay within a fixed memory budget however large the
// sizes the headers claim.
func FuzzHostileHeaders(f *testing.F) {
	img, err := readVector(f, "s01-sha2-aes128-1m.img")
	if err != nil {
		f.Fatal(err)
	}
	sh, err := disk.DecodeStaticHeader(img)
	if err != nil {
		f.Fatal(err)
	}
	layout := sh.Layout.Append(nil)
	f.Add(uint8(0), layout, uint64(8192), uint64(0), uint64(0))
	f.Add(uint8(0), layout, uint64(1)<<39, uint64(0), uint64(0))           // 64 TiB
	f.Add(uint8(0), layout, ^uint64(0)>>7, uint64(0), uint64(0))           // the largest
	f.Add(uint8(1), layout, uint64(0), uint64(0), uint64(0))               // the image's own
	f.Add(uint8(2), layout, uint64(1)<<40, uint64(0), uint64(0))           // image size
	f.Add(uint8(2), layout, uint64(8192), uint64(1)<<20, uint64(0xffff00)) // entry leaf, aux head
	f.Fuzz(func(t *testing.T, mode uint8, rawLayout []byte, size, ptr, aux uint64) {
		l, err := disk.DecodeLayout(rawLayout)
		if err != nil || checkWritableLayout(l) != nil {
			// Valid layouts with blocks too large to encode here; reading
			// them is bounded by the device's size.
			return
		}
		switch mode % 3 {
		case 0:
			// A creation info header on a 1 MiB device that cannot grow.
			d, err := encodeMkfsInfo(l, []byte{1, 2, 3}, size, nil, nil)
			if err != nil {
				return
			}
			mem := blockdev.NewMemory(1<<20, 512)
			if err := (mkfsInfoDevice{mem}).put(d, 0, false, true); err != nil {
				return
			}
			exercise(t, fixedDevice{mem}, "creation info header")
		case 1:
			// The formatted image under another layout.
			data := bytes.Clone(img)
			hdr := sh
			hdr.Layout = l
			enc, err := disk.EncodeStaticHeader(hdr)
			if err != nil || len(enc) > len(data) {
				return
			}
			copy(data, enc)
			exercise(t, fixedDevice{blockdev.NewMemoryFrom(data, 512)}, "static header")
		case 2:
			// Mutable header fields, re-encoded by the key holder.
			data := bytes.Clone(img)
			g, err := Open(blockdev.NewMemoryFrom(data, 512), vectorKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			mh := g.header
			mh.ImageSizeAllocBlocks = size
			if ptr != 0 {
				mh.EntryLeaf = disk.BlockPtr(ptr)
			}
			mh.AuxHeads[0] = disk.ExtentPtr(aux)
			enc, err := disk.EncodeMutableHeader(mh, g.layout)
			if err != nil {
				return
			}
			copy(data[disk.MutableHeaderOffset(sh):], enc)
			dev := fixedDevice{blockdev.NewMemoryFrom(data, 512)}
			n, _ := testutil.MemoryOf(func() {
				f, err := Open(dev, vectorKey, nil)
				if err != nil {
					return
				}
				for ino, err := range f.Inodes() {
					if err != nil {
						break
					}
					_, _ = f.ReadFile(ino.Ino)
				}
				_, _ = f.Verify(t.Context(), nil)
			})
			if n > memoryBudget {
				t.Fatalf("mutable header: allocated %d MiB, more than the %d MiB budget", n>>20, memoryBudget>>20)
			}
		}
	})
}
