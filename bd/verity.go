package bd

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sync"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
)

// Tree device layout (little-endian; docs/format/bd.md):
// header(4096) = magic "SEALBDMT"(8) | version u16 =1 | flags u16 =0 | block size u32 |
// data blocks u64 | mac alg u8 =1 (HMAC-SHA256) | levels u8 | zero to 4096;
// then level 0 (P leaves, P = 2^levels >= data blocks), level 1 (P/2), …, level
// `levels` (the top node), 32 bytes per node.
const (
	treeMagic      = "SEALBDMT"
	treeVersion    = 1
	treeHeaderSize = 4096
	treeMACSHA256  = 1
	// NodeSize is the size of a tree node and of the root hash.
	NodeSize = sha256.Size
	// MinMACKeySize is the shortest MAC key Verity accepts.
	MinMACKeySize = 16

	tagLeaf     = 0x00
	tagInterior = 0x01
	rootLabel   = "sealfs-bd-verity-root-v1"
)

// Sizes of the pieces FormatVerity, OpenVerity and Check stream through.
const (
	streamData   = 1 << 20   // data bytes read and hashed at a time
	streamLeaves = 256 << 10 // leaf bytes read at a time
)

// Verity authenticates every block of a lower device against a Merkle tree
// of HMAC-SHA256 nodes kept on a separate tree device and a trusted root
// hash given at open (docs/format/bd.md defines the tree exactly). A block
// that does not match its leaf, or a tree that does not match the root,
// fails with an error wrapping errs.ErrAuthentication; nothing unverified is
// returned. Writes update the block's leaf and the path to the root on the
// tree device; Root reports the new root, which the caller keeps somewhere
// trusted (see "Crash consistency" in the package documentation).
//
// Memory is bounded by VerityOptions.TreeCache whatever the device size
// (see "Memory" in the package documentation): a device whose whole tree
// fits keeps it in memory, so a read costs one HMAC over the block; a
// larger one keeps the upper levels and a cache of recently used leaf
// groups, each checked against the upper levels when it is read back from
// the tree device.
//
// Verity is safe for concurrent use: reads run in parallel, writes are
// serialized with each other and with reads.
type Verity struct {
	data, tree blockdev.Device
	bs         int
	n          int64 // data blocks
	levels     int
	levelOffs  []int64 // byte offset of each level on the tree device
	key        []byte
	macs       sync.Pool // *nodeMAC

	// cut: levels cut..levels are in upper; below them, groups of 2^cut
	// leaves are read from the tree device on demand (none when cut is 0).
	cut    int
	groups groupCache

	mu    sync.RWMutex
	upper [][]byte // upper[l-cut] holds level l, NodeSize bytes per node
	root  []byte
	err   error // a failed tree write: the device refuses further writes
}

// VerityOptions configure FormatVerity and OpenVerity; nil means defaults.
type VerityOptions struct {
	// BlockSize is 512, 1024, 2048 or 4096 (0: 4096).
	BlockSize int

	// TreeCache is how many bytes of tree nodes to keep in memory (0:
	// DefaultTreeCache). A device whose whole tree (64 bytes per data
	// block, rounded up to a power of two) fits is served from memory;
	// a larger one reads leaf groups back from the tree device as blocks
	// are touched and caches what fits. It does not change the format.
	TreeCache int64

	// Progress, if set, is called by FormatVerity with the data blocks
	// hashed so far and the total, from the calling goroutine.
	Progress func(done, total uint64)
}

// TreeSize returns the size of the tree device for dataSize bytes of data
// (whole blocks of blockSize; 0 means 4096).
func TreeSize(dataSize int64, blockSize int) (int64, error) {
	bs, err := blockSizeOr(blockSize)
	if err != nil {
		return 0, err
	}
	n := dataSize / int64(bs)
	if n < 1 {
		return 0, fmt.Errorf("bd: a %d-byte device holds no %d-byte block", dataSize, bs)
	}
	levels := treeLevels(n)
	return treeHeaderSize + (int64(2)<<levels-1)*NodeSize, nil
}

func treeLevels(n int64) int {
	if n <= 1 {
		return 0
	}
	return bits.Len64(uint64(n - 1))
}

