package cocoonfs

import (
	"errors"
	"fmt"
	"math/bits"
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
		return o.info.layout, checkWritableLayout(o.info.layout)
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
	return l, checkWritableLayout(l)
}

// maxWriteBlock bounds the blocks of an image sealfs creates: the format
// allows blocks of up to 2^62 bytes, but every header, node and bitmap
// block is built in memory whole, and no device writes in units anywhere
// near this large.
const maxWriteBlock = 1 << 20

// checkWritableLayout refuses to create an image whose blocks exceed
// maxWriteBlock (images with larger blocks still open).
func checkWritableLayout(l disk.Layout) error {
	for _, b := range []struct {
		name string
		size uint64
	}{
		{"IO block", l.IOBlockSize()}, {"authentication tree node", l.AuthTreeNodeSize()},
		{"authentication tree data block", l.AuthTreeDataBlockSize()}, {"allocation bitmap block", l.BitmapBlockSize()},
		{"inode index leaf", l.IndexLeafSize()}, {"inode index node", l.IndexInternalSize()},
	} {
		if b.size > maxWriteBlock {
			return fmt.Errorf("cocoonfs: %s of %d bytes exceeds the %d bytes sealfs creates images with: %w", b.name, b.size, maxWriteBlock, ErrUnsupported)
		}
	}
	return nil
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
		return cannotHold(size, err)
	}
	return nil
}

// cannotHold is the error for a device that cannot grow to an image size.
func cannotHold(size int64, err error) error {
	return fmt.Errorf("cocoonfs: the device cannot hold a %d-byte image (%w): %w", size, err, ErrNoSpace)
}

// probeGrow checks that a resizable device can grow to size, by growing it
// and cutting it back (a file grows sparse: nothing is written).
func probeGrow(dev blockdev.Device, size int64) error {
	r, ok := dev.(blockdev.Resizer)
	if !ok {
		return nil
	}
	old := dev.Size()
	if err := r.Resize(size); err != nil {
		return cannotHold(size, err)
	}
	if err := r.Resize(old); err != nil {
		return fmt.Errorf("cocoonfs: restore device size %d after probing %d: %w", old, size, err)
	}
	return nil
}

func name(id uint16) string { return tcg.AlgID(id).String() }
