package cocoonfs

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The allocation bitmap, one bit per allocation block, is read lazily: an
// open image loads (authenticates and decrypts) only the bitmap blocks that
// describe blocks it reads or allocates, keeps a bounded number of them, and
// a transaction describes its changes as extents on top of the committed
// bitmap. Memory and work follow what is touched, not the image's size.

// bitmapCacheBytes bounds the decrypted bitmap words kept per open image
// (1 MiB of words describes 8 Mi allocation blocks: a 1 GiB image at the
// default 128-byte allocation block).
const bitmapCacheBytes = 4 << 20

// bitmapView answers "which allocation blocks are allocated" for one state
// of the image: the committed one (committedBitmap) or the one a
// transaction or mkfs is building (newBitmap).
type bitmapView interface {
	// word returns allocation blocks 64i..64i+63 as bits (bit j = block
	// 64i+j). Words past the image's end are zero.
	word(i uint64) (uint64, error)
}

// bitsOf returns the bits of allocation blocks a..a+cnt-1 (cnt <= 64)
// shifted down to bit 0.
func bitsOf(v bitmapView, a, cnt uint64) (uint64, error) {
	if cnt == 0 {
		return 0, nil
	}
	lo, err := v.word(a / 64)
	if err != nil {
		return 0, err
	}
	sh := a % 64
	w := lo >> sh
	if sh+cnt > 64 {
		hi, err := v.word(a/64 + 1)
		if err != nil {
			return 0, err
		}
		w |= hi << (64 - sh)
	}
	return w & lowBits(cnt), nil
}

// isAllocated reports one block's bit.
func isAllocated(v bitmapView, a uint64) (bool, error) {
	w, err := v.word(a / 64)
	return w&(1<<(a%64)) != 0, err
}

// lowBits is a mask of the n lowest bits (n <= 64).
func lowBits(n uint64) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

// countAllocated counts the allocated blocks of a view over total blocks.
func countAllocated(v bitmapView, total uint64) (uint64, error) {
	var n uint64
	for i := uint64(0); i*64 < total; i++ {
		w, err := v.word(i)
		if err != nil {
			return 0, err
		}
		n += uint64(bits.OnesCount64(w))
	}
	return n, nil
}

// committedBitmap is the bitmap file of an open image, loaded block by
// block through the authentication tree. It is safe for concurrent use.
type committedBitmap struct {
	f        *FS
	total    uint64 // allocation blocks in the image
	wordsPer uint64 // 64-bit words per bitmap block (after the IV)
	blocks   uint64 // bitmap blocks the extents hold

	mu    sync.Mutex
	cache map[uint64][]uint64 // bitmap block index → its words

	// last is the block the last lookup found: scans and runs of lookups
	// stay in one block, and need neither the lock nor the map.
	last atomic.Pointer[loadedBlock]
}

type loadedBlock struct {
	k     uint64
	words []uint64
}

func newCommittedBitmap(f *FS) (*committedBitmap, error) {
	l := f.layout
	ab := l.AllocBlockSize()
	bmBlock := l.BitmapBlockSize()
	bmAllocs := bmBlock / ab
	dataAllocs := uint64(1) << l.AuthTreeDataBlockLog2
	var allocs uint64
	for _, e := range f.bitmapExtents {
		if bmAllocs == 0 || e.Len%bmAllocs != 0 {
			return nil, corruptf("allocation bitmap extent %d+%d is not a whole number of bitmap blocks", e.Start, e.Len)
		}
		// Aligned to data blocks, the bitmap's own data blocks are entirely
		// allocated, which is what lets them be authenticated before any
		// bitmap bit is known.
		if e.Start%dataAllocs != 0 || e.Len%dataAllocs != 0 {
			return nil, corruptf("allocation bitmap extent %d+%d is not aligned to the %d-block authentication tree data block", e.Start, e.Len, dataAllocs)
		}
		allocs += e.Len
	}
	b := &committedBitmap{
		f:        f,
		total:    f.imageAllocBlocks,
		wordsPer: (bmBlock - uint64(f.algs.cipher.BlockSize)) / 8,
		cache:    make(map[uint64][]uint64),
	}
	if b.wordsPer == 0 {
		return nil, corruptf("allocation bitmap block of %d bytes holds no bitmap word", bmBlock)
	}
	if bmAllocs > 0 {
		b.blocks = allocs / bmAllocs
	}
	if need := (b.total + 63) / 64; b.blocks*b.wordsPer < need {
		return nil, corruptf("allocation bitmap holds %d words, the image needs %d", b.blocks*b.wordsPer, need)
	}
	return b, nil
}

