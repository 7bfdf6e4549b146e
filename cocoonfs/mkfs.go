package cocoonfs

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math/bits"
	"slices"
	"strings"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
	"github.com/sealfs/sealfs/tcg"
)

// MkfsOptions choose a new image's algorithms and layout. The zero value
// gives the reference tool's defaults: SHA-256 and AES-128, 128-byte
// allocation blocks, 512-byte IO blocks, 1 KiB tree nodes, a fresh random
// salt, the device's whole size and 1 KiB of aux metadata reserve.
type MkfsOptions struct {
	// Size of the image in bytes; 0 means the device's size. Must be a
	// multiple of the IO block. A resizable device grows to fit.
	Size int64
	// Hash family: "sha2" (default), "sha3" or "sm3".
	Hash string
	// Cipher: "aes" (default), "camellia" or "sm4".
	Cipher string
	// Strength in bits: 128 (default), 192 or 256; SM3 and SM4 exist only
	// at 128.
	Strength int
	// Salt for the root key derivation; nil means 32 random bytes.
	Salt []byte

	// Layout, each a power of two in bytes; zero means the default.
	AllocationBlock   int // 128
	IOBlock           int // max(512, AllocationBlock)
	AuthTreeDataBlock int // IOBlock
	AuthTreeNode      int // max(1 KiB, IOBlock)
	IndexNode         int // AllocationBlock
	BitmapBlock       int // max(512, AuthTreeDataBlock)

	// AuxReserve is the aux metadata extra reserve capacity in bytes
	// (default 1 KiB); it sizes the second update group that offline aux
	// metadata updates need. NoAuxReserve allocates no second group.
	AuxReserve   int
	NoAuxReserve bool

	// NoRandomizeUnallocated leaves free space zeroed instead of filling it
	// with random bytes (which hides how much of the image is in use).
	NoRandomizeUnallocated bool

	// Force writes to a device whose block size exceeds the IO block (see
	// Options.Force for the risk).
	Force bool

	// Files pre-populates the image: inode number → contents. Inode
	// numbers must be at least FirstUserInode.
	Files map[uint64][]byte

	// info is set only by FormatMkfsInfo: the layout, aux metadata and
	// reserved backup range a creation info header dictates.
	info *mkfsInfoBuild
}

// mkfsInfoBuild is what a filesystem creation info header dictates to the
// builder (see FormatMkfsInfo and WriteMkfsInfo).
type mkfsInfoBuild struct {
	layout  disk.Layout
	entries []disk.AuxEntry // aux metadata entries, sorted by UUID
	reserve *uint64         // aux metadata extra reserve; nil: none (no update group 1)
	// [keepOff, keepEnd) is a byte range of the device, the backup creation
	// info header and its aux metadata, that the new image must neither
	// allocate nor write until its static header is durable: it stays free
	// in the allocation bitmap and is skipped when free space is filled.
	keepOff, keepEnd uint64
}