func newVerity(data, tree blockdev.Device, macKey []byte, opts *VerityOptions) (*Verity, error) {
	var o VerityOptions
	if opts != nil {
		o = *opts
	}
	bs, err := blockSizeOr(o.BlockSize)
	if err != nil {
		return nil, err
	}
	if len(macKey) < MinMACKeySize {
		return nil, fmt.Errorf("bd: MAC key is %d bytes, want at least %d", len(macKey), MinMACKeySize)
	}
	if o.TreeCache < 0 {
		return nil, fmt.Errorf("bd: negative tree cache size %d", o.TreeCache)
	}
	budget := o.TreeCache
	if budget == 0 {
		budget = DefaultTreeCache
	}
	tsize, err := TreeSize(data.Size(), bs)
	if err != nil {
		return nil, err
	}
	if tree.Size() < tsize {
		return nil, fmt.Errorf("bd: tree device holds %d bytes, the tree needs %d: %w", tree.Size(), tsize, errs.ErrCorrupt)
	}
	v := &Verity{data: data, tree: tree, bs: bs, n: data.Size() / int64(bs), key: bytes.Clone(macKey)}
	v.levels = treeLevels(v.n)
	v.levelOffs = make([]int64, v.levels+1)
	off := int64(treeHeaderSize)
	for l := range v.levelOffs {
		v.levelOffs[l] = off
		off += (int64(1) << (v.levels - l)) * NodeSize
	}
	var entries int
	v.cut, entries = treeGeometry(v.levels, budget)
	v.upper = make([][]byte, v.levels-v.cut+1)
	for l := v.cut; l <= v.levels; l++ {
		v.upper[l-v.cut] = make([]byte, (int64(1)<<(v.levels-l))*NodeSize)
	}
	if v.cut > 0 {
		v.groups.init(entries)
	}
	v.macs.New = func() any { return newNodeMAC(v.key) }
	return v, nil
}

func (v *Verity) mac() *nodeMAC { return v.macs.Get().(*nodeMAC) }

// workerMACs returns one nodeMAC per CPU, for parallel; putMACs returns
// them to the pool.
func (v *Verity) workerMACs() []*nodeMAC {
	macs := make([]*nodeMAC, runtime.GOMAXPROCS(0))
	for i := range macs {
		macs[i] = v.mac()
	}
	return macs
}

func (v *Verity) putMACs(macs []*nodeMAC) {
	for _, m := range macs {
		v.macs.Put(m)
	}
}

// groupLeaves is the number of leaves in a group (1 when the whole tree is
// kept).
func (v *Verity) groupLeaves() int64 { return int64(1) << v.cut }

// groupOff is the index in a group's nodes where level l (< cut) starts.
func (v *Verity) groupOff(l int) int { return 2<<v.cut - 2<<(v.cut-l) }

// dataGroups is the number of groups that hold data blocks.
func (v *Verity) dataGroups() int64 { return (v.n + v.groupLeaves() - 1) >> v.cut }

// hashGroup computes the interior levels of a group whose leaves are in
// nodes (the layout of group.nodes) and writes its level-cut node to top.
func (v *Verity) hashGroup(m *nodeMAC, nodes, top []byte) {
	for l := 1; l < v.cut; l++ {
		m.hashLevel(nodes[v.groupOff(l-1)*NodeSize:v.groupOff(l)*NodeSize], nodes[v.groupOff(l)*NodeSize:v.groupOff(l+1)*NodeSize])
	}
	last := nodes[v.groupOff(v.cut-1)*NodeSize:]
	m.interior(last[:NodeSize], last[NodeSize:], top)
}

// FormatVerity computes the tree over the current contents of data, writes
// it (with its header) to tree, syncs tree and returns the device; Root
// gives the root hash to keep. tree must hold TreeSize bytes.
//
// It streams: the data is read and hashed a few MiB at a time (on every
// CPU), each batch of leaves and the levels above them up to the kept
// upper tree are written as they are done, and the padding subtrees past
// the last block, which are all alike, are hashed once per level. Memory
// is bounded by the tree cache budget plus a few MiB of buffers.
func FormatVerity(ctx context.Context, data, tree blockdev.Device, macKey []byte, opts *VerityOptions) (*Verity, error) {
	v, err := newVerity(data, tree, macKey, opts)
	if err != nil {
		return nil, err
	}
	var progress func(done, total uint64)
	if opts != nil {
		progress = opts.Progress
	}
	if _, err := tree.WriteAt(v.header(), 0); err != nil {
		return nil, fmt.Errorf("bd: writing the tree header: %w", err)
	}
	if err := v.formatLower(ctx, progress); err != nil {
		return nil, err
	}
	v.computeUpper()
	for l := v.cut; l <= v.levels; l++ {
		if _, err := tree.WriteAt(v.upper[l-v.cut], v.levelOffs[l]); err != nil {
			return nil, fmt.Errorf("bd: writing tree level %d: %w", l, err)
		}
	}
	if err := tree.Sync(); err != nil {
		return nil, fmt.Errorf("bd: syncing the tree: %w", err)
	}
	return v, nil
}

