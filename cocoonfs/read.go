package cocoonfs

import (
	"encoding/binary"
	"fmt"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// authRead reads n allocation blocks at physical allocation block start and
// authenticates every data block they touch against the tree before
// returning them. The range must not overlap the tree itself.
func (f *FS) authRead(start, n uint64) ([]byte, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	if n == 0 || start+n < start || start+n > f.imageAllocBlocks {
		return nil, corruptf("read of allocation blocks %d+%d outside the image", start, n)
	}
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	first := start >> dataLog2 << dataLog2
	end := min((start+n+1<<dataLog2-1)>>dataLog2<<dataLog2, f.imageAllocBlocks)
	buf, err := f.readRaw(first*ab, (end-first)*ab)
	if err != nil {
		return nil, err
	}
	per := uint64(1) << dataLog2
	for a := first; a < end; a += per {
		cnt := min(per, end-a)
		if err := f.checkDataBlock(a, buf[(a-first)*ab:(a-first+cnt)*ab]); err != nil {
			return nil, err
		}
	}
	return buf[(start-first)*ab : (start-first+n)*ab], nil
}

// checkDataBlock authenticates the data block starting at physical
// allocation block a, whose bytes (within the image) are block.
func (f *FS) checkDataBlock(a uint64, block []byte) error {
	d, ok := f.tree.domainIndex(a)
	if !ok {
		return corruptf("allocation block %d belongs to the authentication tree", a)
	}
	want, err := f.tree.leafEntry(d)
	if err != nil {
		return err
	}
	cnt := uint64(len(block)) / f.layout.AllocBlockSize()
	if got := f.tree.dataDigest(block, f.digestBits(a, cnt), d); !equalDigest(got, want) {
		return authf("data block %d (allocation blocks %d-%d) does not match the authentication tree", d, a, a+cnt-1)
	}
	return nil
}

// digestBits is the allocation bitmap word of a data block's digest: its
// allocated blocks, minus those never digested (headers, journal log head,
// aux metadata). Before the bitmap is loaded only the bitmap file's own data
// blocks are read, and those are allocated in full by construction.
func (f *FS) digestBits(a, cnt uint64) uint64 {
	var w uint64
	if f.bitmap == nil {
		w = 1<<cnt - 1
		if cnt == 64 {
			w = ^uint64(0)
		}
	} else {
		w = f.bitmap.bits(a, cnt)
	}
	for _, e := range f.excluded {
		for i := uint64(0); i < cnt; i++ {
			if a+i >= e.Start && a+i < e.Start+e.Len {
				w &^= 1 << i
			}
		}
	}
	return w
}

func equalDigest(a, b []byte) bool {
	// Digests compared here are of public data; constant time is not needed,
	// but hmac.Equal is as cheap.
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// allocBitmap is the decrypted allocation bitmap: bit i set means
// allocation block i is allocated.
type allocBitmap struct {
	words []uint64
}

func (b *allocBitmap) allocated(a uint64) bool {
	return a/64 < uint64(len(b.words)) && b.words[a/64]&(1<<(a%64)) != 0
}

// bits returns the bits of allocation blocks a..a+cnt-1 (cnt <= 64) shifted
// down to bit 0.
func (b *allocBitmap) bits(a, cnt uint64) uint64 {
	var w uint64
	for i := uint64(0); i < cnt; i++ {
		if b.allocated(a + i) {
			w |= 1 << i
		}
	}
	return w
}

// readBitmap reads the allocation bitmap file through the tree. Its extents
// are cut into individually encrypted blocks of the bitmap block size, each
// holding as many whole 64-bit words as fit after the IV.
func (f *FS) readBitmap() (*allocBitmap, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	blkAllocs := l.BitmapBlockSize() / ab
	c := f.keys.blockCipher(inoAllocBitmap, subdomainData)
	need := (f.imageAllocBlocks + 63) / 64
	bm := &allocBitmap{words: make([]uint64, 0, need)}
	for _, e := range f.bitmapExtents {
		if e.Len%blkAllocs != 0 {
			return nil, corruptf("allocation bitmap extent %d+%d is not a whole number of bitmap blocks", e.Start, e.Len)
		}
		data, err := f.authRead(e.Start, e.Len)
		if err != nil {
			return nil, fmt.Errorf("allocation bitmap: %w", err)
		}
		for off := uint64(0); off < uint64(len(data)); off += l.BitmapBlockSize() {
			pt, err := decryptBlock(c, data[off:off+l.BitmapBlockSize()])
			if err != nil {
				return nil, err
			}
			for i := 0; i+8 <= len(pt) && uint64(len(bm.words)) < need; i += 8 {
				bm.words = append(bm.words, binary.LittleEndian.Uint64(pt[i:]))
			}
		}
	}
	if uint64(len(bm.words)) < need {
		return nil, corruptf("allocation bitmap holds %d words, the image needs %d", len(bm.words), need)
	}
	if rem := f.imageAllocBlocks % 64; rem != 0 && bm.words[need-1]>>rem != 0 {
		return nil, corruptf("allocation bitmap marks blocks beyond the image's end as allocated")
	}
	for _, e := range append(append([]disk.Extent{}, f.treeExtents...), f.bitmapExtents...) {
		for a := e.Start; a < e.Start+e.Len; a++ {
			if !bm.allocated(a) {
				return nil, corruptf("allocation bitmap marks block %d of a filesystem metadata file as free", a)
			}
		}
	}
	return bm, nil
}

// walkAuxExtents collects the extents of the aux metadata circular list,
// tolerating what the format (and the reference) tolerate: one extent torn
// in its tier-0 realm, stepped over with the previous extent's next-but-one
// pointer, starting at group 1's head if group 0's head is the torn one.
// Aux metadata is unauthenticated; its extents matter to Open only because
// they are left out of data block digests.
func (f *FS) walkAuxExtents() ([]disk.Extent, error) {
	if f.header.AuxHeads[0].IsNil() {
		return nil, nil
	}
	return f.auxChainExtents()
}

func inExtents(a uint64, ext []disk.Extent) bool {
	for _, e := range ext {
		if a >= e.Start && a < e.Start+e.Len {
			return true
		}
	}
	return false
}
