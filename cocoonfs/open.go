package cocoonfs

import (
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"
	"sync"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Options tune Open. The zero value (or nil) is the safe default.
type Options struct {
	// Force opens a writable device whose block size is larger than the
	// image's IO block. CocoonFS assumes a write to one IO block never
	// disturbs another; on a device that writes (and tears) in larger units,
	// a power cut during a journal update could destroy the journal's commit
	// record together with a neighbouring block. Read-only devices are never
	// refused: nothing is written through them. The reference tool's -f.
	Force bool

	// ReadWrite allows transactions (Begin) and lets Open replay a pending
	// journal. The device must be writable.
	ReadWrite bool

	// DisguiseStagingCopies encrypts each transaction's journal staging
	// copies with one-time keys, so that at rest they cannot be matched to
	// the blocks they update (which would reveal allocated blocks). It costs
	// an extra encryption of every in-place update.
	DisguiseStagingCopies bool

	// Trim discards, after each commit, the IO blocks the commit freed, its
	// staging copies and its journal log tail, on devices that support it
	// (blockdev.Trimmer). A trimmed block is usually recognizable as such,
	// so trimming reveals which blocks are free: it trades the
	// confidentiality of allocations for thin provisioning.
	Trim bool

	// ExpectRoot, if set, refuses an image whose authentication root digest
	// differs: the caller's trusted record of the last state it saw.
	ExpectRoot []byte
	// MinCounter, if set, refuses an image whose update counter comes
	// before it (modulo 2^128, as the format defines): a rolled-back image.
	MinCounter *big.Int
}

// ErrRollback: the image's root digest or update counter is not what the
// caller's trusted record requires (Options.ExpectRoot, Options.MinCounter).
var ErrRollback = errors.New("cocoonfs: image does not match the expected state (rollback?)")

// FS is an open CocoonFS image. It is safe for concurrent use.
type FS struct {
	// mu guards the committed state below: readers hold it shared, a
	// commit exclusively while it changes the medium and reloads.
	mu     sync.RWMutex
	writer sync.Mutex // one transaction at a time
	rw     bool
	// gen counts commits, so that open Files notice the state changed.
	gen uint64
	// replayed: Open found a committed but unapplied transaction and
	// applied it.
	replayed bool

	// allocMu guards what uncommitted writers hold: the running
	// transaction's allocations and the blocks staged writers reserved.
	allocMu     sync.Mutex
	running     *Tx
	staged      extentSet
	stageCursor uint64

	// Where the next transaction's file data and journal scratch searches
	// start (next fit across transactions: what lies before was in use).
	txCursor, scratchCursor uint64

	// spaceMu guards the space figures, counted once and then kept up to
	// date by each commit's allocations, releases and files.
	spaceMu sync.Mutex
	space   *Space
	// failed is set when a commit could not finish applying or reloading:
	// the in-memory state no longer matches the medium, so every further
	// call fails until the image is reopened (which replays any journal).
	failed error
	// disguiseStaging: see Options.DisguiseStagingCopies.
	disguiseStaging bool
	trim            bool

	dev    blockdev.Device
	layout disk.Layout
	salt   []byte
	algs   *algorithms
	keys   *keyring

	header           disk.MutableHeader
	imageAllocBlocks uint64
	excluded         []disk.Extent // header, journal log head, aux metadata: never digested
	auxExtents       []disk.Extent
	journalHead      disk.Extent
	headerAllocs     uint64

	treeExtents, bitmapExtents []disk.Extent
	bootChains                 []disk.Extent // extents lists of inodes 1 and 2
	tree                       *authTree
	bitmap                     bitmapView // committed bitmap, loaded lazily
	index                      *inodeIndex
	counter                    *big.Int
}

// Open authenticates the CocoonFS image on dev with key (the raw key
// material, as given to the reference tool's -k) and returns a read-only
// view of it. Open neither writes to dev nor keeps key; the caller may wipe
// it afterwards.
//
// Errors: ErrNotCocoonFS, ErrNotFormatted (creation info header only),
// ErrPendingJournal, ErrIOBlockTooSmall, ErrUnsupportedAlgorithm, ErrWrongKey,
// ErrAuthentication, ErrCorrupt, or an I/O error from dev.
func Open(dev blockdev.Device, key []byte, opts *Options) (*FS, error) {
	if opts == nil {
		opts = &Options{}
	}
	if len(key) == 0 {
		return nil, errors.New("cocoonfs: empty key")
	}
	// A creation info header (keyless provisioning) is formatted by the
	// first read-write open with a key.
	if err := formatIfPending(dev, key, opts); err != nil {
		return nil, err
	}
	sh, err := readStaticHeader(dev)
	if err != nil {
		return nil, err
	}
	f := &FS{dev: dev, layout: sh.Layout, salt: sh.Salt, rw: opts.ReadWrite, disguiseStaging: opts.DisguiseStagingCopies, trim: opts.Trim}
	if f.rw && blockdev.IsReadOnly(dev) {
		return nil, fmt.Errorf("cocoonfs: read-write open: %w", blockdev.ErrReadOnly)
	}
	if f.algs, err = resolveAlgorithms(sh.Layout); err != nil {
		return nil, err
	}
	if err := checkDeviceBlockSize(dev, sh.Layout, opts.Force); err != nil {
		return nil, err
	}
	if f.keys, err = newKeyring(key, sh.Salt, sh.Layout, f.algs); err != nil {
		return nil, err
	}
	if err := f.bootstrap(sh); err != nil {
		f.keys.wipe()
		return nil, err
	}
	if err := f.checkExpected(opts); err != nil {
		f.keys.wipe()
		return nil, err
	}
	return f, nil
}

// checkExpected is the rollback guard.
func (f *FS) checkExpected(opts *Options) error {
	if opts.ExpectRoot != nil && !hmac.Equal(opts.ExpectRoot, f.header.RootHMAC) {
		return fmt.Errorf("%w: root digest %x, expected %x", ErrRollback, f.header.RootHMAC, opts.ExpectRoot)
	}
	if opts.MinCounter != nil && CounterBefore(f.counter, opts.MinCounter) {
		return fmt.Errorf("%w: update counter %s comes before the minimum %s", ErrRollback, f.counter, opts.MinCounter)
	}
	return nil
}

// CounterBefore reports whether update counter a comes before b in the
// format's circular order: the 2^127 values preceding b (mod 2^128).
func CounterBefore(a, b *big.Int) bool {
	mod := new(big.Int).Lsh(big.NewInt(1), 128)
	d := new(big.Int).Sub(b, a)
	d.Mod(d, mod)
	return d.Sign() > 0 && d.Cmp(new(big.Int).Rsh(mod, 1)) <= 0
}

// Replayed reports whether Open found a transaction committed but not yet
// applied (a power cut or crash in the middle of a commit) and applied it.
// Only a read-write open replays; a read-only one refuses such an image
// with ErrPendingJournal.
func (f *FS) Replayed() bool { return f.replayed }

// Close wipes the keys held by f. Reads after Close fail.
func (f *FS) Close() error {
	f.keys.wipe()
	return nil
}

func checkDeviceBlockSize(dev blockdev.Device, l disk.Layout, force bool) error {
	if ro, ok := dev.(blockdev.ReadOnlyDevice); ok && ro.ReadOnly() {
		return nil
	}
	if force || uint64(dev.BlockSize()) <= l.IOBlockSize() {
		return nil
	}
	return fmt.Errorf("cocoonfs: %w: the image's IO block is %d bytes but the device writes in %d-byte blocks, so a torn write could corrupt the journal; open read-only, or pass --force (Options.Force) to accept the risk (a new image can instead use --io-block %d)",
		ErrIOBlockTooSmall, l.IOBlockSize(), dev.BlockSize(), dev.BlockSize())
}

// readStaticHeader reads and decodes the static header, turning the other
// header kinds into clear errors.
func readStaticHeader(dev blockdev.Device) (disk.StaticHeader, error) {
	first, err := readUpTo(dev, 0, 128)
	if err != nil {
		return disk.StaticHeader{}, err
	}
	kind, perr := disk.ProbeHeader(first)
	switch {
	case kind == disk.HeaderMkfs && perr == nil:
		h, err := ReadHeaderInfo(dev)
		if err != nil {
			return disk.StaticHeader{}, err
		}
		return disk.StaticHeader{}, fmt.Errorf("cocoonfs: %w (%s); it is formatted on its first read-write open", ErrNotFormatted, h.summary())
	case kind != disk.HeaderRegular || perr != nil:
		if h, err := ReadHeaderInfo(dev); err == nil && h.Kind == KindMkfsInfoBackup {
			return disk.StaticHeader{}, fmt.Errorf("cocoonfs: %w: the primary header is invalid but a backup creation info header exists (an interrupted format); formatting restarts on the first read-write open", ErrNotFormatted)
		}
		if kind == disk.HeaderNone {
			return disk.StaticHeader{}, fmt.Errorf("cocoonfs: %w: no CocoonFS magic at offset 0", ErrNotCocoonFS)
		}
		return disk.StaticHeader{}, fmt.Errorf("cocoonfs: static header: %w", perr)
	}
	n, err := disk.StaticHeaderReadLen(first)
	if err != nil {
		return disk.StaticHeader{}, fmt.Errorf("cocoonfs: static header: %w", err)
	}
	b, err := readUpTo(dev, 0, n)
	if err != nil {
		return disk.StaticHeader{}, err
	}
	if uint64(len(b)) < n {
		return disk.StaticHeader{}, corruptf("image of %d bytes is shorter than its %d-byte static header", len(b), n)
	}
	sh, err := disk.DecodeStaticHeader(b)
	if err != nil {
		// Torn past its first 128 bytes: an interrupted format, if the
		// backup creation info header is intact.
		if mkfsInfoPending(dev) {
			return disk.StaticHeader{}, errInterruptedFormat
		}
		return disk.StaticHeader{}, fmt.Errorf("cocoonfs: static header: %w", err)
	}
	return sh, nil
}

// readUpTo reads up to n bytes at off, fewer at the device's end.
func readUpTo(dev blockdev.Device, off, n uint64) ([]byte, error) {
	size := uint64(dev.Size())
	if off >= size {
		return nil, nil
	}
	n = min(n, size-off)
	b := make([]byte, n)
	if _, err := dev.ReadAt(b, int64(off)); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cocoonfs: read %d bytes at %d: %w", n, off, err)
	}
	return b, nil
}

