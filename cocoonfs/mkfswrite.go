package cocoonfs

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Writing a new image is one pass over its data blocks in physical order,
// in memory independent of the image's size: the allocation bitmap is
// encrypted block by block as the pass reaches it, every data block's digest
// is computed from contents held in memory (metadata) or known to be
// unallocated (no contents at all), and the authentication tree is built
// bottom up beside the pass, each subtree written once complete. Free space
// is filled with random bytes or, without randomization, discarded (a new
// image file stays sparse), so the time is that of the metadata: the tree,
// the bitmap and the index.

// mkfsBatch is how many data blocks the pass digests at a time (on every
// core).
const mkfsBatch = 4096

// write finishes the metadata that depends on everything else (the update
// counter, the tree, the mutable header, the entry leaf's pre-authentication
// HMAC) and writes the image: first invalidate any old header, then
// everything else, a barrier, and the static header last.
func (b *builder) write() error {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	slices.SortFunc(b.writes, func(x, y region) int { return cmpU64(x.start, y.start) })
	regions := contentIndex(b.writes)

	// Update counter: a random start, encrypted with an all-zero IV.
	c := f.keys.blockCipher(inoUpdateCounter, subdomainData)
	bs := c.BlockSize()
	ctr := make([]byte, disk.EncryptedCounterLen(bs))
	copy(ctr, randomBytes(16))
	f.header.EncryptedCounter = make([]byte, len(ctr))
	cipher.NewCBCEncrypter(c, make([]byte, bs)).CryptBlocks(f.header.EncryptedCounter, ctr)
	f.header.ImageSizeAllocBlocks = f.imageAllocBlocks

	sh, err := disk.EncodeStaticHeader(b.sh)
	if err != nil {
		return err
	}
	w := &writer{f: f}
	// 1. Invalidate whatever header was there.
	w.at(0, make([]byte, len(sh)))
	w.sync()
	// 2. Free space, then the metadata held in memory.
	if err := b.fillFree(w); err != nil {
		return err
	}
	w.at(f.journalHead.Start*ab, make([]byte, f.journalHead.Len*ab))
	for _, r := range b.writes {
		w.at(r.start*ab, r.data)
	}
	if w.err != nil {
		return fmt.Errorf("cocoonfs: mkfs: %w", w.err)
	}
	// 3. The bitmap and the tree, in one pass.
	root, err := b.writeTree(w, regions)
	if err != nil {
		return err
	}
	f.header.RootHMAC = f.tree.rootHMAC(root, f.header.EncryptedCounter, f.imageContext())
	var leaf []byte
	for a := f.header.EntryLeaf.Start(); a < f.header.EntryLeaf.Start()+l.IndexLeafSize()/ab; a++ {
		leaf = append(leaf, regions.at(a, ab)...)
	}
	f.header.EntryLeafPreauthHMAC = f.entryLeafPreauth(leaf)
	mh, err := disk.EncodeMutableHeader(f.header, l)
	if err != nil {
		return err
	}
	w.at(disk.MutableHeaderOffset(b.sh), mh)
	w.sync()
	// 4. The static header: its tail, a barrier, then its first device block.
	head := min(len(sh), max(f.dev.BlockSize(), 128))
	if head < len(sh) {
		w.at(uint64(head), sh[head:])
		w.sync()
	}
	w.at(0, sh[:head])
	w.sync()
	if w.err != nil {
		return fmt.Errorf("cocoonfs: mkfs: %w", w.err)
	}
	return nil
}

// fillFree fills the image's free space with random bytes, or discards it
// when asked not to randomize. The backup creation info header of
// FormatMkfsInfo is not touched.
func (b *builder) fillFree(w *writer) error {
	f := b.f
	ab := f.layout.AllocBlockSize()
	used := extentSet{ext: slices.Clone(b.al.taken.ext)}
	used.add(b.keepExtent())
	var rnd cipher.Stream
	if !b.opts.NoRandomizeUnallocated {
		rnd = newFillStream()
	}
	trimmer, _ := f.dev.(blockdev.Trimmer)
	buf := make([]byte, 0, 1<<20)
	gap := func(start, end uint64) {
		if rnd == nil {
			if trimmer != nil && end > start {
				// Advisory: the contents of free space do not matter.
				_ = trimmer.Trim(int64(start*ab), int64((end-start)*ab))
			}
			return
		}
		for a := start; a < end && w.err == nil; {
			n := min(end-a, uint64(cap(buf))/ab)
			p := buf[:n*ab]
			clear(p)
			rnd.XORKeyStream(p, p)
			w.at(a*ab, p)
			a += n
		}
	}
	prev := uint64(0)
	for _, e := range used.ext {
		gap(prev, min(e.Start, f.imageAllocBlocks))
		prev = e.Start + e.Len
	}
	gap(prev, f.imageAllocBlocks)
	return w.err
}