// formatLower hashes every data block and fills upper[0] (level cut). When
// cut > 0 it also writes the levels below cut, one batch of groups at a
// time: a batch holds its levels 0..cut-1 level after level, so each level
// of a batch is one contiguous write.
func (v *Verity) formatLower(ctx context.Context, progress func(done, total uint64)) error {
	G := v.groupLeaves()
	batchGroups := max(1, int64(streamLeaves/NodeSize)>>v.cut)
	batchLeaves := batchGroups * G
	chunkBlocks := min(int64(max(1, streamData/v.bs)), batchLeaves)
	buf := make([]byte, chunkBlocks*int64(v.bs))
	var batch []byte // levels 0..cut-1 of batchGroups groups
	if v.cut > 0 {
		batch = make([]byte, batchGroups*int64(groupNodes(v.cut))*NodeSize)
	}
	// levelAt is where level l (< cut) of the current batch starts in batch.
	levelAt := func(l int) int64 { return int64(v.groupOff(l)) * batchGroups * NodeSize }
	macs := v.workerMACs()
	defer v.putMACs(macs)
	for g0 := int64(0); g0 < v.dataGroups(); g0 += batchGroups {
		k := min(batchGroups, v.dataGroups()-g0) // groups in this batch
		first := g0 * G                          // first block of the batch
		last := min(first+k*G, v.n)              // end of its data blocks
		var leaves []byte
		if v.cut == 0 {
			leaves = v.upper[0][first*NodeSize:]
		} else {
			leaves = batch[:k*G*NodeSize]
		}
		for b := first; b < last; b += chunkBlocks {
			if err := ctx.Err(); err != nil {
				return err
			}
			c := min(chunkBlocks, last-b)
			chunk := buf[:c*int64(v.bs)]
			if err := readUnder(v.data, chunk, b*int64(v.bs)); err != nil {
				return err
			}
			parallel(int(c), 16, len(macs), func(w, lo, hi int) {
				m := macs[w]
				for i := lo; i < hi; i++ {
					blk := b + int64(i)
					m.leaf(blk, chunk[i*v.bs:(i+1)*v.bs], leaves[(blk-first)*NodeSize:])
				}
			})
			if progress != nil {
				progress(uint64(b+c), uint64(v.n))
			}
		}
		if v.cut == 0 {
			continue
		}
		clear(leaves[(last-first)*NodeSize:]) // padding leaves
		// Levels 1..cut-1 of the batch, then the level-cut node of each group.
		for l := 1; l < v.cut; l++ {
			below := batch[levelAt(l-1) : levelAt(l-1)+k*(G>>(l-1))*NodeSize]
			above := batch[levelAt(l) : levelAt(l)+k*(G>>l)*NodeSize]
			parallel(len(above)/NodeSize, 256, len(macs), func(w, lo, hi int) {
				macs[w].hashLevel(below[2*lo*NodeSize:2*hi*NodeSize], above[lo*NodeSize:hi*NodeSize])
			})
		}
		top := batch[levelAt(v.cut-1) : levelAt(v.cut-1)+k*2*NodeSize]
		macs[0].hashLevel(top, v.upper[0][g0*NodeSize:(g0+k)*NodeSize])
		for l := 0; l < v.cut; l++ {
			lvl := batch[levelAt(l) : levelAt(l)+k*(G>>l)*NodeSize]
			if _, err := v.tree.WriteAt(lvl, v.levelOffs[l]+g0*(G>>l)*NodeSize); err != nil {
				return fmt.Errorf("bd: writing tree level %d: %w", l, err)
			}
		}
	}
	if v.cut == 0 {
		return nil // padding leaves of upper[0] are zero already
	}
	// Groups past the last data block: all padding, alike at every level.
	z := zeroChain(macs[0], v.cut)
	groups := int64(1) << (v.levels - v.cut)
	for g := v.dataGroups(); g < groups; g++ {
		copy(v.upper[0][g*NodeSize:], z[v.cut])
	}
	fill := buf[:min(int64(len(buf)), (groups-v.dataGroups())*G*NodeSize)]
	for l := 0; l < v.cut && len(fill) > 0; l++ {
		for i := 0; i < len(fill); i += NodeSize {
			copy(fill[i:], z[l])
		}
		for j, end := v.dataGroups()*(G>>l), groups*(G>>l); j < end; {
			c := min(int64(len(fill)/NodeSize), end-j)
			if _, err := v.tree.WriteAt(fill[:c*NodeSize], v.levelOffs[l]+j*NodeSize); err != nil {
				return fmt.Errorf("bd: writing tree level %d: %w", l, err)
			}
			j += c
		}
	}
	return nil
}

