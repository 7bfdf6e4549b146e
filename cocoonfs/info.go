package cocoonfs

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
	"github.com/sealfs/sealfs/tcg"
)

// HeaderKind says which header a medium carries.
type HeaderKind string

// Header kinds.
const (
	// KindFilesystem: a formatted CocoonFS image.
	KindFilesystem HeaderKind = "filesystem"
	// KindMkfsInfo: only a filesystem creation info header (keyless
	// provisioning); the first read-write open with a key formats the image.
	KindMkfsInfo HeaderKind = "mkfsinfo"
	// KindMkfsInfoBackup: the primary header is invalid but the backup
	// creation info header is intact: a format was interrupted and restarts
	// on the next read-write open.
	KindMkfsInfoBackup HeaderKind = "mkfsinfo-backup"
)

// Layout is the image geometry, in bytes.
type Layout struct {
	AllocationBlock       uint64 `json:"allocation_block"`
	IOBlock               uint64 `json:"io_block"`
	AuthTreeNode          uint64 `json:"auth_tree_node"`
	AuthTreeDataBlock     uint64 `json:"auth_tree_data_block"`
	AllocationBitmapBlock uint64 `json:"allocation_bitmap_block"`
	IndexLeafNode         uint64 `json:"index_leaf_node"`
	IndexInternalNode     uint64 `json:"index_internal_node"`
}

// Algorithm names one algorithm of the layout by TCG id and name.
type Algorithm struct {
	ID   uint16 `json:"id"`
	Name string `json:"name"`
}

// Algorithms are the layout's seven algorithm fields.
type Algorithms struct {
	AuthTreeNodeHash      Algorithm `json:"auth_tree_node_hash"`
	AuthTreeDataHMACHash  Algorithm `json:"auth_tree_data_hmac_hash"`
	AuthTreeRootHMACHash  Algorithm `json:"auth_tree_root_hmac_hash"`
	PreauthCCAHMACHash    Algorithm `json:"preauth_cca_protection_hmac_hash"`
	KDFHash               Algorithm `json:"kdf_hash"`
	BlockCipher           Algorithm `json:"block_cipher"`
	BlockCipherKeyBits    int       `json:"block_cipher_key_bits"`
	BlockCipherMode       string    `json:"block_cipher_mode"`
	UnsupportedAlgorithms []string  `json:"unsupported,omitempty"`
}

// HeaderInfo is everything readable without the key.
type HeaderInfo struct {
	Kind       HeaderKind `json:"kind"`
	Layout     Layout     `json:"layout"`
	Algorithms Algorithms `json:"algorithms"`
	Salt       string     `json:"salt"` // hex
	// ImageSize is the image size in bytes: recorded in the mutable header,
	// or the size a creation info header asks for.
	ImageSize uint64 `json:"image_size"`
	// DeviceSize is the size of the medium in bytes.
	DeviceSize uint64 `json:"device_size"`
	// AuxMetadataLen is the aux metadata stored with a creation info header.
	AuxMetadataLen uint64 `json:"aux_metadata_len,omitempty"`
	// Journal is "empty", "active" (a pending transaction) or "torn" (an
	// interrupted journal write, ignored) for formatted images.
	Journal string `json:"journal,omitempty"`
}

func (h *HeaderInfo) summary() string {
	return fmt.Sprintf("%s/%s-%d, image size %d bytes", h.Algorithms.AuthTreeNodeHash.Name, h.Algorithms.BlockCipher.Name, h.Algorithms.BlockCipherKeyBits, h.ImageSize)
}

// ReadHeaderInfo reads the header fields of the medium without a key. It
// recognizes formatted images, creation info headers and, when the primary
// header is invalid, an intact backup creation info header.
func ReadHeaderInfo(dev blockdev.Device) (*HeaderInfo, error) {
	size := uint64(dev.Size())
	first, err := readUpTo(dev, 0, 128)
	if err != nil {
		return nil, err
	}
	kind, perr := disk.ProbeHeader(first)
	if perr == nil {
		// A header torn past its first 128 bytes fails the full decode;
		// then the backup copy below may tell an interrupted format.
		switch kind {
		case disk.HeaderRegular:
			h, err := regularHeaderInfo(dev, size)
			if err == nil {
				return h, nil
			}
			perr = err
		case disk.HeaderMkfs:
			h, err := mkfsHeaderInfo(dev, 0, size, KindMkfsInfo)
			if err == nil {
				return h, nil
			}
			perr = err
		}
	}
	// The primary header is missing or torn: an interrupted format leaves a
	// backup creation info header near the end. Its location depends only on
	// the device size (for any IO block it can hold).
	if off, ok := disk.MkfsInfoBackupOffset(size, disk.Layout{}); ok {
		if h, err := mkfsHeaderInfo(dev, off, size, KindMkfsInfoBackup); err == nil {
			return h, nil
		}
	}
	if kind == disk.HeaderNone {
		return nil, fmt.Errorf("cocoonfs: %w: no CocoonFS magic at offset 0", ErrNotCocoonFS)
	}
	return nil, fmt.Errorf("cocoonfs: header: %w", perr)
}

