package cocoonfs

import (
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"hash"
	"math/bits"
	"slices"
	"sync"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// authTree is the Merkle tree over all data blocks of the image (spec
// "Authentication tree"). Nodes are stored in DFS pre-order in the tree
// file's extents. Level 0 is the leaves; each leaf entry is the HMAC of one
// authentication tree data block, each internal entry the hash of one child.
type authTree struct {
	fs *FS

	extents  []disk.Extent // logical order, allocation blocks
	byStart  []disk.Extent // sorted by physical start, for index-domain mapping
	allocLen uint64        // total allocation blocks of the tree's extents

	nodeSize                     uint64
	leafEntries, internalEntries uint64 // powers of two
	leafDigestLen, nodeDigestLen int
	leaves                       uint64 // leaf nodes present
	height                       int    // levels; 1 means the root is a leaf
	dataBlocks                   uint64 // data blocks in the index domain inside the image

	rootDigest []byte // the root HMAC from the mutable header

	root []byte // the root node, verified against the root HMAC

	mu       sync.Mutex
	verified map[uint64][]byte // node position → contents verified from the root (bounded)

	// dataMACs recycles keyed HMAC states: Reset restores the keyed state
	// without rehashing the key pads, which matters at one HMAC per block.
	dataMACs sync.Pool
}

// fullSubtree returns the node count of a complete subtree of the given level.
func (t *authTree) fullSubtree(level int) uint64 {
	n := uint64(1)
	for i := 0; i < level; i++ {
		n = n*t.internalEntries + 1
	}
	return n
}

// nodesFor returns the node count of the tree with the given number of
// leaves, and its height.
func (t *authTree) nodesFor(leaves uint64) (total uint64, height int) {
	total, n, height := leaves, leaves, 1
	for n > 1 {
		n = (n + t.internalEntries - 1) / t.internalEntries
		total += n
		height++
	}
	return total, height
}

// newAuthTree derives the tree's dimensions from the length of its storage, as
// the spec requires: the largest tree whose nodes fit is the tree.
func newAuthTree(f *FS, extents []disk.Extent, rootDigest []byte) (*authTree, error) {
	l := f.layout
	t := &authTree{
		fs:            f,
		extents:       extents,
		nodeSize:      l.AuthTreeNodeSize(),
		leafDigestLen: f.algs.dataHMAC.Size,
		nodeDigestLen: f.algs.nodeHash.Size,
		rootDigest:    rootDigest,
		verified:      make(map[uint64][]byte),
	}
	t.leafEntries = pow2Floor(t.nodeSize / uint64(t.leafDigestLen))
	t.internalEntries = pow2Floor(t.nodeSize / uint64(t.nodeDigestLen))
	if t.leafEntries < 1 || t.internalEntries < 2 {
		return nil, corruptf("authentication tree node of %d bytes cannot hold two digests", t.nodeSize)
	}
	align := max(l.IOBlockSize(), l.AuthTreeDataBlockSize()) / l.AllocBlockSize()
	for _, e := range extents {
		if e.Start%align != 0 || e.Len%align != 0 {
			return nil, corruptf("authentication tree extent %d+%d not aligned to %d allocation blocks", e.Start, e.Len, align)
		}
		t.allocLen += e.Len
	}
	t.byStart = slices.Clone(extents)
	slices.SortFunc(t.byStart, func(a, b disk.Extent) int { return cmpU64(a.Start, b.Start) })
	for i := 1; i < len(t.byStart); i++ {
		if t.byStart[i].Start < t.byStart[i-1].Start+t.byStart[i-1].Len {
			return nil, corruptf("authentication tree extents overlap")
		}
	}
	nodeAllocBlocks := t.nodeSize / l.AllocBlockSize()
	if nodeAllocBlocks == 0 || t.allocLen%nodeAllocBlocks != 0 {
		return nil, corruptf("authentication tree of %d allocation blocks is not a whole number of nodes", t.allocLen)
	}
	stored := t.allocLen / nodeAllocBlocks
	// Largest leaf count whose tree fits the stored nodes (monotone: search).
	lo, hi := uint64(0), stored
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if n, _ := t.nodesFor(mid); n <= stored {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 {
		return nil, corruptf("authentication tree has no nodes")
	}
	t.leaves = lo
	_, t.height = t.nodesFor(lo)
	if t.height > t.maxHeight() {
		return nil, corruptf("authentication tree height %d exceeds the format's cap %d", t.height, t.maxHeight())
	}
	dataLog2 := uint(l.AuthTreeDataBlockLog2)
	if t.allocLen > f.imageAllocBlocks {
		return nil, corruptf("authentication tree larger than the image")
	}
	domainAlloc := f.imageAllocBlocks - t.allocLen
	t.dataBlocks = (domainAlloc + 1<<dataLog2 - 1) >> dataLog2
	if t.leaves > (t.dataBlocks+t.leafEntries-1)/t.leafEntries+t.internalEntries || t.leaves*t.leafEntries < t.dataBlocks {
		return nil, corruptf("authentication tree of %d leaves does not match the image's %d data blocks", t.leaves, t.dataBlocks)
	}
	return t, nil
}

// maxHeight is the spec's cap on the tree height: it keeps node counts and
// covered ranges representable in 64 bits.
func (t *authTree) maxHeight() int {
	c := bits.TrailingZeros64(t.internalEntries)
	d := bits.TrailingZeros64(t.leafEntries)
	a := int(t.fs.layout.AuthTreeDataBlockLog2)
	ceil := func(x, y int) int { return (x + y - 1) / y }
	return min(ceil(64, c), ceil(64-d-a, c)+1)
}

// entrySpan is how many data blocks one entry of a node at level covers.
func (t *authTree) entrySpan(level int) uint64 {
	if level == 0 {
		return 1
	}
	s := t.leafEntries
	for i := 1; i < level; i++ {
		s *= t.internalEntries
	}
	return s
}

// lastEntryBegin is the index-domain data block where the range of the last
// entry of the node at level, whose range starts at first, begins; it fixes
// the node's position in the tree for its digest (mod 2^64, as the spec says).
func (t *authTree) lastEntryBegin(level int, first uint64) uint64 {
	entries := t.internalEntries
	if level == 0 {
		entries = t.leafEntries
	}
	return first + (entries-1)*t.entrySpan(level)
}

// readNodeRaw reads the node at DFS position pos from the tree's extents.
func (t *authTree) readNodeRaw(pos uint64) ([]byte, error) {
	ab := t.fs.layout.AllocBlockSize()
	off := pos * t.nodeSize / ab // in allocation blocks within the tree file
	n := t.nodeSize / ab
	for _, e := range t.extents {
		if off < e.Len {
			if off+n > e.Len {
				return nil, corruptf("authentication tree node %d straddles extents", pos)
			}
			return t.fs.readRaw((e.Start+off)*ab, t.nodeSize)
		}
		off -= e.Len
	}
	return nil, corruptf("authentication tree node %d beyond the tree's extents", pos)
}

// rootHMAC is the root digest: the root node, the begin of its last entry's
// range, the encrypted update counter and the image context.
func (t *authTree) rootHMAC(root, encCounter, imageContext []byte) []byte {
	f := t.fs
	m := f.keys.hmac(f.algs.rootHMAC, inoAuthTree, subdomainNone, purposeAuthRoot)
	m.Write(t.digests(root, t.height-1))
	m.Write(binary.LittleEndian.AppendUint64(nil, t.lastEntryBegin(t.height-1, 0)))
	m.Write(encCounter)
	m.Write(imageContext)
	m.Write([]byte{0, authSubjectTreeRoot})
	return m.Sum(nil)
}

// verifyRoot checks the root node against the root HMAC.
func (t *authTree) verifyRoot(encCounter, imageContext []byte) error {
	root, err := t.readNodeRaw(0)
	if err != nil {
		return err
	}
	if !hmac.Equal(t.rootHMAC(root, encCounter, imageContext), t.rootDigest) {
		return authf("authentication tree root does not match the root digest in the mutable header")
	}
	t.root = root
	return nil
}

// build lays out the whole tree for the given data block digests in one
// buffer, through the streaming builder mkfs uses (nodes past the tree's
// size stay zero, as do entries past the image's end).
func (t *authTree) build(leafDigest func(d uint64) []byte) []byte {
	buf := make([]byte, t.allocLen*t.fs.layout.AllocBlockSize())
	tb := t.newBuilder(func(off uint64, p []byte) { copy(buf[off:], p) }, 0)
	for d := uint64(0); d < t.leaves*t.leafEntries; d++ {
		if d < t.dataBlocks {
			tb.add(leafDigest(d))
		} else {
			tb.add(make([]byte, t.leafDigestLen))
		}
	}
	return buf
}

// digests is the part of a node at level that holds digest entries: the
// spec digests "the digests stored in the node back to back", so the slack
// a node keeps when its entry count is rounded down to a power of two (1024
// bytes hold 16 SHA-384 digests in 768 bytes) is outside every digest.
func (t *authTree) digests(node []byte, level int) []byte {
	if level == 0 {
		return node[:t.leafEntries*uint64(t.leafDigestLen)]
	}
	return node[:t.internalEntries*uint64(t.nodeDigestLen)]
}

// nodeDigest is the digest a parent stores for the child node at level whose
// range starts at first.
func (t *authTree) nodeDigest(node []byte, level int, first uint64) []byte {
	h := t.fs.algs.nodeHash.New()
	h.Write(t.digests(node, level))
	h.Write(binary.LittleEndian.AppendUint64(nil, t.lastEntryBegin(level, first)))
	h.Write([]byte{0, authSubjectTreeNode})
	return h.Sum(nil)
}

// leafEntry returns the stored digest of index-domain data block d, after
// verifying every node on the path from the root.
func (t *authTree) leafEntry(d uint64) ([]byte, error) {
	if d >= t.dataBlocks {
		return nil, corruptf("data block %d outside the authenticated range", d)
	}
	node, err := t.leafNode(d / t.leafEntries)
	if err != nil {
		return nil, err
	}
	slot := d % t.leafEntries
	return node[slot*uint64(t.leafDigestLen) : (slot+1)*uint64(t.leafDigestLen)], nil
}

// leafNode returns leaf number leafIdx, verified on the path from the root.
func (t *authTree) leafNode(leafIdx uint64) ([]byte, error) {
	if t.root == nil {
		return nil, fmt.Errorf("BUG: authentication tree root not verified before use")
	}
	pos, first, level := uint64(0), uint64(0), t.height-1 // first: first leaf under the node
	node := t.root
	for level > 0 {
		span := uint64(1) // leaves per child
		for i := 1; i < level; i++ {
			span *= t.internalEntries
		}
		c := (leafIdx - first) / span
		childPos := pos + 1 + c*t.fullSubtree(level-1)
		childFirst := first + c*span
		slot := node[c*uint64(t.nodeDigestLen) : (c+1)*uint64(t.nodeDigestLen)]
		var err error
		node, err = t.node(childPos, slot, level-1, childFirst*t.leafEntries)
		if err != nil {
			return nil, err
		}
		pos, first, level = childPos, childFirst, level-1
	}
	return node, nil
}

// treeCacheBytes bounds the verified nodes kept per open image. A dropped
// node is read and verified again from its (cached or re-verified) parent.
const treeCacheBytes = 8 << 20

// node returns the verified node at pos (below the root), checking it
// against want (its digest in the verified parent) unless it is cached. The
// returned slice is shared: callers must not modify it.
func (t *authTree) node(pos uint64, want []byte, level int, firstData uint64) ([]byte, error) {
	if pos == 0 {
		return t.root, nil
	}
	t.mu.Lock()
	n, ok := t.verified[pos]
	t.mu.Unlock()
	if ok {
		return n, nil
	}
	raw, err := t.readNodeRaw(pos)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(t.nodeDigest(raw, level, firstData), want) {
		return nil, authf("authentication tree node %d (level %d) does not match its parent", pos, level)
	}
	t.mu.Lock()
	if uint64(len(t.verified)+1)*t.nodeSize > treeCacheBytes {
		// Drop about half, in map order (pseudo-random).
		k := len(t.verified) / 2
		for p := range t.verified {
			if k == 0 {
				break
			}
			delete(t.verified, p)
			k--
		}
	}
	t.verified[pos] = raw
	t.mu.Unlock()
	return raw, nil
}

// domainIndex maps a physical allocation block to its data block index in
// the authentication tree data block index domain; ok is false for blocks of
// the tree itself, which are not authenticated through it.
func (t *authTree) domainIndex(a uint64) (d uint64, ok bool) {
	var before uint64
	for _, e := range t.byStart {
		if a < e.Start {
			break
		}
		if a < e.Start+e.Len {
			return 0, false
		}
		before += e.Len
	}
	return (a - before) >> t.fs.layout.AuthTreeDataBlockLog2, true
}

// dataDigest is the HMAC of one data block: the contents of its allocation
// blocks whose bit is set in word, then word, the block's index, and the
// subject suffix. block holds the whole data block.
func (t *authTree) dataDigest(block []byte, word, d uint64) []byte {
	f := t.fs
	ab := f.layout.AllocBlockSize()
	m, _ := t.dataMACs.Get().(hash.Hash)
	if m == nil {
		m = f.keys.hmac(f.algs.dataHMAC, inoAuthTree, subdomainNone, purposeAuthData)
	}
	defer func() { m.Reset(); t.dataMACs.Put(m) }()
	for i := uint64(0); i*ab < uint64(len(block)); i++ {
		if word&(1<<i) != 0 {
			m.Write(block[i*ab : (i+1)*ab])
		}
	}
	var tail [18]byte
	binary.LittleEndian.PutUint64(tail[0:], word)
	binary.LittleEndian.PutUint64(tail[8:], d)
	tail[16] = 0
	tail[17] = authSubjectTreeDataBlock
	m.Write(tail[:])
	return m.Sum(nil)
}

func pow2Floor(x uint64) uint64 {
	if x == 0 {
		return 0
	}
	return 1 << (63 - bits.LeadingZeros64(x))
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// physicalDataBlock maps an index-domain data block to the physical
// allocation block it starts at: the inverse of domainIndex.
func (f *FS) physicalDataBlock(d uint64) uint64 {
	a := d << f.layout.AuthTreeDataBlockLog2
	for _, e := range f.tree.byStart {
		if e.Start <= a {
			a += e.Len
		} else {
			break
		}
	}
	return a
}

// nodeOffset is the byte offset of the node at DFS position pos.
func (t *authTree) nodeOffset(pos uint64) (uint64, error) {
	ab := t.fs.layout.AllocBlockSize()
	off := pos * t.nodeSize / ab
	for _, e := range t.extents {
		if off < e.Len {
			return (e.Start + off) * ab, nil
		}
		off -= e.Len
	}
	return 0, corruptf("authentication tree node %d beyond the tree's extents", pos)
}