// readRaw reads exactly n bytes at byte offset off, unauthenticated.
func (f *FS) readRaw(off, n uint64) ([]byte, error) {
	end := off + n
	if end < off || end > uint64(f.dev.Size()) || end > f.imageAllocBlocks*f.layout.AllocBlockSize() && f.imageAllocBlocks != 0 {
		return nil, corruptf("read of %d bytes at offset %d beyond the image's end", n, off)
	}
	return f.readRawInto(off, make([]byte, n))
}

// readRawInto reads len(b) bytes at byte offset off into b, unauthenticated.
func (f *FS) readRawInto(off uint64, b []byte) ([]byte, error) {
	n := uint64(len(b))
	end := off + n
	if end < off || end > uint64(f.dev.Size()) || end > f.imageAllocBlocks*f.layout.AllocBlockSize() && f.imageAllocBlocks != 0 {
		return nil, corruptf("read of %d bytes at offset %d beyond the image's end", n, off)
	}
	if _, err := f.dev.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("cocoonfs: read %d bytes at %d: %w", n, off, err)
	}
	return b, nil
}

func (f *FS) bootstrap(sh disk.StaticHeader) error {
	f.bootChains, f.auxExtents, f.bitmap, f.tree, f.index = nil, nil, nil, nil, nil
	f.imageAllocBlocks = 0
	l := f.layout
	ab := l.AllocBlockSize()
	bs := f.algs.cipher.BlockSize
	rootLen, preLen := f.algs.rootHMAC.Size, f.algs.preauthHMAC.Size

	// The journal log head: a committed but unapplied transaction means the
	// mutable header and anything else may be stale until it is replayed.
	jhOff := disk.JournalLogHeadOffset(sh, rootLen, bs, preLen)
	jhLen, err := disk.JournalLogHeadLen(l, bs, preLen)
	if err != nil {
		return fmt.Errorf("cocoonfs: journal log head: %w", err)
	}
	jb, err := readUpTo(f.dev, jhOff, jhLen)
	if err != nil {
		return err
	}
	if uint64(len(jb)) < jhLen {
		return corruptf("image ends inside the journal log head at offset %d", jhOff)
	}
	jh, err := disk.DecodeJournalLogHead(jb, l)
	if err != nil {
		return fmt.Errorf("cocoonfs: journal log head: %w", err)
	}
	f.journalHead = disk.Extent{Start: jhOff / ab, Len: jhLen / ab}
	if jh.State == disk.JournalActive {
		if !f.rw {
			return fmt.Errorf("cocoonfs: %w", ErrPendingJournal)
		}
		f.headerAllocs = (disk.MutableHeaderOffset(sh) + disk.MutableHeaderPaddedLen(l, rootLen, bs, preLen)) / ab
		if err := f.replay(sh, jh, jb); err != nil {
			return fmt.Errorf("cocoonfs: replaying the pending journal: %w", err)
		}
		f.replayed = true
	}

	// Mutable header.
	mhOff := disk.MutableHeaderOffset(sh)
	mhLen := disk.MutableHeaderPaddedLen(l, rootLen, bs, preLen)
	mb, err := readUpTo(f.dev, mhOff, mhLen)
	if err != nil {
		return err
	}
	if uint64(len(mb)) < mhLen {
		return corruptf("image ends inside the mutable header")
	}
	if f.header, err = disk.DecodeMutableHeader(mb, l, rootLen, bs, preLen); err != nil {
		return fmt.Errorf("cocoonfs: mutable header: %w", err)
	}
	f.imageAllocBlocks = f.header.ImageSizeAllocBlocks
	if size := uint64(f.dev.Size()); f.imageAllocBlocks > size/ab {
		return corruptf("image truncated: the header records %d bytes, the device holds %d", f.imageAllocBlocks*ab, size)
	}
	f.headerAllocs = (mhOff + mhLen) / ab
	f.excluded = []disk.Extent{{Start: 0, Len: f.headerAllocs}, f.journalHead}

	// The inode index entry leaf, pre-authenticated before decryption.
	if f.header.EntryLeaf.IsNil() {
		return corruptf("mutable header has no inode index entry leaf")
	}
	leafStart := f.header.EntryLeaf.Start()
	leafRaw, err := f.readRaw(leafStart*ab, l.IndexLeafSize())
	if err != nil {
		return err
	}
	m := f.keys.hmac(f.algs.preauthHMAC, inoIndexRoot, subdomainData, purposePreauth)
	m.Write(leafRaw)
	m.Write(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, l.Cipher), l.CipherKeyBits))
	m.Write([]byte{0, authSubjectIndexNode})
	if !hmac.Equal(m.Sum(nil), f.header.EntryLeafPreauthHMAC) {
		return &wrongKeyError{"cocoonfs: wrong key: the inode index entry leaf does not authenticate with it (or the leaf or mutable header was altered)"}
	}
	leaf, err := f.decodeLeaf(leafRaw)
	if err != nil {
		return fmt.Errorf("inode index entry leaf: %w", err)
	}
	special := map[uint64]disk.ExtentPtr{}
	for _, e := range leaf.Entries {
		if e.Inode <= inoIndexRoot {
			special[e.Inode] = e.Ptr
		}
	}
	for _, ino := range []uint64{inoAuthTree, inoAllocBitmap, inoIndexRoot} {
		if _, ok := special[ino]; !ok {
			return corruptf("inode index entry leaf lacks inode %d", ino)
		}
	}

	// Extents of the authentication tree and allocation bitmap files.
	if f.treeExtents, err = f.preauthExtents(inoAuthTree, special[inoAuthTree]); err != nil {
		return err
	}
	if f.bitmapExtents, err = f.preauthExtents(inoAllocBitmap, special[inoAllocBitmap]); err != nil {
		return err
	}
	if f.tree, err = newAuthTree(f, f.treeExtents, f.header.RootHMAC); err != nil {
		return err
	}
	ctx := f.imageContext()
	if err := f.tree.verifyRoot(f.header.EncryptedCounter, ctx); err != nil {
		return err
	}

	// Aux metadata extents are excluded from data block digests; find them
	// before authenticating anything through the tree.
	if f.auxExtents, err = f.walkAuxExtents(); err != nil {
		return err
	}
	f.excluded = append(f.excluded, f.auxExtents...)

	if f.bitmap, err = newCommittedBitmap(f); err != nil {
		return err
	}
	// Now the tree can authenticate anything: check the entry leaf again,
	// this time through the tree (it binds the leaf's location).
	if _, err := f.authRead(leafStart, l.IndexLeafSize()/ab); err != nil {
		return fmt.Errorf("inode index entry leaf: %w", err)
	}
	if f.index, err = newInodeIndex(f, special[inoIndexRoot], leafStart, leaf); err != nil {
		return err
	}
	f.counter = f.decryptCounter()
	return nil
}