// blockStart is the physical allocation block where bitmap block k starts.
func (b *committedBitmap) blockStart(k uint64) uint64 {
	bmAllocs := b.f.layout.BitmapBlockSize() / b.f.layout.AllocBlockSize()
	off := k * bmAllocs
	for _, e := range b.f.bitmapExtents {
		if off < e.Len {
			return e.Start + off
		}
		off -= e.Len
	}
	panic(fmt.Sprintf("BUG: bitmap block %d beyond the bitmap's %d blocks", k, b.blocks))
}

func (b *committedBitmap) word(i uint64) (uint64, error) {
	if i*64 >= b.total {
		return 0, nil
	}
	k := i / b.wordsPer
	if l := b.last.Load(); l != nil && l.k == k {
		return l.words[i%b.wordsPer], nil
	}
	b.mu.Lock()
	words, ok := b.cache[k]
	b.mu.Unlock()
	if !ok {
		var err error
		if words, err = b.load(k); err != nil {
			return 0, err
		}
	}
	b.last.Store(&loadedBlock{k, words})
	return words[i%b.wordsPer], nil
}

// load authenticates, decrypts and checks bitmap block k, then caches it.
func (b *committedBitmap) load(k uint64) ([]uint64, error) {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	start := b.blockStart(k)
	raw, err := f.authRead(start, l.BitmapBlockSize()/ab)
	if err != nil {
		return nil, fmt.Errorf("allocation bitmap: %w", err)
	}
	pt, err := decryptBlock(f.keys.blockCipher(inoAllocBitmap, subdomainData), raw)
	if err != nil {
		return nil, err
	}
	words := make([]uint64, b.wordsPer)
	for j := range words {
		words[j] = binary.LittleEndian.Uint64(pt[j*8:])
	}
	if err := b.check(k, words); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if uint64(len(b.cache)+1)*b.wordsPer*8 > bitmapCacheBytes {
		// Drop about half, in map order (pseudo-random): cheap, and a
		// dropped block is simply authenticated again when needed.
		n := len(b.cache) / 2
		for key := range b.cache {
			if n == 0 {
				break
			}
			delete(b.cache, key)
			n--
		}
	}
	b.cache[k] = words
	return words, nil
}

// check applies the bitmap's invariants to the words of block k: nothing
// beyond the image's end is allocated, and the blocks of the tree and the
// bitmap files are.
func (b *committedBitmap) check(k uint64, words []uint64) error {
	first := k * b.wordsPer * 64 // first allocation block described
	end := first + b.wordsPer*64
	for j, w := range words {
		base := first + uint64(j)*64
		if base+64 <= b.total {
			continue
		}
		valid := uint64(0)
		if base < b.total {
			valid = lowBits(b.total - base)
		}
		if w&^valid != 0 {
			return corruptf("allocation bitmap marks blocks beyond the image's end as allocated")
		}
	}
	for _, e := range append(slices.Clip(b.f.treeExtents), b.f.bitmapExtents...) {
		lo, hi := max(e.Start, first), min(e.Start+e.Len, end)
		for a := lo; a < hi; a++ {
			if words[(a-first)/64]&(1<<(a%64)) == 0 {
				return corruptf("allocation bitmap marks block %d of a filesystem metadata file as free", a)
			}
		}
	}
	return nil
}

// extentSet is a set of allocation blocks kept as sorted, disjoint,
// non-adjacent extents: a transaction's allocations and releases are a few
// extents whatever their size.
type extentSet struct {
	ext []disk.Extent
}

