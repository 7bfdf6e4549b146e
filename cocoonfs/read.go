package cocoonfs

import (
	"fmt"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// authRead reads n allocation blocks at physical allocation block start and
// authenticates every data block they touch against the tree before
// returning them. The range must not overlap the tree itself.
func (f *FS) authRead(start, n uint64) ([]byte, error) {
	return f.authReadInto(start, n, nil)
}

// authReadInto is authRead reading into buf when it is large enough (the
// result is then a slice of it), so streaming readers can reuse buffers.
func (f *FS) authReadInto(start, n uint64, buf []byte) ([]byte, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	if n == 0 || start+n < start || start+n > f.imageAllocBlocks {
		return nil, corruptf("read of allocation blocks %d+%d outside the image", start, n)
	}
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	first := start >> dataLog2 << dataLog2
	end := min((start+n+1<<dataLog2-1)>>dataLog2<<dataLog2, f.imageAllocBlocks)
	var err error
	if size := (end - first) * ab; uint64(cap(buf)) >= size {
		buf, err = f.readRawInto(first*ab, buf[:size])
	} else {
		buf, err = f.readRaw(first*ab, size)
	}
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
	word, err := f.digestBits(a, cnt)
	if err != nil {
		return err
	}
	if got := f.tree.dataDigest(block, word, d); !equalDigest(got, want) {
		return authf("data block %d (allocation blocks %d-%d) does not match the authentication tree", d, a, a+cnt-1)
	}
	return nil
}

// digestBits is the allocation bitmap word of a data block's digest: its
// allocated blocks, minus those never digested (headers, journal log head,
// aux metadata). The bitmap file's own data blocks are allocated in full by
// construction (its extents are aligned to data blocks), which is what lets
// them be authenticated before any bit of the bitmap is known.
func (f *FS) digestBits(a, cnt uint64) (uint64, error) {
	var w uint64
	if extentsCover(f.bitmapExtents, a, cnt) {
		w = lowBits(cnt)
	} else {
		if f.bitmap == nil {
			return 0, fmt.Errorf("BUG: data block at allocation block %d read before the allocation bitmap is known", a)
		}
		var err error
		if w, err = bitsOf(f.bitmap, a, cnt); err != nil {
			return 0, err
		}
	}
	for _, e := range f.excluded {
		if e.Start < a+cnt && a < e.Start+e.Len {
			lo, hi := max(e.Start, a), min(e.Start+e.Len, a+cnt)
			w &^= lowBits(hi-lo) << (lo - a)
		}
	}
	return w, nil
}

// extentsCover reports whether one of ext holds all of a..a+cnt-1.
func extentsCover(ext []disk.Extent, a, cnt uint64) bool {
	for _, e := range ext {
		if a >= e.Start && a+cnt <= e.Start+e.Len {
			return true
		}
	}
	return false
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
