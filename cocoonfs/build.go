package cocoonfs

import (
	"encoding/binary"
	"fmt"
	"hash"
	"io/fs"
	"slices"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// The builder lays out a new image's structures (for Mkfs and the online
// format of a creation info header) and a transaction's new metadata; it
// allocates, and keeps the contents of small metadata in memory as regions.

// newBuilder lays a whole image out in memory and encrypts it; nothing is
// written and dev is used only by b.write (it may be nil for a dry run).
// The caller wipes b.f.keys.
func newBuilder(dev blockdev.Device, l disk.Layout, salt []byte, size int64, key []byte, opts *MkfsOptions) (*builder, error) {
	if len(salt) > 255 {
		return nil, fmt.Errorf("cocoonfs: salt of %d bytes exceeds 255", len(salt))
	}
	for ino := range opts.Files {
		if ino < FirstUserInode {
			return nil, fmt.Errorf("cocoonfs: inode %d is reserved (user inodes start at %d): %w", ino, FirstUserInode, fs.ErrInvalid)
		}
	}
	algs, err := resolveAlgorithms(l)
	if err != nil {
		return nil, err
	}
	keys, err := newKeyring(key, salt, l, algs)
	if err != nil {
		return nil, err
	}
	b := &builder{f: &FS{dev: dev, layout: l, salt: salt, algs: algs, keys: keys, imageAllocBlocks: uint64(size) / l.AllocBlockSize()}, opts: opts}
	if err := b.build(); err != nil {
		keys.wipe()
		return nil, err
	}
	return b, nil
}

// builder assembles a whole image in memory, structure by structure.
type builder struct {
	f    *FS
	opts *MkfsOptions
	sh   disk.StaticHeader

	al     *allocator // allocations of the state being built
	writes []region   // everything to write, by physical allocation block
}

type region struct {
	start uint64 // allocation block
	data  []byte
}

func (b *builder) mark(e disk.Extent) { b.al.taken.add(e) }

// keepExtent returns the allocation blocks of the image that hold the backup
// creation info header and its aux metadata (mkfsInfoBuild.keep*), widened
// to whole allocation blocks; empty when there is none or it lies beyond the
// image.
func (b *builder) keepExtent() disk.Extent {
	in := b.opts.info
	if in == nil || in.keepEnd <= in.keepOff {
		return disk.Extent{}
	}
	ab := b.f.layout.AllocBlockSize()
	start, end := in.keepOff/ab, min((in.keepEnd+ab-1)/ab, b.f.imageAllocBlocks)
	if start >= end {
		return disk.Extent{}
	}
	return disk.Extent{Start: start, Len: end - start}
}

// alloc finds n free allocation blocks starting at a multiple of align,
// first fit from the cursor.
func (b *builder) alloc(n, align uint64) (disk.Extent, error) {
	return b.al.alloc(n, align)
}

func (b *builder) put(start uint64, data []byte) { b.writes = append(b.writes, region{start, data}) }

func (b *builder) build() error {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	bs := f.algs.cipher.BlockSize
	rootLen, preLen := f.algs.rootHMAC.Size, f.algs.preauthHMAC.Size
	b.al = &allocator{total: f.imageAllocBlocks}
	align := max(l.IOBlockSize(), l.AuthTreeDataBlockSize()) / ab

	b.sh = disk.StaticHeader{Layout: l, Salt: f.salt}
	mhOff := disk.MutableHeaderOffset(b.sh)
	mhLen := disk.MutableHeaderPaddedLen(l, rootLen, bs, preLen)
	f.headerAllocs = (mhOff + mhLen) / ab
	jhOff := disk.JournalLogHeadOffset(b.sh, rootLen, bs, preLen)
	jhLen, err := disk.JournalLogHeadLen(l, bs, preLen)
	if err != nil {
		return err
	}
	f.journalHead = disk.Extent{Start: jhOff / ab, Len: jhLen / ab}
	if f.journalHead.Start+f.journalHead.Len > f.imageAllocBlocks {
		return fmt.Errorf("cocoonfs: mkfs: a %d-byte image cannot hold the headers and journal log head: %w", f.imageAllocBlocks*ab, ErrNoSpace)
	}
	b.mark(disk.Extent{Start: 0, Len: f.headerAllocs})
	b.mark(f.journalHead)
	f.excluded = []disk.Extent{{Start: 0, Len: f.headerAllocs}, f.journalHead}
	// The backup creation info header (FormatMkfsInfo) is held as allocated
	// while the image is laid out, so that nothing lands on it, and freed
	// again before the bitmap is encoded (below).
	keep := b.keepExtent()
	if b.al.taken.overlaps(keep) {
		return fmt.Errorf("cocoonfs: mkfs: the backup creation info header at byte %d overlaps the image header or journal log head: %w", keep.Start*ab, ErrNoSpace)
	}
	b.mark(keep)

	// The entry leaf goes right after the mutable header, as the reference
	// places it; the other index nodes are allocated with the index below.
	leafAllocs := l.IndexLeafSize() / ab
	entryLeaf, err := b.alloc(leafAllocs, 1)
	if err != nil {
		return err
	}
	b.al.cursor = f.journalHead.Start + f.journalHead.Len

	// The tree: its size depends on the domain it covers, which excludes
	// the tree itself; iterate to the fixed point (it only shrinks).
	nodeAllocs := l.AuthTreeNodeSize() / ab
	t := &authTree{fs: f, nodeSize: l.AuthTreeNodeSize(), leafDigestLen: f.algs.dataHMAC.Size, nodeDigestLen: f.algs.nodeHash.Size, verified: map[uint64][]byte{}}
	t.leafEntries = pow2Floor(t.nodeSize / uint64(t.leafDigestLen))
	t.internalEntries = pow2Floor(t.nodeSize / uint64(t.nodeDigestLen))
	// need(T) is the storage a tree needs when it occupies T allocation
	// blocks itself; the smallest T with need(T) <= T is the tree's size.
	need := func(T uint64) uint64 {
		domain := f.imageAllocBlocks - min(T, f.imageAllocBlocks)
		dataBlocks := (domain + 1<<l.AuthTreeDataBlockLog2 - 1) >> l.AuthTreeDataBlockLog2
		nodes, _ := t.nodesFor(max((dataBlocks+t.leafEntries-1)/t.leafEntries, 1))
		return (nodes*nodeAllocs + align - 1) / align * align
	}
	lo, hi := uint64(0), need(0)/align // in units of align
	for lo < hi {
		mid := (lo + hi) / 2
		if need(mid*align) <= mid*align {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	treeAllocs := lo * align
	treeExt, err := b.alloc(treeAllocs, align)
	if err != nil {
		return err
	}
	f.treeExtents = []disk.Extent{treeExt}
	if f.tree, err = newAuthTree(f, f.treeExtents, nil); err != nil {
		return err
	}

	if err := b.buildAux(align); err != nil {
		return err
	}

	// The allocation bitmap file: whole bitmap blocks covering whole data
	// blocks, so its data blocks are fully allocated.
	bmBlock := l.BitmapBlockSize()
	wordsPerBlock := (bmBlock - uint64(bs)) / 8
	if wordsPerBlock == 0 {
		return fmt.Errorf("cocoonfs: mkfs: a %d-byte allocation bitmap block holds no bitmap word: %w", bmBlock, ErrUnsupported)
	}
	words := (f.imageAllocBlocks + 63) / 64
	bmAllocs := (words + wordsPerBlock - 1) / wordsPerBlock * (bmBlock / ab)
	unit := max(bmBlock/ab, uint64(1)<<l.AuthTreeDataBlockLog2)
	bmAllocs = (bmAllocs + unit - 1) / unit * unit
	bmExt, err := b.alloc(bmAllocs, uint64(1)<<l.AuthTreeDataBlockLog2)
	if err != nil {
		return err
	}
	f.bitmapExtents = []disk.Extent{bmExt}

	// Extents lists of inodes 1 and 2 when they do not fit a direct pointer.
	special := map[uint64]disk.ExtentPtr{}
	for _, s := range []struct {
		ino uint64
		ext disk.Extent
	}{{inoAuthTree, treeExt}, {inoAllocBitmap, bmExt}} {
		if s.ext.Len <= disk.MaxExtentAllocBlocks {
			special[s.ino], _ = disk.NewExtentPtr(s.ext.Start, s.ext.Len, false)
			continue
		}
		aad := binary.LittleEndian.AppendUint64(nil, s.ino)
		aad = append(aad, 0, 2)
		ch := f.newChain(s.ino, subdomainExtentsList, 0, nil)
		ino := s.ino
		ch.mac = func() hash.Hash { return f.keys.hmac(f.algs.preauthHMAC, ino, subdomainExtentsList, purposePreauth) }
		ch.aad = aad
		p, err := b.writeChain(ch, disk.AppendExtentsList(nil, []disk.Extent{s.ext}))
		if err != nil {
			return err
		}
		special[s.ino] = p
	}

	// User files.
	type fileEntry struct {
		ino uint64
		ptr disk.ExtentPtr
	}
	var files []fileEntry
	inos := make([]uint64, 0, len(b.opts.Files))
	for ino := range b.opts.Files {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	for _, ino := range inos {
		p, err := b.writeFile(ino, b.opts.Files[ino])
		if err != nil {
			return err
		}
		files = append(files, fileEntry{ino, p})
	}

	// The inode index.
	entries := []disk.LeafEntry{{Inode: inoAuthTree, Ptr: special[inoAuthTree]}, {Inode: inoAllocBitmap, Ptr: special[inoAllocBitmap]}, {Inode: inoIndexRoot}}
	for _, fe := range files {
		entries = append(entries, disk.LeafEntry{Inode: fe.ino, Ptr: fe.ptr})
	}
	if err := b.buildIndex(entries, entryLeaf); err != nil {
		return err
	}

	// The bitmap itself is encrypted as it is written (mkfswrite.go). The
	// backup creation info header's blocks are free in it: they are never
	// part of the image.
	b.al.release(keep)
	f.bitmap = &newBitmap{alloc: &b.al.taken, total: f.imageAllocBlocks}
	return nil
}

// auxContents returns the aux metadata the new image starts with: the
// entries and reserve of a creation info header, or Mkfs's empty metadata
// with its reserve.
func (b *builder) auxContents() ([]disk.AuxEntry, *uint64) {
	if in := b.opts.info; in != nil {
		return in.entries, in.reserve
	}
	if b.opts.NoAuxReserve {
		return nil, nil
	}
	reserve := uint64(1024)
	if b.opts.AuxReserve > 0 {
		reserve = uint64(b.opts.AuxReserve)
	}
	return nil, &reserve
}

// auxExtentHeaderLen is the bytes before an aux metadata extent's payload:
// the next and next-but-one pointers, the state byte of a group head, and
// the integrity protection section.
func auxExtentHeaderLen(l disk.Layout, head bool) uint64 {
	n := uint64(16 + disk.IntegrityLen(l))
	if head {
		n++
	}
	return n
}

// buildAux lays out the aux metadata as the reference's mkfs does: update
// group 0, active, holding the encoded entries, and, when an extra reserve
// capacity is set, update group 1, inactive and zero-filled (the reference
// writes it so; offline updates copy group 0 into it before activating it).
// Each group has room for the encoded entries plus the reserve, in as many
// extents (at most 64 allocation blocks each, aligned to the larger of the
// IO and authentication tree data block) as needed. Without entries and
// without a (non-zero) reserve there is no aux metadata at all.
func (b *builder) buildAux(align uint64) error {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	f.header.AuxHeads = [2]disk.ExtentPtr{disk.NilExtentPtr, disk.NilExtentPtr}
	entries, reserve := b.auxContents()
	if len(entries) == 0 && (reserve == nil || *reserve == 0) {
		return nil
	}
	payload, err := disk.AppendAuxMetadata(nil, entries, reserve)
	if err != nil {
		return fmt.Errorf("cocoonfs: mkfs: %w", err)
	}
	capacity := uint64(len(payload))
	groups := 1
	if reserve != nil {
		groups = 2
		if *reserve > f.imageAllocBlocks*ab {
			return fmt.Errorf("cocoonfs: mkfs: aux metadata reserve of %d bytes exceeds the image: %w", *reserve, ErrNoSpace)
		}
		capacity += *reserve
	}
	maxExt := disk.MaxExtentAllocBlocks / align * align
	if maxExt == 0 || maxExt*ab <= auxExtentHeaderLen(l, true) {
		return fmt.Errorf("cocoonfs: mkfs: aux metadata extents cannot be aligned to %d allocation blocks: %w", align, ErrUnsupported)
	}
	var ext []disk.Extent
	var heads []int
	for g := 0; g < groups; g++ {
		heads = append(heads, len(ext))
		left := capacity
		for first := true; first || left > 0; first = false {
			hdr := auxExtentHeaderLen(l, first)
			n := min((hdr+left+align*ab-1)/(align*ab)*align, maxExt)
			e, err := b.alloc(n, align)
			if err != nil {
				return fmt.Errorf("aux metadata: %w", err)
			}
			ext = append(ext, e)
			left -= min(left, n*ab-hdr)
		}
	}
	ptr := make([]disk.ExtentPtr, len(ext))
	for i, e := range ext {
		if ptr[i], err = disk.NewExtentPtr(e.Start, e.Len, false); err != nil {
			return err
		}
	}
	rest := payload // what group 0 still has to store
	for i, e := range ext {
		head := slices.Contains(heads, i)
		buf := make([]byte, e.Len*ab)
		ptr[(i+1)%len(ext)].Append(buf[:0])
		ptr[(i+2)%len(ext)].Append(buf[8:8])
		protOff := 16
		if head {
			protOff = 17
			if i == heads[0] {
				buf[16] = 1 // AUX_FS_METADATA_UPDATE_GROUP_STATE_ACTIVE
			}
		}
		if len(heads) < 2 || i < heads[1] {
			rest = rest[copy(buf[auxExtentHeaderLen(l, head):], rest):]
		}
		if err := disk.ApplyIntegrity(buf, 0, protOff, l); err != nil {
			return err
		}
		b.put(e.Start, buf)
	}
	f.header.AuxHeads[0] = ptr[heads[0]]
	if len(heads) > 1 {
		f.header.AuxHeads[1] = ptr[heads[1]]
	}
	f.auxExtents = ext
	f.excluded = append(f.excluded, ext...)
	return nil
}

// writeChain stores payload in chained extents, as few and as small as will
// hold it (each at most the 64 allocation blocks an extent pointer can
// describe), and returns the indirect extent pointer to the first.
func (b *builder) writeChain(ch *chain, payload []byte) (disk.ExtentPtr, error) {
	ab := b.f.layout.AllocBlockSize()
	var exts []disk.Extent
	left := len(payload)
	for first := true; ; first = false {
		if len(exts) >= 1<<16 {
			return 0, fmt.Errorf("cocoonfs: an extents list of %d bytes needs too many chained extents", len(payload))
		}
		k := uint64(0) // the smallest extent that holds the rest, if any
		for c := uint64(1); c <= disk.MaxExtentAllocBlocks; c++ {
			if ch.capacity(int(c*ab), first) >= left+1 {
				k = c
				break
			}
		}
		last := k != 0
		if !last {
			k = disk.MaxExtentAllocBlocks
		}
		e, err := b.alloc(k, 1)
		if err != nil {
			return 0, err
		}
		exts = append(exts, e)
		if last {
			break
		}
		left -= ch.capacity(int(k*ab), first)
	}
	bufs := make([][]byte, len(exts))
	for i, e := range exts {
		bufs[i] = make([]byte, e.Len*ab)
	}
	if err := ch.encode(payload, exts, bufs); err != nil {
		return 0, err
	}
	for i, e := range exts {
		b.put(e.Start, bufs[i])
	}
	return disk.NewExtentPtr(exts[0].Start, exts[0].Len, true)
}

// writeFile encrypts a file (of Mkfs's Files) into one contiguous extent.
func (b *builder) writeFile(ino uint64, data []byte) (disk.ExtentPtr, error) {
	f := b.f
	ct, err := f.encryptFile(ino, data)
	if err != nil {
		return 0, err
	}
	e, err := b.alloc(uint64(len(ct))/f.layout.AllocBlockSize(), 1)
	if err != nil {
		return 0, fmt.Errorf("inode %d (%d bytes): %w", ino, len(data), err)
	}
	b.put(e.Start, ct)
	return b.extentsPtr(ino, []disk.Extent{e})
}

// extentsPtr is an inode's extent pointer: direct for one short extent,
// otherwise to an extents list in chained extents.
func (b *builder) extentsPtr(ino uint64, ext []disk.Extent) (disk.ExtentPtr, error) {
	if len(ext) == 1 && ext[0].Len <= disk.MaxExtentAllocBlocks {
		return disk.NewExtentPtr(ext[0].Start, ext[0].Len, false)
	}
	return b.writeChain(b.f.newChain(ino, subdomainExtentsList, 0, nil), disk.AppendExtentsList(nil, ext))
}

// split divides n items into the fewest groups of at most per items, as
// evenly as possible (so every group stays above the minimum fill).
func split(n, per int) []int {
	k := (n + per - 1) / per
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
		if i < n%k {
			out[i]++
		}
	}
	return out
}

// buildIndex lays out the inode index B+-tree bottom up. The leftmost leaf
// is the entry leaf (already allocated); inode 3's entry points at the root.
func (b *builder) buildIndex(entries []disk.LeafEntry, entryLeaf disk.Extent) error {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	bs := f.algs.cipher.BlockSize
	leafSize, intSize := l.IndexLeafSize(), l.IndexInternalSize()
	leafB := int((leafSize - uint64(bs)) / uint64(bs) * uint64(bs))
	intB := int((intSize - uint64(bs)) / uint64(bs) * uint64(bs))

	type node struct {
		ext   disk.Extent
		first uint64 // smallest inode below
		leaf  *disk.LeafNode
		inner *disk.InternalNode
	}
	var level []*node
	pos := 0
	for i, cnt := range split(len(entries), disk.MaxLeafEntries(leafB)) {
		n := &node{leaf: &disk.LeafNode{Entries: entries[pos : pos+cnt], Next: disk.NilBlockPtr}, first: entries[pos].Inode}
		pos += cnt
		if i == 0 {
			n.ext = entryLeaf
		} else {
			var err error
			if n.ext, err = b.alloc(leafSize/ab, 1); err != nil {
				return err
			}
		}
		level = append(level, n)
	}
	for i := 0; i+1 < len(level); i++ {
		next, err := disk.NewBlockPtr(level[i+1].ext.Start)
		if err != nil {
			return err
		}
		level[i].leaf.Next = next
	}
	leaves := level
	var inner []*node
	for depth := uint32(2); len(level) > 1; depth++ {
		var up []*node
		pos := 0
		for _, cnt := range split(len(level), disk.MaxInternalKeys(intB)+1) {
			in := &disk.InternalNode{Level: depth}
			for j, c := range level[pos : pos+cnt] {
				p, err := disk.NewBlockPtr(c.ext.Start)
				if err != nil {
					return err
				}
				in.Children = append(in.Children, p)
				if j > 0 {
					in.Keys = append(in.Keys, c.first)
				}
			}
			ext, err := b.alloc(intSize/ab, 1)
			if err != nil {
				return err
			}
			n := &node{ext: ext, first: level[pos].first, inner: in}
			up = append(up, n)
			inner = append(inner, n)
			pos += cnt
		}
		level = up
	}
	root := level[0]
	rootPtr, err := disk.NewExtentPtr(root.ext.Start, root.ext.Len, false)
	if err != nil {
		return err
	}
	for i := range leaves[0].leaf.Entries {
		if leaves[0].leaf.Entries[i].Inode == inoIndexRoot {
			leaves[0].leaf.Entries[i].Ptr = rootPtr
		}
	}
	for _, n := range append(leaves, inner...) {
		blk, err := f.encryptIndexNode(n.leaf, n.inner)
		if err != nil {
			return err
		}
		b.put(n.ext.Start, blk)
	}
	f.header.EntryLeaf, err = disk.NewBlockPtr(entryLeaf.Start)
	return err
}