// add inserts e, merging with what it touches.
func (s *extentSet) add(e disk.Extent) {
	if e.Len == 0 {
		return
	}
	lo, hi := e.Start, e.Start+e.Len
	// First extent that ends at or after lo, first that starts after hi.
	i, _ := slices.BinarySearchFunc(s.ext, lo, func(x disk.Extent, t uint64) int { return cmpU64(x.Start+x.Len, t) })
	j := i
	for j < len(s.ext) && s.ext[j].Start <= hi {
		lo = min(lo, s.ext[j].Start)
		hi = max(hi, s.ext[j].Start+s.ext[j].Len)
		j++
	}
	s.ext = slices.Replace(s.ext, i, j, disk.Extent{Start: lo, Len: hi - lo})
}

// remove takes e out of the set.
func (s *extentSet) remove(e disk.Extent) {
	if e.Len == 0 {
		return
	}
	lo, hi := e.Start, e.Start+e.Len
	i, _ := slices.BinarySearchFunc(s.ext, lo, func(x disk.Extent, t uint64) int { return cmpU64(x.Start+x.Len, t) })
	var keep []disk.Extent
	j := i
	for ; j < len(s.ext) && s.ext[j].Start < hi; j++ {
		x := s.ext[j]
		if x.Start+x.Len <= lo {
			keep = append(keep, x)
			continue
		}
		if x.Start < lo {
			keep = append(keep, disk.Extent{Start: x.Start, Len: lo - x.Start})
		}
		if x.Start+x.Len > hi {
			keep = append(keep, disk.Extent{Start: hi, Len: x.Start + x.Len - hi})
		}
	}
	s.ext = slices.Replace(s.ext, i, j, keep...)
}

// find returns the index of the extent holding a, or -1.
func (s *extentSet) find(a uint64) int {
	i, _ := slices.BinarySearchFunc(s.ext, a, func(x disk.Extent, t uint64) int {
		if x.Start+x.Len <= t {
			return -1
		}
		if x.Start > t {
			return 1
		}
		return 0
	})
	if i < len(s.ext) && s.ext[i].Start <= a && a < s.ext[i].Start+s.ext[i].Len {
		return i
	}
	return -1
}

func (s *extentSet) contains(a uint64) bool { return s.find(a) >= 0 }

// nextStart returns the start of the first extent at or after a (a itself
// when a is in one), or ^0.
func (s *extentSet) nextStart(a uint64) uint64 {
	i, _ := slices.BinarySearchFunc(s.ext, a, func(x disk.Extent, t uint64) int { return cmpU64(x.Start+x.Len, t+1) })
	if i == len(s.ext) {
		return ^uint64(0)
	}
	return max(s.ext[i].Start, a)
}

// overlaps reports whether any block of e is in the set.
func (s *extentSet) overlaps(e disk.Extent) bool {
	i, _ := slices.BinarySearchFunc(s.ext, e.Start, func(x disk.Extent, t uint64) int { return cmpU64(x.Start+x.Len, t+1) })
	return i < len(s.ext) && s.ext[i].Start < e.Start+e.Len
}

// mask returns the set's blocks among 64i..64i+63 as a bitmap word.
func (s *extentSet) mask(i uint64) uint64 {
	lo, hi := i*64, i*64+64
	k, _ := slices.BinarySearchFunc(s.ext, lo, func(x disk.Extent, t uint64) int { return cmpU64(x.Start+x.Len, t+1) })
	var m uint64
	for ; k < len(s.ext) && s.ext[k].Start < hi; k++ {
		a, b := max(s.ext[k].Start, lo), min(s.ext[k].Start+s.ext[k].Len, hi)
		m |= lowBits(b-a) << (a - lo)
	}
	return m
}

// newBitmap is the bitmap of a state being built: the committed bitmap (nil
// for a new image: all free) with a transaction's allocations set and its
// releases cleared.
type newBitmap struct {
	base        bitmapView
	alloc, free *extentSet
	total       uint64
}