func regularHeaderInfo(dev blockdev.Device, size uint64) (*HeaderInfo, error) {
	sh, err := readStaticHeader(dev)
	if err != nil {
		return nil, err
	}
	h := &HeaderInfo{Kind: KindFilesystem, DeviceSize: size, Salt: hex.EncodeToString(sh.Salt)}
	h.Layout, h.Algorithms = describeLayout(sh.Layout)
	algs, err := resolveAlgorithms(sh.Layout)
	if err != nil {
		// Without the digest lengths the mutable header cannot be parsed;
		// the static fields are still worth showing.
		return h, nil
	}
	bs, rootLen, preLen := algs.cipher.BlockSize, algs.rootHMAC.Size, algs.preauthHMAC.Size
	mhOff := disk.MutableHeaderOffset(sh)
	mhLen := disk.MutableHeaderPaddedLen(sh.Layout, rootLen, bs, preLen)
	if mb, err := readUpTo(dev, mhOff, mhLen); err == nil && uint64(len(mb)) == mhLen {
		if mh, err := disk.DecodeMutableHeader(mb, sh.Layout, rootLen, bs, preLen); err == nil {
			h.ImageSize = mh.ImageSizeAllocBlocks * sh.Layout.AllocBlockSize()
		}
	}
	jhOff := disk.JournalLogHeadOffset(sh, rootLen, bs, preLen)
	if jhLen, err := disk.JournalLogHeadLen(sh.Layout, bs, preLen); err == nil {
		if jb, err := readUpTo(dev, jhOff, jhLen); err == nil && uint64(len(jb)) == jhLen {
			if jh, err := disk.DecodeJournalLogHead(jb, sh.Layout); err == nil {
				h.Journal = jh.State.String()
			}
		}
	}
	return h, nil
}

func mkfsHeaderInfo(dev blockdev.Device, off, size uint64, kind HeaderKind) (*HeaderInfo, error) {
	first, err := readUpTo(dev, off, 128)
	if err != nil {
		return nil, err
	}
	n, err := disk.MkfsInfoHeaderReadLen(first)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info header: %w", err)
	}
	b, err := readUpTo(dev, off, n)
	if err != nil {
		return nil, err
	}
	mh, err := disk.DecodeMkfsInfoHeader(b)
	if err != nil {
		return nil, fmt.Errorf("cocoonfs: creation info header: %w", err)
	}
	h := &HeaderInfo{
		Kind:           kind,
		DeviceSize:     size,
		Salt:           hex.EncodeToString(mh.Salt),
		ImageSize:      mh.ImageSizeAllocBlocks * mh.Layout.AllocBlockSize(),
		AuxMetadataLen: mh.AuxMetadataLen,
	}
	h.Layout, h.Algorithms = describeLayout(mh.Layout)
	return h, nil
}