// OpenVerity opens a device formatted by FormatVerity. It reads the tree's
// leaves, recomputes the interior nodes and compares the result with the
// trusted root: a mismatch (a tampered or rolled-back tree, or a tree ahead
// of or behind root after a crash) fails with errs.ErrAuthentication. The
// interior nodes stored on the tree device are not trusted or needed; Check
// reports any that disagree.
//
// The leaves are streamed (a MiB at a time, hashed on every CPU): memory
// stays within the tree cache budget whatever the device size, and the
// time is that of reading and hashing 32 bytes per data block.
func OpenVerity(data, tree blockdev.Device, macKey, root []byte, opts *VerityOptions) (*Verity, error) {
	v, err := newVerity(data, tree, macKey, opts)
	if err != nil {
		return nil, err
	}
	h := make([]byte, 64)
	if err := readUnder(tree, h, 0); err != nil {
		return nil, err
	}
	if err := v.checkHeader(h); err != nil {
		return nil, err
	}
	if err := v.openLower(); err != nil {
		return nil, err
	}
	v.computeUpper()
	if !hmac.Equal(v.root, root) {
		return nil, fmt.Errorf("bd: verity tree does not match the trusted root hash (tampered, rolled back, or out of step after a crash): %w", errs.ErrAuthentication)
	}
	return v, nil
}

// openLower fills upper[0] (level cut) from the leaves on the tree device.
func (v *Verity) openLower() error {
	if v.cut == 0 {
		return readUnder(v.tree, v.upper[0][:v.n*NodeSize], v.levelOffs[0])
	}
	G := v.groupLeaves()
	batchGroups := max(1, int64(streamLeaves/NodeSize)>>v.cut)
	leaves := make([]byte, batchGroups*G*NodeSize)
	macs := v.workerMACs()
	defer v.putMACs(macs)
	scratch := make([][]byte, len(macs))
	for w := range scratch {
		scratch[w] = make([]byte, groupNodes(v.cut)*NodeSize)
	}
	for g0 := int64(0); g0 < v.dataGroups(); g0 += batchGroups {
		k := min(batchGroups, v.dataGroups()-g0)
		first, last := g0*G, min((g0+k)*G, v.n)
		if err := readUnder(v.tree, leaves[:(last-first)*NodeSize], v.levelOffs[0]+first*NodeSize); err != nil {
			return err
		}
		clear(leaves[(last-first)*NodeSize : k*G*NodeSize])
		parallel(int(k), max(1, 256>>v.cut), len(macs), func(w, lo, hi int) {
			for i := lo; i < hi; i++ {
				copy(scratch[w], leaves[int64(i)*G*NodeSize:int64(i+1)*G*NodeSize])
				v.hashGroup(macs[w], scratch[w], v.upper[0][(g0+int64(i))*NodeSize:])
			}
		})
	}
	z := zeroChain(macs[0], v.cut)
	for g := v.dataGroups(); g < int64(1)<<(v.levels-v.cut); g++ {
		copy(v.upper[0][g*NodeSize:], z[v.cut])
	}
	return nil
}

func (v *Verity) header() []byte {
	h := make([]byte, treeHeaderSize)
	copy(h, treeMagic)
	binary.LittleEndian.PutUint16(h[8:], treeVersion)
	binary.LittleEndian.PutUint32(h[12:], uint32(v.bs))
	binary.LittleEndian.PutUint64(h[16:], uint64(v.n))
	h[24] = treeMACSHA256
	h[25] = byte(v.levels)
	return h
}

func (v *Verity) checkHeader(h []byte) error {
	switch {
	case string(h[:8]) != treeMagic:
		return fmt.Errorf("bd: not a verity tree (bad magic): %w", errs.ErrCorrupt)
	case binary.LittleEndian.Uint16(h[8:]) != treeVersion:
		return fmt.Errorf("bd: verity tree version %d: %w", binary.LittleEndian.Uint16(h[8:]), errs.ErrUnsupported)
	case binary.LittleEndian.Uint16(h[10:]) != 0:
		return fmt.Errorf("bd: verity tree flags %#x: %w", binary.LittleEndian.Uint16(h[10:]), errs.ErrUnsupported)
	case h[24] != treeMACSHA256:
		return fmt.Errorf("bd: verity tree MAC algorithm %d: %w", h[24], errs.ErrUnsupportedAlgorithm)
	}
	bs, n, levels := binary.LittleEndian.Uint32(h[12:]), binary.LittleEndian.Uint64(h[16:]), h[25]
	if int(bs) != v.bs || n != uint64(v.n) || int(levels) != v.levels {
		return fmt.Errorf("bd: verity tree is for %d blocks of %d bytes (%d levels), the device has %d of %d: %w",
			n, bs, levels, v.n, v.bs, errs.ErrCorrupt)
	}
	return nil
}