// newFillStream returns a keystream for filling free space: AES-CTR under a
// fresh random key, as fast as the cipher and indistinguishable from the
// ciphertext around it.
func newFillStream() cipher.Stream {
	blk, err := aes.NewCipher(randomBytes(32))
	if err != nil {
		panic(fmt.Sprintf("BUG: AES rejected a 32-byte key: %v", err))
	}
	return cipher.NewCTR(blk, randomBytes(aes.BlockSize))
}

// bitmapWriter produces the new image's bitmap file block by block, in
// order, writing each as it is made and keeping only the blocks the pass
// has not digested yet.
type bitmapWriter struct {
	b       *builder
	w       *writer
	next    uint64 // next bitmap block to make
	made    region // blocks made and not yet consumed (contiguous)
	perBlk  uint64 // allocation blocks per bitmap block
	words   uint64 // words per bitmap block
	cipher  cipher.Block
	total   uint64 // bitmap blocks in the file
	extents []disk.Extent
}

func (b *builder) newBitmapWriter(w *writer) *bitmapWriter {
	f := b.f
	l := f.layout
	bw := &bitmapWriter{b: b, w: w, perBlk: l.BitmapBlockSize() / l.AllocBlockSize(),
		words: (l.BitmapBlockSize() - uint64(f.algs.cipher.BlockSize)) / 8, cipher: f.keys.blockCipher(inoAllocBitmap, subdomainData),
		extents: f.bitmapExtents}
	for _, e := range f.bitmapExtents {
		bw.total += e.Len / bw.perBlk
	}
	return bw
}

// blockAt is the physical allocation block of bitmap block k.
func (bw *bitmapWriter) blockAt(k uint64) uint64 {
	off := k * bw.perBlk
	for _, e := range bw.extents {
		if off < e.Len {
			return e.Start + off
		}
		off -= e.Len
	}
	return ^uint64(0)
}

// content returns the bytes of allocation block a of the bitmap file; calls
// come in increasing order of a.
func (bw *bitmapWriter) content(a uint64) ([]byte, error) {
	ab := bw.b.f.layout.AllocBlockSize()
	for {
		if n := uint64(len(bw.made.data)) / ab; a >= bw.made.start && a < bw.made.start+n {
			off := (a - bw.made.start) * ab
			return bw.made.data[off : off+ab], nil
		}
		if bw.next >= bw.total {
			return nil, fmt.Errorf("BUG: allocation block %d is not in the bitmap file", a)
		}
		blk, err := bw.make(bw.next)
		if err != nil {
			return nil, err
		}
		start := bw.blockAt(bw.next)
		bw.w.at(start*ab, blk)
		bw.made = region{start: start, data: blk}
		bw.next++
	}
}

// make encrypts bitmap block k.
func (bw *bitmapWriter) make(k uint64) ([]byte, error) {
	nb := bw.b.f.bitmap
	pt := make([]byte, 0, bw.words*8)
	for i := k * bw.words; i < (k+1)*bw.words; i++ {
		w, err := nb.word(i)
		if err != nil {
			return nil, err
		}
		pt = binary.LittleEndian.AppendUint64(pt, w)
	}
	return encryptBlock(bw.cipher, pt, int(bw.b.f.layout.BitmapBlockSize()))
}