func describeLayout(l disk.Layout) (Layout, Algorithms) {
	lay := Layout{
		AllocationBlock:       l.AllocBlockSize(),
		IOBlock:               l.IOBlockSize(),
		AuthTreeNode:          l.AuthTreeNodeSize(),
		AuthTreeDataBlock:     l.AuthTreeDataBlockSize(),
		AllocationBitmapBlock: l.BitmapBlockSize(),
		IndexLeafNode:         l.IndexLeafSize(),
		IndexInternalNode:     l.IndexInternalSize(),
	}
	var a Algorithms
	alg := func(id uint16, field string, isHash bool) Algorithm {
		var err error
		if isHash {
			_, err = tcg.LookupHash(tcg.AlgID(id))
		} else {
			_, err = tcg.LookupBlockCipher(tcg.AlgID(id), int(l.CipherKeyBits))
		}
		if errors.Is(err, tcg.ErrUnsupportedAlgorithm) {
			a.UnsupportedAlgorithms = append(a.UnsupportedAlgorithms, field)
		}
		return Algorithm{ID: id, Name: tcg.AlgID(id).String()}
	}
	a.AuthTreeNodeHash = alg(l.AuthTreeNodeHash, "auth_tree_node_hash", true)
	a.AuthTreeDataHMACHash = alg(l.AuthTreeDataHMACHash, "auth_tree_data_hmac_hash", true)
	a.AuthTreeRootHMACHash = alg(l.AuthTreeRootHMACHash, "auth_tree_root_hmac_hash", true)
	a.PreauthCCAHMACHash = alg(l.PreauthHMACHash, "preauth_cca_protection_hmac_hash", true)
	a.KDFHash = alg(l.KDFHash, "kdf_hash", true)
	a.BlockCipher = alg(l.Cipher, "block_cipher", false)
	a.BlockCipherKeyBits = int(l.CipherKeyBits)
	a.BlockCipherMode = "CBC"
	return lay, a
}

// Info is the full description of an open image.
type Info struct {
	HeaderInfo
	RootDigest    string `json:"root_digest"`    // hex
	UpdateCounter string `json:"update_counter"` // decimal, 128-bit
	Files         int    `json:"files"`
	AuthTree      struct {
		Height     int    `json:"height"`
		Leaves     uint64 `json:"leaves"`
		DataBlocks uint64 `json:"data_blocks"`
	} `json:"auth_tree"`
	AllocatedBlocks uint64 `json:"allocated_blocks"`
	TotalBlocks     uint64 `json:"total_blocks"`
}

// Info describes the open image: header fields, root digest, update counter,
// file count and space use.
func (f *FS) Info() (*Info, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return nil, f.failed
	}
	hi, err := ReadHeaderInfo(f.dev)
	if err != nil {
		return nil, err
	}
	in := &Info{HeaderInfo: *hi}
	in.RootDigest = hex.EncodeToString(f.header.RootHMAC)
	in.UpdateCounter = f.counter.String()
	sp, err := f.spaceLocked()
	if err != nil {
		return nil, err
	}
	in.Files = sp.Files
	in.AuthTree.Height = f.tree.height
	in.AuthTree.Leaves = f.tree.leaves
	in.AuthTree.DataBlocks = f.tree.dataBlocks
	in.TotalBlocks = f.imageAllocBlocks
	in.AllocatedBlocks = sp.AllocatedBlocks
	return in, nil
}

// Space is how much of the image is in use.
type Space struct {
	TotalBlocks     uint64 `json:"total_blocks"`     // allocation blocks in the image
	AllocatedBlocks uint64 `json:"allocated_blocks"` // of them allocated (metadata included)
	BlockSize       uint64 `json:"block_size"`       // bytes per allocation block
	Files           int    `json:"files"`            // user files
}

// Space returns the image's size, its allocated blocks and its file count.
// The first call counts them (the whole allocation bitmap and the index);
// commits then keep the figures up to date, so later calls are free.
func (f *FS) Space() (Space, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return Space{}, f.failed
	}
	return f.spaceLocked()
}

// spaceLocked is Space for a caller holding f.mu.
func (f *FS) spaceLocked() (Space, error) {
	f.spaceMu.Lock()
	defer f.spaceMu.Unlock()
	if f.space == nil {
		n, err := countAllocated(f.bitmap, f.imageAllocBlocks)
		if err != nil {
			return Space{}, err
		}
		list, err := f.inodes()
		if err != nil {
			return Space{}, err
		}
		f.space = &Space{TotalBlocks: f.imageAllocBlocks, AllocatedBlocks: n, BlockSize: f.layout.AllocBlockSize(), Files: len(list)}
	}
	return *f.space, nil
}

// noteCommit brings the space figures to the state p commits; the caller
// holds f.mu exclusively.
func (f *FS) noteCommit(p *txPlan) {
	f.spaceMu.Lock()
	defer f.spaceMu.Unlock()
	if f.space == nil {
		return
	}
	// A block taken and released by the same transaction is in both sets:
	// it cancels out, as it should.
	var taken, freed uint64
	for _, e := range p.b.al.taken.ext {
		taken += e.Len
	}
	for _, e := range p.freeSet.ext {
		freed += e.Len
	}
	f.space.AllocatedBlocks = f.space.AllocatedBlocks + taken - freed
	f.space.Files += p.filesDelta
}