// SelectAlgorithms returns the layout's algorithm ids for a hash family,
// cipher and strength, exactly as the reference mkfs (cocoonfs-cli) picks
// them: the authentication tree's node hash and data block HMAC grow with the
// strength; the root HMAC, the pre-authentication HMAC and the KDF stay at
// the family's 256-bit hash. The table is in the package documentation.
func SelectAlgorithms(hash, cipherName string, strength int) (node, data, root, preauth, kdf, cipher uint16, keyBits uint16, err error) {
	hash, cipherName = strings.ToLower(hash), strings.ToLower(cipherName)
	if hash == "" {
		hash = "sha2"
	}
	if cipherName == "" {
		cipherName = "aes"
	}
	if strength == 0 {
		strength = 128
	}
	fam := map[string]map[int]tcg.AlgID{
		"sha2": {256: tcg.AlgSHA256, 384: tcg.AlgSHA384, 512: tcg.AlgSHA512},
		"sha3": {256: tcg.AlgSHA3_256, 384: tcg.AlgSHA3_384, 512: tcg.AlgSHA3_512},
		"sm3":  {256: tcg.AlgSM3_256},
	}[hash]
	if fam == nil {
		return 0, 0, 0, 0, 0, 0, 0, fmt.Errorf("cocoonfs: hash family %q: want sha2, sha3 or sm3: %w", hash, ErrUnsupportedAlgorithm)
	}
	c := map[string]tcg.AlgID{"aes": tcg.AlgAES, "camellia": tcg.AlgCamellia, "sm4": tcg.AlgSM4}[cipherName]
	if c == 0 {
		return 0, 0, 0, 0, 0, 0, 0, fmt.Errorf("cocoonfs: cipher %q: want aes, camellia or sm4: %w", cipherName, ErrUnsupportedAlgorithm)
	}
	treeBits := map[int]int{128: 256, 192: 384, 256: 512}[strength]
	tree, ok := fam[treeBits]
	if !ok {
		return 0, 0, 0, 0, 0, 0, 0, fmt.Errorf("cocoonfs: %s at %d-bit strength: %w", hash, strength, ErrUnsupportedAlgorithm)
	}
	if _, err := tcg.LookupBlockCipher(c, strength); err != nil {
		return 0, 0, 0, 0, 0, 0, 0, fmt.Errorf("cocoonfs: %s at %d-bit strength: %w", cipherName, strength, err)
	}
	base := fam[256]
	return uint16(tree), uint16(tree), uint16(base), uint16(base), uint16(base), uint16(c), uint16(strength), nil
}

func log2Of(name string, v, def int) (uint8, error) {
	if v == 0 {
		v = def
	}
	if v <= 0 || v&(v-1) != 0 {
		return 0, fmt.Errorf("cocoonfs: %s of %d bytes is not a power of two", name, v)
	}
	return uint8(bits.TrailingZeros(uint(v))), nil
}

// mkfsLayout turns options into a layout.
func mkfsLayout(o *MkfsOptions) (disk.Layout, error) {
	if o.info != nil {
		if err := o.info.layout.Validate(); err != nil {
			return o.info.layout, fmt.Errorf("cocoonfs: %w", err)
		}
		return o.info.layout, nil
	}
	var l disk.Layout
	var err error
	node, data, root, pre, kdf, c, kb, err := SelectAlgorithms(o.Hash, o.Cipher, o.Strength)
	if err != nil {
		return l, err
	}
	l.AuthTreeNodeHash, l.AuthTreeDataHMACHash, l.AuthTreeRootHMACHash, l.PreauthHMACHash, l.KDFHash, l.Cipher, l.CipherKeyBits = node, data, root, pre, kdf, c, kb
	ab, err := log2Of("allocation block", o.AllocationBlock, 128)
	if err != nil || ab < 7 {
		return l, errors.Join(err, fmt.Errorf("cocoonfs: allocation block must be at least 128 bytes"))
	}
	abBytes := 1 << ab
	io, err := log2Of("IO block", o.IOBlock, max(512, abBytes))
	if err != nil {
		return l, err
	}
	ioBytes := 1 << io
	db, err := log2Of("auth tree data block", o.AuthTreeDataBlock, ioBytes)
	if err != nil {
		return l, err
	}
	tn, err := log2Of("auth tree node", o.AuthTreeNode, max(1024, ioBytes))
	if err != nil {
		return l, err
	}
	in, err := log2Of("index node", o.IndexNode, abBytes)
	if err != nil {
		return l, err
	}
	bb, err := log2Of("allocation bitmap block", o.BitmapBlock, max(512, 1<<db))
	if err != nil {
		return l, err
	}
	for _, c := range []struct {
		name string
		v    uint8
		min  uint8
	}{{"IO block", io, ab}, {"auth tree data block", db, ab}, {"auth tree node", tn, io}, {"index node", in, ab}, {"allocation bitmap block", bb, ab}} {
		if c.v < c.min {
			return l, fmt.Errorf("cocoonfs: %s of %d bytes is smaller than %d bytes", c.name, 1<<c.v, 1<<c.min)
		}
	}
	l.AllocBlockLog2128 = ab - 7
	l.IOBlockLog2 = io - ab
	l.AuthTreeDataBlockLog2 = db - ab
	l.AuthTreeNodeLog2 = tn - io
	l.IndexLeafLog2, l.IndexInternalLog2 = in-ab, in-ab
	l.BitmapBlockLog2 = bb - ab
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("cocoonfs: %w", err)
	}
	return l, nil
}