// rootOf returns HMAC(K, "sealfs-bd-verity-root-v1" || u32le(bs) || u64le(n) || top).
func (v *Verity) rootOf(m *nodeMAC) []byte {
	var b [12]byte
	binary.LittleEndian.PutUint32(b[:], uint32(v.bs))
	binary.LittleEndian.PutUint64(b[4:], uint64(v.n))
	m.h.Reset()
	m.h.Write([]byte(rootLabel))
	m.h.Write(b[:])
	m.h.Write(v.upper[v.levels-v.cut])
	return m.h.Sum(nil)
}

// computeUpper recomputes the kept levels above cut and the root from
// level cut. Leaves past the last data block are padding: NodeSize zero
// bytes.
func (v *Verity) computeUpper() {
	if v.cut == 0 {
		clear(v.upper[0][v.n*NodeSize:])
	}
	macs := v.workerMACs()
	defer v.putMACs(macs)
	for l := v.cut + 1; l <= v.levels; l++ {
		below, cur := v.upper[l-1-v.cut], v.upper[l-v.cut]
		parallel(len(cur)/NodeSize, 4096, len(macs), func(w, lo, hi int) {
			macs[w].hashLevel(below[2*lo*NodeSize:2*hi*NodeSize], cur[lo*NodeSize:hi*NodeSize])
		})
	}
	v.root = v.rootOf(macs[0])
}

// loadGroup reads the leaves of group idx from the tree device into nodes
// (groupNodes(cut) nodes), computes the group's interior nodes and checks
// its level-cut node against the verified upper tree. The caller holds mu.
func (v *Verity) loadGroup(idx int64, nodes []byte) error {
	first := idx << v.cut
	last := min(first+v.groupLeaves(), v.n)
	if err := readUnder(v.tree, nodes[:(last-first)*NodeSize], v.levelOffs[0]+first*NodeSize); err != nil {
		return fmt.Errorf("bd: reading the verity leaves of blocks %d..%d: %w", first, last-1, err)
	}
	clear(nodes[(last-first)*NodeSize : v.groupLeaves()*NodeSize])
	m := v.mac()
	defer v.macs.Put(m)
	var top [NodeSize]byte
	v.hashGroup(m, nodes, top[:])
	if !hmac.Equal(top[:], v.upper[0][idx*NodeSize:(idx+1)*NodeSize]) {
		return fmt.Errorf("bd: the verity leaves of blocks %d..%d on the tree device differ from the tree verified at open (the tree device was altered): %w",
			first, last-1, errs.ErrAuthentication)
	}
	return nil
}

// group returns the verified group idx, from the cache or read from the
// tree device and cached. The caller holds mu (read or write).
func (v *Verity) group(idx int64) (*group, error) {
	if g := v.groups.get(idx); g != nil {
		return g, nil
	}
	g := &group{idx: idx, nodes: make([]byte, groupNodes(v.cut)*NodeSize)}
	if err := v.loadGroup(idx, g.nodes); err != nil {
		return nil, err
	}
	return v.groups.add(g), nil
}

// leafOf returns the verified leaf of block b; *g caches the group of the
// previous call, so runs of blocks look the group up once. The caller
// holds mu.
func (v *Verity) leafOf(b int64, g **group) ([]byte, error) {
	if v.cut == 0 {
		return v.upper[0][b*NodeSize : (b+1)*NodeSize], nil
	}
	idx := b >> v.cut
	if *g == nil || (*g).idx != idx {
		var err error
		if *g, err = v.group(idx); err != nil {
			return nil, err
		}
	}
	i := b & (v.groupLeaves() - 1)
	return (*g).nodes[i*NodeSize : (i+1)*NodeSize], nil
}