// preauthExtents returns the extents of inode 1 or 2: one direct extent, or
// an extents list in inline-authenticated chained extents.
func (f *FS) preauthExtents(ino uint64, p disk.ExtentPtr) ([]disk.Extent, error) {
	if p.IsNil() {
		return nil, corruptf("inode %d has no extents", ino)
	}
	start, n, indirect := p.Decode()
	if !indirect {
		return []disk.Extent{{Start: start, Len: n}}, nil
	}
	aad := binary.LittleEndian.AppendUint64(nil, ino)
	aad = append(aad, 0, 2) // format version, "inode extents list" associated data type
	ch := f.newChain(ino, subdomainExtentsList, 0, func(e disk.Extent) ([]byte, error) {
		f.bootChains = append(f.bootChains, e)
		return f.readRawExtent(e)
	})
	ch.mac = func() hash.Hash { return f.keys.hmac(f.algs.preauthHMAC, ino, subdomainExtentsList, purposePreauth) }
	ch.aad = aad
	list, err := ch.decode(disk.Extent{Start: start, Len: n})
	if err != nil {
		return nil, fmt.Errorf("extents list of inode %d: %w", ino, err)
	}
	return f.decodeExtentsList(ino, list)
}

func (f *FS) decodeExtentsList(ino uint64, list []byte) ([]disk.Extent, error) {
	ext, _, err := disk.DecodeExtentsList(list)
	if err != nil {
		return nil, fmt.Errorf("extents list of inode %d: %w", ino, err)
	}
	for _, e := range ext {
		if e.Start+e.Len < e.Start || e.Start+e.Len > f.imageAllocBlocks {
			return nil, corruptf("inode %d extent %d+%d beyond the image's %d allocation blocks", ino, e.Start, e.Len, f.imageAllocBlocks)
		}
	}
	return ext, nil
}