// Mkfs creates a new CocoonFS image on dev, optionally holding files, and
// returns it opened. The image is laid out and validated in full before
// anything is written (a refused Mkfs leaves dev untouched), then written
// before its static header, which goes last by the format's fail-safe
// protocol: an interrupted Mkfs leaves no valid header, never a half-made
// filesystem that opens.
func Mkfs(dev blockdev.Device, key []byte, opts *MkfsOptions) (*FS, error) {
	if opts == nil {
		opts = &MkfsOptions{}
	}
	if len(key) == 0 {
		return nil, errors.New("cocoonfs: empty key")
	}
	if blockdev.IsReadOnly(dev) {
		return nil, fmt.Errorf("cocoonfs: mkfs: %w", blockdev.ErrReadOnly)
	}
	l, err := mkfsLayout(opts)
	if err != nil {
		return nil, err
	}
	if err := checkDeviceBlockSize(dev, l, opts.Force); err != nil {
		return nil, err
	}
	salt := opts.Salt
	if salt == nil {
		salt = randomBytes(32)
	}
	size := opts.Size
	if size == 0 {
		size = dev.Size()
	}
	if err := checkMkfsSize(dev, l, size); err != nil {
		return nil, err
	}
	b, err := newBuilder(dev, l, salt, size, key, opts)
	if err != nil {
		return nil, err
	}
	defer b.f.keys.wipe()
	if err := growDevice(dev, size); err != nil {
		return nil, err
	}
	if err := b.write(); err != nil {
		return nil, err
	}
	return Open(dev, key, &Options{Force: true})
}

// checkMkfsSize checks an image size against the layout and the device
// (which must hold it or be able to grow to it).
func checkMkfsSize(dev blockdev.Device, l disk.Layout, size int64) error {
	if size <= 0 || uint64(size)%l.IOBlockSize() != 0 {
		return fmt.Errorf("cocoonfs: image size %d is not a positive multiple of the %d-byte IO block", size, l.IOBlockSize())
	}
	if size > dev.Size() {
		if _, ok := dev.(blockdev.Resizer); !ok {
			return fmt.Errorf("cocoonfs: image size %d exceeds the %d-byte device", size, dev.Size())
		}
	}
	return nil
}

// growDevice grows a resizable device to hold size bytes; it never shrinks.
func growDevice(dev blockdev.Device, size int64) error {
	if size <= dev.Size() {
		return nil
	}
	r, ok := dev.(blockdev.Resizer)
	if !ok {
		return fmt.Errorf("cocoonfs: image size %d exceeds the %d-byte device", size, dev.Size())
	}
	if err := r.Resize(size); err != nil {
		return fmt.Errorf("cocoonfs: grow device to %d bytes: %w", size, err)
	}
	return nil
}

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

	// The bitmap itself, encrypted block by block. The backup creation info
	// header's blocks are free in it: they are never part of the image.
	b.al.release(keep)
	f.bitmap = &newBitmap{alloc: &b.al.taken, total: f.imageAllocBlocks}
	c := f.keys.blockCipher(inoAllocBitmap, subdomainData)
	bm := make([]byte, 0, bmAllocs*ab)
	for w := uint64(0); uint64(len(bm)) < bmAllocs*ab; w += wordsPerBlock {
		pt := make([]byte, 0, wordsPerBlock*8)
		for i := w; i < w+wordsPerBlock; i++ {
			var word uint64
			if i < words {
				word, _ = f.bitmap.word(i)
			}
			pt = binary.LittleEndian.AppendUint64(pt, word)
		}
		blk, err := encryptBlock(c, pt, int(bmBlock))
		if err != nil {
			return err
		}
		bm = append(bm, blk...)
	}
	b.put(bmExt.Start, bm)
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