// ReadAt implements blockdev.Device for whole blocks. If a block fails
// authentication, the call returns the verified blocks before it with an
// error wrapping errs.ErrAuthentication that names the block; the rest of p
// is zeroed.
func (v *Verity) ReadAt(p []byte, off int64) (int, error) {
	size := v.n * int64(v.bs)
	n, err := checkRead(len(p), off, size, v.bs)
	if err != nil || n == 0 {
		return 0, errOrEOF(err, len(p))
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := readUnder(v.data, p[:n], off); err != nil {
		clear(p[:n])
		return 0, err
	}
	m := v.mac()
	defer v.macs.Put(m)
	var got [NodeSize]byte
	var g *group
	first := off / int64(v.bs)
	for i := 0; i < n; i += v.bs {
		b := first + int64(i/v.bs)
		want, err := v.leafOf(b, &g)
		if err != nil {
			clear(p[i:])
			return i, fmt.Errorf("bd: block %d (bytes %d..%d): %w", b, b*int64(v.bs), (b+1)*int64(v.bs), err)
		}
		m.leaf(b, p[i:i+v.bs], got[:])
		if !hmac.Equal(got[:], want) {
			clear(p[i:])
			return i, fmt.Errorf("bd: block %d (bytes %d..%d) does not match its verity leaf: %w",
				b, b*int64(v.bs), (b+1)*int64(v.bs), errs.ErrAuthentication)
		}
	}
	return n, eofIf(n < len(p))
}

// writeSpan is the part of the tree a write changes: for each level, the
// node range [lo, hi), and (when cut > 0) the groups it touches.
type writeSpan struct {
	v      *Verity
	g0     int64    // first group
	groups []*group // groups g0, g0+1, …
}

// node returns node j of level l.
func (s *writeSpan) node(l int, j int64) []byte {
	v := s.v
	if l >= v.cut {
		return v.upper[l-v.cut][j*NodeSize : (j+1)*NodeSize]
	}
	g := s.groups[(j>>(v.cut-l))-s.g0]
	k := int64(v.groupOff(l)) + j&(int64(1)<<(v.cut-l)-1)
	return g.nodes[k*NodeSize : (k+1)*NodeSize]
}

// level returns nodes [lo, hi) of level l as one slice: straight from
// memory when they lie in one piece, else copied into scratch.
func (s *writeSpan) level(l int, lo, hi int64, scratch []byte) []byte {
	v := s.v
	if l >= v.cut {
		return v.upper[l-v.cut][lo*NodeSize : hi*NodeSize]
	}
	sh := v.cut - l
	if lo>>sh == (hi-1)>>sh {
		g := s.groups[(lo>>sh)-s.g0]
		k := int64(v.groupOff(l)) + lo&(int64(1)<<sh-1)
		return g.nodes[k*NodeSize : (k+hi-lo)*NodeSize]
	}
	out := scratch[:(hi-lo)*NodeSize]
	for j := lo; j < hi; j++ {
		copy(out[(j-lo)*NodeSize:], s.node(l, j))
	}
	return out
}

// WriteAt implements blockdev.Device for whole blocks. It writes the data,
// then the changed leaves and the paths above them (level by level, one
// write per level), and updates the root. The write does not return until
// the tree device has the new nodes; durability needs Sync as usual. If
// writing the tree fails, the device fails every later write with that
// error (reads keep being verified against the in-memory tree).
//
// The leaf groups a write touches are verified before anything is written
// (a group whose leaves on the tree device were altered since open fails
// the write with errs.ErrAuthentication, and nothing is written), except
// groups the write covers whole.
func (v *Verity) WriteAt(p []byte, off int64) (int, error) {
	size := v.n * int64(v.bs)
	if err := checkWrite(len(p), off, size, v.bs, blockdev.IsReadOnly(v.data)); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	first := off / int64(v.bs)
	count := int64(len(p) / v.bs)
	leaves := make([]byte, count*NodeSize)
	parallel(int(count), 64, runtime.GOMAXPROCS(0), func(_, lo, hi int) {
		m := v.mac()
		defer v.macs.Put(m)
		for i := lo; i < hi; i++ {
			m.leaf(first+int64(i), p[i*v.bs:(i+1)*v.bs], leaves[i*NodeSize:])
		}
	})
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	s := writeSpan{v: v}
	if v.cut > 0 {
		var err error
		if s, err = v.spanGroups(first, count); err != nil {
			return 0, err
		}
	}
	if _, err := v.data.WriteAt(p, off); err != nil {
		return 0, err
	}
	for i := int64(0); i < count; i++ {
		copy(s.node(0, first+i), leaves[i*NodeSize:])
	}
	m := v.mac()
	defer v.macs.Put(m)
	var werr error
	scratch := leaves            // the leaves are in place now; reuse the buffer
	lo, hi := first, first+count // [lo, hi) changed at the current level
	for l := 0; ; l++ {
		if werr == nil {
			if _, err := v.tree.WriteAt(s.level(l, lo, hi, scratch), v.levelOffs[l]+lo*NodeSize); err != nil {
				werr = err
			}
		}
		if l == v.levels {
			break
		}
		lo, hi = lo/2, (hi+1)/2
		for j := lo; j < hi; j++ {
			m.interior(s.node(l, 2*j), s.node(l, 2*j+1), s.node(l+1, j))
		}
	}
	v.root = v.rootOf(m)
	if werr != nil {
		// The in-memory tree has the new nodes (finished above, so reads
		// stay consistent with the data just written); the groups that
		// hold some of them must not be dropped and read back.
		for _, g := range s.groups {
			v.groups.pin(g)
		}
		v.err = fmt.Errorf("bd: verity tree write failed, device is now read-only until reopened: %w", werr)
		return 0, werr
	}
	for _, g := range s.groups {
		v.groups.add(g) // fresh groups are complete now; cached ones stay
	}
	return len(p), nil
}

// spanGroups returns the groups blocks [first, first+count) fall in:
// verified ones, and fresh ones (not cached yet) for groups of data blocks
// the write covers whole. The caller holds mu for writing.
func (v *Verity) spanGroups(first, count int64) (writeSpan, error) {
	g0, g1 := first>>v.cut, (first+count-1)>>v.cut
	s := writeSpan{v: v, g0: g0, groups: make([]*group, g1-g0+1)}
	G := v.groupLeaves()
	for idx := g0; idx <= g1; idx++ {
		lo := idx << v.cut
		g := v.groups.get(idx)
		if g == nil && first <= lo && lo+G <= first+count {
			// Every leaf is about to be replaced (and none is padding,
			// whose nodes a fresh group would lack): nothing to verify.
			g = &group{idx: idx, nodes: make([]byte, groupNodes(v.cut)*NodeSize)}
		}
		if g == nil {
			var err error
			if g, err = v.group(idx); err != nil {
				return s, fmt.Errorf("bd: write of blocks %d..%d: %w", first, first+count-1, err)
			}
		}
		s.groups[idx-g0] = g
	}
	return s, nil
}

// Root returns the current root hash: the one given at open, or the one
// after the latest write that returned.
func (v *Verity) Root() []byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return bytes.Clone(v.root)
}