func (n *newBitmap) word(i uint64) (uint64, error) {
	if i*64 >= n.total {
		return 0, nil
	}
	var w uint64
	if n.base != nil {
		var err error
		if w, err = n.base.word(i); err != nil {
			return 0, err
		}
	}
	w |= n.alloc.mask(i)
	if n.free != nil {
		// A block allocated and released by the same transaction (an index
		// node emptied by a later merge) ends up free.
		w &^= n.free.mask(i)
	}
	return w, nil
}

// allocator hands out allocation blocks that are free in the committed state
// and not yet taken by the state being built; blocks a transaction releases
// stay taken until it commits, since the committed state still needs them.
type allocator struct {
	total  uint64
	base   bitmapView // committed bitmap; nil for a new image
	taken  extentSet  // allocated by the state being built
	avoid  *extentSet // held by others (staged writers); never handed out
	cursor uint64     // where first-fit searches start
}

// inUse returns the bits of word i that are not free to allocate.
func (al *allocator) inUse(i uint64) (uint64, error) {
	var w uint64
	if al.base != nil {
		var err error
		if w, err = al.base.word(i); err != nil {
			return 0, err
		}
	}
	w |= al.taken.mask(i)
	if al.avoid != nil {
		w |= al.avoid.mask(i)
	}
	if end := al.total; (i+1)*64 > end {
		// Blocks past the image's end are never free.
		if i*64 >= end {
			return ^uint64(0), nil
		}
		w |= ^lowBits(end - i*64)
	}
	return w, nil
}

// freeRun finds, from a onward, the first free run starting at a multiple
// of align and at least min(want, minLen) blocks long; it returns the run's
// start and its length capped at want. ok is false when there is none
// before the image's end.
func (al *allocator) freeRun(a, want, minLen, align uint64) (start, n uint64, ok bool, err error) {
	need := min(want, minLen)
	a = alignUp(a, align)
	for a+need <= al.total {
		// Skip to the next free block.
		w, err := al.inUse(a / 64)
		if err != nil {
			return 0, 0, false, err
		}
		if free := ^w >> (a % 64); free == 0 {
			a = alignUp((a/64+1)*64, align)
			continue
		} else if z := uint64(bits.TrailingZeros64(free)); z > 0 {
			a = alignUp(a+z, align)
			continue
		}
		// a is free: measure the run. Without a committed bitmap (a new
		// image) only the taken extents matter: jump to the next one.
		end := a
		if al.base == nil && al.avoid == nil {
			end = min(al.taken.nextStart(a), a+want)
		}
		for end < a+want && (al.base != nil || al.avoid != nil) {
			w, err := al.inUse(end / 64)
			if err != nil {
				return 0, 0, false, err
			}
			used := w >> (end % 64)
			if used == 0 {
				end = min((end/64+1)*64, a+want)
				continue
			}
			end = min(end+uint64(bits.TrailingZeros64(used)), a+want)
			break
		}
		end = min(end, al.total)
		if end-a >= need {
			return a, end - a, true, nil
		}
		a = alignUp(end+1, align)
	}
	return 0, 0, false, nil
}

func alignUp(a, align uint64) uint64 {
	if align <= 1 {
		return a
	}
	return (a + align - 1) / align * align
}

// alloc takes n contiguous blocks starting at a multiple of align, first fit
// from the cursor, as the reference's mkfs places its structures.
func (al *allocator) alloc(n, align uint64) (disk.Extent, error) {
	start, got, ok, err := al.freeRun(al.cursor, n, n, align)
	if err != nil {
		return disk.Extent{}, err
	}
	if !ok || got < n {
		return disk.Extent{}, fmt.Errorf("cocoonfs: no room for %d contiguous allocation blocks in a %d-block image: %w", n, al.total, ErrNoSpace)
	}
	e := disk.Extent{Start: start, Len: n}
	al.taken.add(e)
	return e, nil
}

// release returns blocks taken by the state being built (a file written and
// then dropped within one transaction).
func (al *allocator) release(e disk.Extent) { al.taken.remove(e) }