// encryptFile encrypts a file's contents into the encrypted extents format,
// sized to whole allocation blocks.
func (f *FS) encryptFile(ino uint64, data []byte) ([]byte, error) {
	ab := f.layout.AllocBlockSize()
	c := f.keys.blockCipher(ino, subdomainData)
	n := (uint64(extentsLen(len(data), c.BlockSize())) + ab - 1) / ab
	return encryptExtents(c, data, int(n*ab))
}

// extentsPtr is an inode's extent pointer: direct for one short extent,
// otherwise to an extents list in chained extents.
func (b *builder) extentsPtr(ino uint64, ext []disk.Extent) (disk.ExtentPtr, error) {
	if len(ext) == 1 && ext[0].Len <= disk.MaxExtentAllocBlocks {
		return disk.NewExtentPtr(ext[0].Start, ext[0].Len, false)
	}
	return b.writeChain(b.f.newChain(ino, subdomainExtentsList, 0, nil), disk.AppendExtentsList(nil, ext))
}

// encryptIndexNode encodes one inode index node (a leaf or an internal
// node) and encrypts it as an encrypted block of the node's size.
func (f *FS) encryptIndexNode(leaf *disk.LeafNode, inner *disk.InternalNode) ([]byte, error) {
	l := f.layout
	c := f.keys.blockCipher(inoIndexRoot, subdomainData)
	bs := uint64(c.BlockSize())
	var pt []byte
	var err error
	size := l.IndexInternalSize()
	if leaf != nil {
		size = l.IndexLeafSize()
		pt, err = disk.EncodeLeafNode(*leaf, int((size-bs)/bs*bs))
	} else {
		pt, err = disk.EncodeInternalNode(*inner, int((size-bs)/bs*bs))
	}
	if err != nil {
		return nil, err
	}
	return encryptBlock(c, pt, int(size))
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

// write finishes the metadata that depends on everything else (the update
// counter, the tree, the mutable header, the entry leaf's pre-authentication
// HMAC) and writes the image: first invalidate any old header, then
// everything else, a barrier, and the static header last.
func (b *builder) write() error {
	f := b.f
	l := f.layout
	ab := l.AllocBlockSize()
	slices.SortFunc(b.writes, func(x, y region) int { return cmpU64(x.start, y.start) })

	// Update counter: a random start, encrypted with an all-zero IV.
	c := f.keys.blockCipher(inoUpdateCounter, subdomainData)
	bs := c.BlockSize()
	ctr := make([]byte, disk.EncryptedCounterLen(bs))
	copy(ctr, randomBytes(16))
	f.header.EncryptedCounter = make([]byte, len(ctr))
	cipher.NewCBCEncrypter(c, make([]byte, bs)).CryptBlocks(f.header.EncryptedCounter, ctr)
	f.header.ImageSizeAllocBlocks = f.imageAllocBlocks

	// The tree over everything written.
	per := uint64(1) << l.AuthTreeDataBlockLog2
	block := make([]byte, per*ab)
	tree := f.tree.build(func(d uint64) []byte {
		a := f.physicalDataBlock(d)
		cnt := min(per, f.imageAllocBlocks-a)
		clear(block)
		for i := uint64(0); i < cnt; i++ {
			if src := b.contentAt(a + i); src != nil {
				copy(block[i*ab:], src)
			}
		}
		word, _ := f.digestBits(a, cnt) // the new bitmap is in memory: no error
		return f.tree.dataDigest(block[:cnt*ab], word, d)
	})
	f.header.RootHMAC = f.tree.rootHMAC(tree[:f.tree.nodeSize], f.header.EncryptedCounter, f.imageContext())

	// The entry leaf's pre-authentication HMAC over its ciphertext.
	leaf := b.contentRange(f.header.EntryLeaf.Start(), l.IndexLeafSize()/ab)
	m := f.keys.hmac(f.algs.preauthHMAC, inoIndexRoot, subdomainData, purposePreauth)
	m.Write(leaf)
	m.Write(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, l.Cipher), l.CipherKeyBits))
	m.Write([]byte{0, authSubjectIndexNode})
	f.header.EntryLeafPreauthHMAC = m.Sum(nil)
	b.put(f.treeExtents[0].Start, tree)
	mh, err := disk.EncodeMutableHeader(f.header, l)
	if err != nil {
		return err
	}
	sh, err := disk.EncodeStaticHeader(b.sh)
	if err != nil {
		return err
	}

	dev := f.dev
	wr := func(off uint64, p []byte) error {
		if _, err := dev.WriteAt(p, int64(off)); err != nil {
			return fmt.Errorf("cocoonfs: mkfs: write %d bytes at %d: %w", len(p), off, err)
		}
		return nil
	}
	sync := func() error {
		if err := dev.Sync(); err != nil {
			return fmt.Errorf("cocoonfs: mkfs: sync: %w", err)
		}
		return nil
	}
	// 1. Invalidate whatever header was there.
	if err := wr(0, make([]byte, len(sh))); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	// 2. Free space (random unless asked otherwise), then every structure.
	// The backup creation info header of FormatMkfsInfo is not touched.
	const chunk = 1 << 20
	keep := b.keepExtent()
	skip := func(a uint64) bool { return b.al.taken.contains(a) || a >= keep.Start && a < keep.Start+keep.Len }
	for a := uint64(0); a < f.imageAllocBlocks; {
		if skip(a) {
			a++
			continue
		}
		end := a
		for end < f.imageAllocBlocks && !skip(end) && (end-a)*ab < chunk {
			end++
		}
		fill := make([]byte, (end-a)*ab)
		if !b.opts.NoRandomizeUnallocated {
			fill = randomBytes(len(fill))
		}
		if err := wr(a*ab, fill); err != nil {
			return err
		}
		a = end
	}
	if err := wr(f.journalHead.Start*ab, make([]byte, f.journalHead.Len*ab)); err != nil {
		return err
	}
	for _, r := range b.writes {
		if err := wr(r.start*ab, r.data); err != nil {
			return err
		}
	}
	if err := wr(disk.MutableHeaderOffset(b.sh), mh); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	// 3. The static header: its tail, a barrier, then its first device block.
	head := min(len(sh), max(dev.BlockSize(), 128))
	if head < len(sh) {
		if err := wr(uint64(head), sh[head:]); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
	}
	if err := wr(0, sh[:head]); err != nil {
		return err
	}
	return sync()
}

// contentAt returns the bytes written to allocation block a, or nil.
func (b *builder) contentAt(a uint64) []byte {
	ab := b.f.layout.AllocBlockSize()
	i, _ := slices.BinarySearchFunc(b.writes, a, func(r region, a uint64) int {
		if r.start+uint64(len(r.data))/ab <= a {
			return -1
		}
		if r.start > a {
			return 1
		}
		return 0
	})
	if i == len(b.writes) {
		return nil
	}
	r := b.writes[i]
	if a < r.start || a >= r.start+uint64(len(r.data))/ab {
		return nil
	}
	off := (a - r.start) * ab
	return r.data[off : off+ab]
}

func (b *builder) contentRange(a, n uint64) []byte {
	var out []byte
	for i := uint64(0); i < n; i++ {
		out = append(out, b.contentAt(a+i)...)
	}
	return out
}

func name(id uint16) string { return tcg.AlgID(id).String() }