// Sync makes data and tree durable: the data device first, then the tree
// device. After it returns nil, Root is the root of what is on the media.
func (v *Verity) Sync() error {
	if err := v.data.Sync(); err != nil {
		return err
	}
	return v.tree.Sync()
}

// Size implements blockdev.Device.
func (v *Verity) Size() int64 { return v.n * int64(v.bs) }

// BlockSize implements blockdev.Device.
func (v *Verity) BlockSize() int { return v.bs }

// ReadOnly implements blockdev.ReadOnlyDevice.
func (v *Verity) ReadOnly() bool { return blockdev.IsReadOnly(v.data) }

// CheckReport is what Check found.
type CheckReport struct {
	Blocks int64 // data blocks checked
	// BadBlocks lists the data blocks that failed authentication.
	BadBlocks []int64
	// BadNodes counts interior nodes on the tree device that differ from
	// the ones recomputed from the authenticated leaves (harmless for
	// reads, which never use them, but a sign of a torn or altered tree).
	BadNodes int64
}

// Check reads and authenticates every data block and compares the stored
// interior nodes with the verified tree. progress, if not nil, is called
// with the blocks done and the total. It returns an error wrapping
// errs.ErrAuthentication if any block or node is bad (the report lists
// them), or the first I/O error.
//
// It streams through fixed buffers (a few MiB of data at a time); leaf
// groups go through the tree cache like reads.
func (v *Verity) Check(ctx context.Context, progress func(done, total uint64)) (CheckReport, error) {
	r := CheckReport{Blocks: v.n}
	G := v.groupLeaves()
	chunkBlocks := int64(max(1, streamData/v.bs))
	buf := make([]byte, min(chunkBlocks, v.n)*int64(v.bs))
	var stored []byte
	if v.cut > 0 {
		stored = make([]byte, G/2*NodeSize)
	}
	m := v.mac()
	defer v.macs.Put(m)
	for b := int64(0); b < v.n; {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		k := min(chunkBlocks, v.n-b)
		if v.cut > 0 && G <= chunkBlocks {
			k = min(chunkBlocks/G*G, v.n-b) // whole groups
		}
		if err := v.checkChunk(m, b, buf[:k*int64(v.bs)], stored, &r); err != nil {
			return r, err
		}
		b += k
		if progress != nil {
			progress(uint64(b), uint64(v.n))
		}
	}
	if err := v.checkUpper(m, &r); err != nil {
		return r, err
	}
	if len(r.BadBlocks) > 0 || r.BadNodes > 0 {
		return r, fmt.Errorf("bd: %d of %d blocks and %d tree nodes failed verification: %w", len(r.BadBlocks), r.Blocks, r.BadNodes, errs.ErrAuthentication)
	}
	return r, nil
}