func (f *FS) newChain(ino uint64, sub uint32, hdrLen int, read func(disk.Extent) ([]byte, error)) *chain {
	return &chain{
		hdrLen:     hdrLen,
		c:          f.keys.blockCipher(ino, sub),
		read:       read,
		maxExtents: int(min(f.imageAllocBlocks, 1<<20)),
		cipherID:   f.layout.Cipher,
		keyBits:    f.layout.CipherKeyBits,
	}
}

func (f *FS) readRawExtent(e disk.Extent) ([]byte, error) {
	ab := f.layout.AllocBlockSize()
	if e.Len == 0 || e.Start+e.Len > f.imageAllocBlocks || e.Start+e.Len < e.Start {
		return nil, corruptf("extent %d+%d outside the image", e.Start, e.Len)
	}
	return f.readRaw(e.Start*ab, e.Len*ab)
}

// imageContext is the digest binding the layout and the bootstrap locations
// into the root HMAC.
func (f *FS) imageContext() []byte {
	m := f.keys.hmac(f.algs.rootHMAC, inoAuthTree, subdomainNone, purposeAuthRoot)
	m.Write([]byte("COCOONFS"))
	m.Write([]byte{1})
	m.Write(f.layout.Append(nil))
	m.Write(f.header.EntryLeaf.Append(nil))
	m.Write(binary.LittleEndian.AppendUint64(nil, f.imageAllocBlocks))
	m.Write(disk.AppendExtentsList(nil, f.treeExtents))
	m.Write(disk.AppendExtentsList(nil, f.bitmapExtents))
	m.Write([]byte{0, authSubjectImageContext})
	return m.Sum(nil)
}

// decryptCounter decrypts the filesystem update counter: little-endian,
// zero-padded to the cipher block, CBC with an all-zero IV.
func (f *FS) decryptCounter() *big.Int {
	c := f.keys.blockCipher(inoUpdateCounter, subdomainData)
	pt := make([]byte, len(f.header.EncryptedCounter))
	cipher.NewCBCDecrypter(c, make([]byte, c.BlockSize())).CryptBlocks(pt, f.header.EncryptedCounter)
	le := pt[:16]
	be := make([]byte, 16)
	for i := range le {
		be[15-i] = le[i]
	}
	return new(big.Int).SetBytes(be)
}