// writeTree makes every data block's digest in order (writing the bitmap
// as it is reached), builds the tree over them and writes it; it returns
// the root node.
func (b *builder) writeTree(w *writer, regions contentIndex) ([]byte, error) {
	f := b.f
	t := f.tree
	l := f.layout
	ab := l.AllocBlockSize()
	log2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << log2
	bw := b.newBitmapWriter(w)
	tb := t.newBuilder(w.at, f.treeExtents[0].Start*ab)

	blocks := make([][]byte, 0, mkfsBatch)
	words := make([]uint64, 0, mkfsBatch)
	digests := make([][]byte, mkfsBatch)
	total := t.leaves * t.leafEntries // leaf slots, past the data blocks too
	for d0 := uint64(0); d0 < total; d0 += mkfsBatch {
		n := min(uint64(mkfsBatch), total-d0)
		blocks, words = blocks[:0], words[:0]
		for d := d0; d < d0+n; d++ {
			if d >= t.dataBlocks {
				blocks, words = append(blocks, nil), append(words, 0)
				continue
			}
			a := f.physicalDataBlock(d)
			cnt := min(per, f.imageAllocBlocks-a)
			word, err := f.digestBits(a, cnt)
			if err != nil {
				return nil, err
			}
			var blk []byte
			if word != 0 {
				blk = make([]byte, cnt*ab)
				inBitmap := extentsCover(f.bitmapExtents, a, cnt)
				for i := uint64(0); i < cnt; i++ {
					if word&(1<<i) == 0 {
						continue
					}
					var c []byte
					if inBitmap {
						var err error
						if c, err = bw.content(a + i); err != nil {
							return nil, err
						}
					} else if c = regions.at(a+i, ab); c == nil {
						return nil, fmt.Errorf("BUG: allocated block %d has no contents in the new image", a+i)
					}
					copy(blk[i*ab:], c)
				}
			}
			blocks, words = append(blocks, blk), append(words, word)
		}
		parallel(int(n), func(i int) {
			d := d0 + uint64(i)
			if d >= t.dataBlocks {
				digests[i] = make([]byte, t.leafDigestLen) // past the image: zero
				return
			}
			blk := blocks[i]
			if blk == nil {
				blk = []byte{}
			}
			digests[i] = t.dataDigest(blk, words[i], d)
		})
		for i := uint64(0); i < n; i++ {
			tb.add(digests[i])
		}
		if w.err != nil {
			return nil, fmt.Errorf("cocoonfs: mkfs: %w", w.err)
		}
	}
	if bw.next != bw.total {
		return nil, fmt.Errorf("BUG: %d of %d bitmap blocks written", bw.next, bw.total)
	}
	root := tb.finish()
	if w.err != nil {
		return nil, fmt.Errorf("cocoonfs: mkfs: %w", w.err)
	}
	return root, nil
}

// treeBuilder builds a whole tree bottom up from its leaf entries in order,
// holding the path to the current leaf. Nodes are stored in DFS pre-order:
// a node's position is the next free one when it is opened, before its
// children. A node at level 1 and its leaves are contiguous, so they are
// written together once the node is complete.
type treeBuilder struct {
	t       *authTree
	emit    func(off uint64, p []byte) // writes nodes at a byte offset
	base    uint64                     // byte offset of the tree's (single) extent
	path    [][]byte
	count   []uint64 // entries filled per level
	pos     []uint64 // DFS position per level
	first   []uint64 // first leaf per level
	next    uint64   // next DFS position
	leaf    uint64   // leaves done
	pending []byte   // a level-1 node's leaves, contiguous after it
	root    []byte
}

func (t *authTree) newBuilder(emit func(off uint64, p []byte), base uint64) *treeBuilder {
	h := t.height
	return &treeBuilder{t: t, emit: emit, base: base, path: make([][]byte, h), count: make([]uint64, h), pos: make([]uint64, h), first: make([]uint64, h)}
}

// open starts nodes from the highest missing level down to the leaf.
func (tb *treeBuilder) open() {
	for level := tb.t.height - 1; level >= 0; level-- {
		if tb.path[level] != nil {
			continue
		}
		tb.path[level] = make([]byte, tb.t.nodeSize)
		tb.count[level] = 0
		tb.pos[level] = tb.next
		tb.first[level] = tb.leaf
		tb.next++
	}
}

// add appends the next leaf entry.
func (tb *treeBuilder) add(digest []byte) {
	t := tb.t
	tb.open()
	copy(tb.path[0][tb.count[0]*uint64(t.leafDigestLen):], digest)
	tb.count[0]++
	if tb.count[0] == t.leafEntries {
		tb.close(0)
	}
}

// close finishes the node at level and, if that completes its parent, the
// parent too.
func (tb *treeBuilder) close(level int) {
	t := tb.t
	node := tb.path[level]
	var dg []byte
	if first := tb.first[level] * t.leafEntries; first < t.dataBlocks {
		dg = t.nodeDigest(node, level, first)
	} else {
		// A node covering only data blocks past the image's end: its
		// parent holds zeros for it (as the reference writes).
		dg = make([]byte, t.nodeDigestLen)
	}
	tb.path[level] = nil
	if level == t.height-1 {
		tb.root = node
	}
	if level == 0 {
		tb.leaf++
	}
	switch {
	case level == 0 && t.height > 1:
		tb.pending = append(tb.pending, node...)
	case level == 1:
		tb.emit(tb.base+tb.pos[1]*t.nodeSize, append(node, tb.pending...))
		tb.pending = tb.pending[:0]
	default:
		tb.emit(tb.base+tb.pos[level]*t.nodeSize, node)
	}
	if level+1 >= t.height {
		return
	}
	p := level + 1
	copy(tb.path[p][tb.count[p]*uint64(t.nodeDigestLen):], dg)
	tb.count[p]++
	// A parent is complete with all its children, or with the last leaf.
	if tb.count[p] == t.internalEntries || tb.leaf == t.leaves {
		tb.close(p)
	}
}

// finish returns the root node; after the last leaf every node is closed.
func (tb *treeBuilder) finish() []byte { return tb.root }