// checkChunk checks the blocks starting at b that fill chunk, and the
// stored interior nodes below the kept levels of the groups that start
// among them.
func (v *Verity) checkChunk(m *nodeMAC, b int64, chunk, stored []byte, r *CheckReport) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := readUnder(v.data, chunk, b*int64(v.bs)); err != nil {
		return err
	}
	k := int64(len(chunk) / v.bs)
	var g *group
	var leaf [NodeSize]byte
	for i := int64(0); i < k; {
		blk := b + i
		want, err := v.leafOf(blk, &g)
		if err != nil {
			if !errorsIsAuth(err) {
				return err
			}
			// The group's leaves fail: so do all its blocks.
			run := min(k-i, (blk>>v.cut+1)<<v.cut-blk)
			for j := range run {
				r.BadBlocks = append(r.BadBlocks, blk+j)
			}
			i += run
			continue
		}
		if v.cut > 0 && blk&(v.groupLeaves()-1) == 0 {
			bad, err := v.checkGroupNodes(g, stored)
			if err != nil {
				return err
			}
			r.BadNodes += bad
		}
		m.leaf(blk, chunk[i*int64(v.bs):(i+1)*int64(v.bs)], leaf[:])
		if !hmac.Equal(leaf[:], want) {
			r.BadBlocks = append(r.BadBlocks, blk)
		}
		i++
	}
	return nil
}

// checkGroupNodes counts the stored nodes of levels 1..cut-1 of group g
// that differ from its verified ones.
func (v *Verity) checkGroupNodes(g *group, stored []byte) (int64, error) {
	var bad int64
	for l := 1; l < v.cut; l++ {
		want := g.nodes[v.groupOff(l)*NodeSize : v.groupOff(l+1)*NodeSize]
		got := stored[:len(want)]
		if err := readUnder(v.tree, got, v.levelOffs[l]+g.idx*int64(len(want))); err != nil {
			return bad, err
		}
		bad += countDiffNodes(got, want)
	}
	return bad, nil
}

// checkUpper counts the stored nodes that differ from the verified ones
// among those checkChunk does not see: the kept levels (above the leaves),
// and the interior nodes of the groups past the last data block, which
// are the all-padding nodes.
func (v *Verity) checkUpper(m *nodeMAC, r *CheckReport) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	buf := make([]byte, min(streamLeaves, len(v.upper[0])))
	compare := func(l int, first, count int64, want func(off int64, n int) []byte) error {
		for j := int64(0); j < count; {
			c := min(int64(len(buf)/NodeSize), count-j)
			got := buf[:c*NodeSize]
			if err := readUnder(v.tree, got, v.levelOffs[l]+(first+j)*NodeSize); err != nil {
				return err
			}
			r.BadNodes += countDiffNodes(got, want(j, len(got)))
			j += c
		}
		return nil
	}
	for l := max(v.cut, 1); l <= v.levels; l++ {
		lvl := v.upper[l-v.cut]
		if err := compare(l, 0, int64(len(lvl)/NodeSize), func(j int64, n int) []byte { return lvl[j*NodeSize : j*NodeSize+int64(n)] }); err != nil {
			return err
		}
	}
	if v.cut > 1 {
		z := zeroChain(m, v.cut)
		pad := make([]byte, len(buf))
		groups := int64(1) << (v.levels - v.cut)
		for l := 1; l < v.cut; l++ {
			for i := 0; i < len(pad); i += NodeSize {
				copy(pad[i:], z[l])
			}
			per := v.groupLeaves() >> l
			first := v.dataGroups() * per
			if err := compare(l, first, groups*per-first, func(_ int64, n int) []byte { return pad[:n] }); err != nil {
				return err
			}
		}
	}
	return nil
}

// countDiffNodes counts the nodes in which a and b differ.
func countDiffNodes(a, b []byte) int64 {
	var n int64
	for j := 0; j < len(a); j += NodeSize {
		if !bytes.Equal(a[j:j+NodeSize], b[j:j+NodeSize]) {
			n++
		}
	}
	return n
}
