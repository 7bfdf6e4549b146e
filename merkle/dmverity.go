package merkle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"strings"

	"github.com/sealfs/sealfs/errs"
)

// DmverityOptions are the parameters of a dm-verity hash device, as
// `veritysetup format` takes them. Zero values mean veritysetup's defaults
// (format 1, SHA-256, 4096-byte blocks, a superblock at offset 0), except
// that the salt and UUID are not made up: veritysetup picks random ones,
// the library uses exactly what it is given (no salt, a zero UUID), so the
// output is deterministic.
type DmverityOptions struct {
	// Format0 selects hash format 0, the original Chrome OS format (salt
	// appended to each block, digests packed), instead of format 1 (salt
	// prepended, each digest in a power-of-two slot).
	Format0 bool
	// Hash is crypto.SHA256 (the default when 0), SHA1, SHA224, SHA384 or
	// SHA512; the superblock names it "sha256", "sha1", ...
	Hash crypto.Hash
	// DataBlockSize and HashBlockSize are powers of two from 512 to 512 KiB
	// (0 means 4096).
	DataBlockSize, HashBlockSize int
	// Salt is at most 256 bytes; nil or empty means no salt.
	Salt []byte
	// NoSuperblock leaves out the 512-byte superblock; the parameters must
	// then be stored elsewhere (veritysetup --no-superblock).
	NoSuperblock bool
	// HashOffset is where the hash area (superblock first) starts on the
	// hash device, a multiple of 512.
	HashOffset int64
	// DataBlocks is the number of data blocks hashed; 0 means
	// floor(dataSize / DataBlockSize): a trailing partial block is ignored,
	// as veritysetup does. Where a dataSize is passed, a negative one means
	// unknown (DataBlocks must then be set); a known one must hold the blocks.
	DataBlocks int64
	// UUID goes into the superblock (binary, RFC 4122 byte order).
	UUID [16]byte
}

const (
	dmveritySuperblockSize = 512
	dmverityMaxSalt        = 256
	dmverityMinBlock       = 512
	dmverityMaxBlock       = 512 * 1024
)

var dmverityHashes = []struct {
	name string
	h    crypto.Hash
	new  func() hash.Hash
}{
	{"sha256", crypto.SHA256, sha256.New},
	{"sha1", crypto.SHA1, sha1.New},
	{"sha224", crypto.SHA224, sha256.New224},
	{"sha384", crypto.SHA384, sha512.New384},
	{"sha512", crypto.SHA512, sha512.New},
}

// DmverityHashByName maps a superblock / veritysetup algorithm name to a
// hash; unknown names are errs.ErrUnsupportedAlgorithm.
func DmverityHashByName(name string) (crypto.Hash, error) {
	for _, e := range dmverityHashes {
		if e.name == name {
			return e.h, nil
		}
	}
	return 0, fmt.Errorf("%w: dm-verity hash %q (sealfs supports sha1, sha224, sha256, sha384, sha512)", errs.ErrUnsupportedAlgorithm, name)
}

// DmverityLayout is where everything lives on the hash device.
type DmverityLayout struct {
	DataBlocks    int64 // data blocks covered
	Levels        int   // tree levels; 0 when there is a single data block
	HashBlocks    int64 // tree blocks (superblock not counted)
	TreeOffset    int64 // byte offset of the tree (top level first) on the hash device
	HashAreaEnd   int64 // TreeOffset + HashBlocks*HashBlockSize: veritysetup's "hash device size"
	HashBlockSize int
	DataBlockSize int
	// levelStart[i] is the first hash block (absolute, in hash blocks) of
	// level i (0 = the hashes of the data blocks); levelCount[i] its blocks.
	levelStart, levelCount []int64
}

// dmverity are validated options with the derived geometry.
type dmverity struct {
	DmverityOptions
	name    string
	newHash func() hash.Hash
	dsize   int // digest size
	slot    int // bytes per digest in a hash block
	bits    int // log2(digests per hash block)
	layout  DmverityLayout
}

func (o DmverityOptions) params(dataSize int64) (*dmverity, error) {
	v := &dmverity{DmverityOptions: o}
	if v.Hash == 0 {
		v.Hash = crypto.SHA256
	}
	if v.DataBlockSize == 0 {
		v.DataBlockSize = 4096
	}
	if v.HashBlockSize == 0 {
		v.HashBlockSize = 4096
	}
	for _, e := range dmverityHashes {
		if e.h == v.Hash {
			v.name, v.newHash = e.name, e.new
		}
	}
	if v.newHash == nil {
		return nil, fmt.Errorf("%w: dm-verity hash %v (sealfs supports sha1, sha224, sha256, sha384, sha512)", errs.ErrUnsupportedAlgorithm, v.Hash)
	}
	for _, bs := range []int{v.DataBlockSize, v.HashBlockSize} {
		if bs < dmverityMinBlock || bs > dmverityMaxBlock || bs&(bs-1) != 0 {
			return nil, fmt.Errorf("merkle: dm-verity block size %d: want a power of two from 512 to 524288", bs)
		}
	}
	if len(v.Salt) > dmverityMaxSalt {
		return nil, fmt.Errorf("merkle: dm-verity salt is %d bytes, at most %d allowed", len(v.Salt), dmverityMaxSalt)
	}
	if v.HashOffset < 0 || v.HashOffset%512 != 0 {
		return nil, fmt.Errorf("merkle: dm-verity hash offset %d: want a non-negative multiple of 512", v.HashOffset)
	}
	v.dsize = v.newHash().Size()
	v.slot = v.dsize
	if !v.Format0 {
		v.slot = 1 << bits.Len(uint(v.dsize-1)) // next power of two
	}
	// Digests per hash block: the largest power of two that fits
	// (cryptsetup's get_bits_down(hash_block_size / digest_size)).
	v.bits = bits.Len(uint(v.HashBlockSize/v.dsize)) - 1
	if v.bits < 1 {
		return nil, fmt.Errorf("merkle: dm-verity hash block %d holds fewer than two %s digests", v.HashBlockSize, v.name)
	}
	n := v.DataBlocks
	if n == 0 {
		n = dataSize / int64(v.DataBlockSize)
	}
	if n <= 0 {
		return nil, fmt.Errorf("merkle: dm-verity needs at least one %d-byte data block, the data is %d bytes", v.DataBlockSize, dataSize)
	}
	if n > (1<<63-1)/int64(v.DataBlockSize) || (dataSize >= 0 && n*int64(v.DataBlockSize) > dataSize) {
		return nil, fmt.Errorf("merkle: %d data blocks of %d bytes do not fit in %d bytes of data", n, v.DataBlockSize, dataSize)
	}
	l := &v.layout
	l.DataBlocks, l.HashBlockSize, l.DataBlockSize = n, v.HashBlockSize, v.DataBlockSize
	for uint64(n-1)>>(uint(l.Levels)*uint(v.bits)) != 0 {
		l.Levels++
	}
	hbs := int64(v.HashBlockSize)
	start := v.HashOffset / hbs
	if !v.NoSuperblock {
		start = (v.HashOffset + dmveritySuperblockSize + hbs - 1) / hbs
	}
	l.TreeOffset = start * hbs
	// On disk the top level comes first, level 0 last.
	l.levelStart = make([]int64, l.Levels)
	l.levelCount = make([]int64, l.Levels)
	for i := 0; i < l.Levels; i++ {
		sh := uint((i + 1) * v.bits)
		if sh >= 63 {
			l.levelCount[i] = 1
		} else {
			l.levelCount[i] = int64((uint64(n) + (1 << sh) - 1) >> sh)
		}
		l.HashBlocks += l.levelCount[i]
	}
	b := start
	for i := l.Levels - 1; i >= 0; i-- {
		l.levelStart[i] = b
		b += l.levelCount[i]
	}
	l.HashAreaEnd = b * hbs
	return v, nil
}

// Layout returns the geometry of the hash device for dataSize bytes of data
// (dataSize is ignored when DataBlocks is set).
func (o DmverityOptions) Layout(dataSize int64) (DmverityLayout, error) {
	v, err := o.params(dataSize)
	if err != nil {
		return DmverityLayout{}, err
	}
	return v.layout, nil
}

// dmverityHasher hashes blocks with the salt rule of the format.
type dmverityHasher struct {
	v   *dmverity
	h   hash.Hash
	sum []byte
}

func (v *dmverity) hasher() *dmverityHasher {
	return &dmverityHasher{v: v, h: v.newHash(), sum: make([]byte, 0, v.dsize)}
}

func (d *dmverityHasher) block(b []byte) []byte {
	d.h.Reset()
	if d.v.Format0 {
		d.h.Write(b)
		d.h.Write(d.v.Salt)
	} else {
		d.h.Write(d.v.Salt)
		d.h.Write(b)
	}
	return d.h.Sum(d.sum[:0])
}

// DmverityFormat writes the hash device for the data: the superblock
// (unless NoSuperblock) at HashOffset and the hash tree after it, byte for
// byte what `veritysetup format` writes, and returns the root hash. Only
// the superblock and the tree blocks are written; other bytes of the hash
// device are left alone, as veritysetup leaves them. With a single data
// block there is no tree and the root is that block's hash. Memory is one
// hash block per level.
func DmverityFormat(data io.ReaderAt, dataSize int64, hash io.WriterAt, opts DmverityOptions) (root []byte, err error) {
	return DmverityFormatContext(context.Background(), data, dataSize, hash, opts, nil)
}

// DmverityFormatContext is DmverityFormat with cancellation and progress
// (done and total data blocks; progress may be nil).
func DmverityFormatContext(ctx context.Context, data io.ReaderAt, dataSize int64, hash io.WriterAt, opts DmverityOptions, progress func(done, total uint64)) (root []byte, err error) {
	v, err := opts.params(dataSize)
	if err != nil {
		return nil, err
	}
	l := &v.layout
	h := v.hasher()
	hbs := v.HashBlockSize
	// pending[i] is the hash block of level i being filled; index[i] its
	// block number within the level.
	pending := make([][]byte, l.Levels)
	index := make([]int64, l.Levels)
	for i := range pending {
		pending[i] = make([]byte, hbs)
	}
	fill := make([]int, l.Levels) // digests in pending[i]
	var flush func(i int) error
	// add puts digest d into level i, writing the block and hashing it up
	// when it is full.
	add := func(i int, d []byte) error {
		copy(pending[i][fill[i]*v.slot:], d)
		fill[i]++
		if fill[i] == 1<<v.bits {
			return flush(i)
		}
		return nil
	}
	flush = func(i int) error {
		blk := pending[i]
		off := (l.levelStart[i] + index[i]) * int64(hbs)
		if _, err := hash.WriteAt(blk, off); err != nil {
			return fmt.Errorf("merkle: writing dm-verity hash block at byte %d: %w", off, err)
		}
		d := h.block(blk)
		index[i]++
		fill[i] = 0
		clear(blk)
		if i == l.Levels-1 {
			root = bytes.Clone(d)
			return nil
		}
		return add(i+1, d)
	}
	dbs := int64(v.DataBlockSize)
	buf := make([]byte, max(dbs, 1<<20))
	for blk := int64(0); blk < l.DataBlocks; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(int64(len(buf))/dbs, l.DataBlocks-blk)
		chunk := buf[:n*dbs]
		if _, err := data.ReadAt(chunk, blk*dbs); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("merkle: reading dm-verity data block %d: %w", blk, err)
		}
		for ; len(chunk) > 0; chunk = chunk[dbs:] {
			d := h.block(chunk[:dbs])
			if l.Levels == 0 {
				root = bytes.Clone(d)
			} else if err := add(0, d); err != nil {
				return nil, err
			}
		}
		blk += n
		if progress != nil {
			progress(uint64(blk), uint64(l.DataBlocks))
		}
	}
	for i := 0; i < l.Levels; i++ {
		if fill[i] > 0 {
			if err := flush(i); err != nil {
				return nil, err
			}
		}
	}
	if !v.NoSuperblock {
		sb := DmveritySuperblock{
			Version: 1, HashType: 1, UUID: v.UUID, Algorithm: v.name,
			DataBlockSize: uint32(v.DataBlockSize), HashBlockSize: uint32(v.HashBlockSize),
			DataBlocks: uint64(l.DataBlocks), Salt: v.Salt,
		}
		if v.Format0 {
			sb.HashType = 0
		}
		b, err := sb.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if err := writeSuperblock(hash, b, v.HashOffset, min(v.HashBlockSize, 4096)); err != nil {
			return nil, err
		}
	}
	return root, nil
}

// writeSuperblock writes the superblock the way veritysetup 2.6.1 does: as
// a read-modify-write of the aligned I/O block(s) around it, the I/O block
// being min(hash block size, 4096). Bytes around the superblock inside that
// block keep their value, and a new, short hash file is extended to the end
// of the block with zeros, so a fresh file comes out identical to
// veritysetup's, length included (this matters only for single-data-block
// devices, which have no tree behind the superblock). Without an
// io.ReaderAt only the 512 bytes are written.
func writeSuperblock(w io.WriterAt, sb []byte, off int64, align int) error {
	r, ok := w.(io.ReaderAt)
	if !ok {
		if _, err := w.WriteAt(sb, off); err != nil {
			return fmt.Errorf("merkle: writing dm-verity superblock: %w", err)
		}
		return nil
	}
	a := int64(align)
	start := off / a * a
	end := (off + int64(len(sb)) + a - 1) / a * a
	buf := make([]byte, end-start)
	if _, err := r.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("merkle: reading around the dm-verity superblock: %w", err)
	}
	copy(buf[off-start:], sb)
	if _, err := w.WriteAt(buf, start); err != nil {
		return fmt.Errorf("merkle: writing dm-verity superblock: %w", err)
	}
	return nil
}

// DmveritySuperblock is the 512-byte header veritysetup writes at the start
// of the hash area.
type DmveritySuperblock struct {
	Version       uint32 // 1
	HashType      uint32 // 1 normal, 0 Chrome OS
	UUID          [16]byte
	Algorithm     string // "sha256", ...
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

var dmveritySignature = []byte("verity\x00\x00")

// ErrNotDmverity reports bytes that do not start with the dm-verity
// superblock signature; it wraps errs.ErrCorrupt.
var ErrNotDmverity = fmt.Errorf("%w: no dm-verity superblock", errs.ErrCorrupt)

// ParseDmveritySuperblock parses and validates a superblock (at least 512
// bytes; more are ignored). It applies the checks cryptsetup's
// VERITY_read_sb does, and a few more: version 1, hash type 0 or 1, block
// sizes powers of two from 512 to 512 KiB, a NUL-terminated printable
// algorithm name, salt size at most 256, data blocks non-zero and not
// overflowing. Failures wrap errs.ErrCorrupt (ErrNotDmverity for a wrong
// signature). An algorithm sealfs cannot compute is not a parse error;
// Options reports it.
func ParseDmveritySuperblock(b []byte) (DmveritySuperblock, error) {
	var s DmveritySuperblock
	if len(b) < dmveritySuperblockSize {
		return s, fmt.Errorf("%w: dm-verity superblock is %d bytes, want %d", errs.ErrCorrupt, len(b), dmveritySuperblockSize)
	}
	if !bytes.Equal(b[0:8], dmveritySignature) {
		return s, ErrNotDmverity
	}
	le := binary.LittleEndian
	s.Version = le.Uint32(b[8:12])
	s.HashType = le.Uint32(b[12:16])
	copy(s.UUID[:], b[16:32])
	alg := b[32:64]
	nul := bytes.IndexByte(alg, 0)
	if nul <= 0 {
		return s, fmt.Errorf("%w: dm-verity superblock: algorithm name is empty or not NUL-terminated", errs.ErrCorrupt)
	}
	for _, c := range alg[:nul] {
		if c <= ' ' || c >= 0x7f {
			return s, fmt.Errorf("%w: dm-verity superblock: algorithm name %q is not printable", errs.ErrCorrupt, alg[:nul])
		}
	}
	s.Algorithm = string(alg[:nul])
	s.DataBlockSize = le.Uint32(b[64:68])
	s.HashBlockSize = le.Uint32(b[68:72])
	s.DataBlocks = le.Uint64(b[72:80])
	saltSize := le.Uint16(b[80:82])
	switch {
	case s.Version != 1:
		return s, fmt.Errorf("%w: dm-verity superblock version %d (want 1)", errs.ErrCorrupt, s.Version)
	case s.HashType > 1:
		return s, fmt.Errorf("%w: dm-verity hash type %d (want 0 or 1)", errs.ErrCorrupt, s.HashType)
	case !validVerityBlock(s.DataBlockSize) || !validVerityBlock(s.HashBlockSize):
		return s, fmt.Errorf("%w: dm-verity block sizes %d/%d (want powers of two from 512 to 524288)", errs.ErrCorrupt, s.DataBlockSize, s.HashBlockSize)
	case s.DataBlocks == 0 || s.DataBlocks > (1<<63-1)/uint64(s.DataBlockSize):
		return s, fmt.Errorf("%w: dm-verity data blocks %d out of range", errs.ErrCorrupt, s.DataBlocks)
	case saltSize > dmverityMaxSalt:
		return s, fmt.Errorf("%w: dm-verity salt size %d (at most %d)", errs.ErrCorrupt, saltSize, dmverityMaxSalt)
	}
	if saltSize > 0 {
		s.Salt = bytes.Clone(b[88 : 88+int(saltSize)])
	}
	return s, nil
}

func validVerityBlock(n uint32) bool {
	return n >= dmverityMinBlock && n <= dmverityMaxBlock && n&(n-1) == 0
}

// MarshalBinary returns the 512-byte superblock.
func (s DmveritySuperblock) MarshalBinary() ([]byte, error) {
	if len(s.Algorithm) == 0 || len(s.Algorithm) >= 32 || strings.IndexByte(s.Algorithm, 0) >= 0 {
		return nil, fmt.Errorf("merkle: dm-verity algorithm name %q does not fit the superblock", s.Algorithm)
	}
	if len(s.Salt) > dmverityMaxSalt {
		return nil, fmt.Errorf("merkle: dm-verity salt is %d bytes, at most %d allowed", len(s.Salt), dmverityMaxSalt)
	}
	b := make([]byte, dmveritySuperblockSize)
	le := binary.LittleEndian
	copy(b[0:8], dmveritySignature)
	le.PutUint32(b[8:12], s.Version)
	le.PutUint32(b[12:16], s.HashType)
	copy(b[16:32], s.UUID[:])
	copy(b[32:64], s.Algorithm)
	le.PutUint32(b[64:68], s.DataBlockSize)
	le.PutUint32(b[68:72], s.HashBlockSize)
	le.PutUint64(b[72:80], s.DataBlocks)
	le.PutUint16(b[80:82], uint16(len(s.Salt)))
	copy(b[88:], s.Salt)
	return b, nil
}

// Options returns the hash device parameters the superblock records, with
// NoSuperblock false and HashOffset 0 (the superblock does not record where
// it is). An algorithm sealfs cannot compute is errs.ErrUnsupportedAlgorithm.
func (s DmveritySuperblock) Options() (DmverityOptions, error) {
	h, err := DmverityHashByName(s.Algorithm)
	if err != nil {
		return DmverityOptions{}, err
	}
	return DmverityOptions{
		Format0: s.HashType == 0, Hash: h,
		DataBlockSize: int(s.DataBlockSize), HashBlockSize: int(s.HashBlockSize),
		Salt: bytes.Clone(s.Salt), DataBlocks: int64(s.DataBlocks), UUID: s.UUID,
	}, nil
}

// ReadDmveritySuperblock reads and parses the superblock at offset.
func ReadDmveritySuperblock(hash io.ReaderAt, offset int64) (DmveritySuperblock, error) {
	b := make([]byte, dmveritySuperblockSize)
	if _, err := hash.ReadAt(b, offset); err != nil {
		if errors.Is(err, io.EOF) {
			return DmveritySuperblock{}, fmt.Errorf("%w: hash device too short for a dm-verity superblock at byte %d", errs.ErrCorrupt, offset)
		}
		return DmveritySuperblock{}, fmt.Errorf("merkle: reading dm-verity superblock: %w", err)
	}
	return ParseDmveritySuperblock(b)
}

// DmverityVerifier checks data blocks against a trusted root hash, reading
// only the hash blocks on each block's path from the hash device and
// checking them top-down (the root first), so no unverified hash is ever
// trusted. It holds no mutable state and is safe for concurrent use if the
// hash device's ReadAt is.
type DmverityVerifier struct {
	v    *dmverity
	hash io.ReaderAt
	root []byte
}

// NewDmverityVerifier returns a verifier for a hash device made with opts.
// opts.DataBlocks must be set (it is when the options come from a
// superblock), or dataSize gives it as in DmverityFormat.
func NewDmverityVerifier(hash io.ReaderAt, root []byte, opts DmverityOptions, dataSize int64) (*DmverityVerifier, error) {
	v, err := opts.params(dataSize)
	if err != nil {
		return nil, err
	}
	if len(root) != v.dsize {
		return nil, fmt.Errorf("merkle: dm-verity root hash is %d bytes, %s digests are %d", len(root), v.name, v.dsize)
	}
	return &DmverityVerifier{v: v, hash: hash, root: bytes.Clone(root)}, nil
}

// Layout returns the hash device geometry.
func (dv *DmverityVerifier) Layout() DmverityLayout { return dv.v.layout }

// pathCache remembers the last verified hash block of each level, so that
// consecutive blocks share the reads and hashes of their common path.
type pathCache struct {
	idx  []int64
	blks [][]byte
}

// VerifyBlocks checks data, consecutive whole data blocks starting at block
// first. A mismatch is an ErrIntegrity naming the data block or hash block.
func (dv *DmverityVerifier) VerifyBlocks(first int64, data []byte) error {
	v := dv.v
	dbs := v.DataBlockSize
	if len(data)%dbs != 0 || first < 0 || first+int64(len(data)/dbs) > v.layout.DataBlocks {
		return fmt.Errorf("merkle: %d bytes at data block %d are not whole blocks within the %d data blocks", len(data), first, v.layout.DataBlocks)
	}
	h := v.hasher()
	c := &pathCache{idx: make([]int64, v.layout.Levels), blks: make([][]byte, v.layout.Levels)}
	for i := range c.idx {
		c.idx[i] = -1
	}
	for blk := first; len(data) > 0; blk++ {
		var want []byte
		if v.layout.Levels == 0 {
			want = dv.root
		} else {
			hb, err := dv.hashBlock(h, c, 0, blk>>v.bits)
			if err != nil {
				return err
			}
			s := int(blk&(1<<v.bits-1)) * v.slot
			want = hb[s : s+v.dsize]
		}
		// Hash only now: the hasher's output buffer is reused by hashBlock.
		if d := h.block(data[:dbs]); !bytes.Equal(d, want) {
			return fmt.Errorf("%w: dm-verity data block %d (bytes %d..%d) does not match its hash", ErrIntegrity, blk, blk*int64(dbs), (blk+1)*int64(dbs))
		}
		data = data[dbs:]
	}
	return nil
}

// hashBlock returns the verified block idx of level lv, verifying the path
// above it first.
func (dv *DmverityVerifier) hashBlock(h *dmverityHasher, c *pathCache, lv int, idx int64) ([]byte, error) {
	v := dv.v
	if c.idx[lv] == idx {
		return c.blks[lv], nil
	}
	var want []byte
	if lv == v.layout.Levels-1 {
		want = dv.root
	} else {
		parent, err := dv.hashBlock(h, c, lv+1, idx>>v.bits)
		if err != nil {
			return nil, err
		}
		s := int(idx&(1<<v.bits-1)) * v.slot
		want = parent[s : s+v.dsize]
	}
	if c.blks[lv] == nil {
		c.blks[lv] = make([]byte, v.HashBlockSize)
	}
	c.idx[lv] = -1
	blk := c.blks[lv]
	off := (v.layout.levelStart[lv] + idx) * int64(v.HashBlockSize)
	if _, err := dv.hash.ReadAt(blk, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: dm-verity hash device ends before hash block at byte %d", ErrIntegrity, off)
		}
		return nil, fmt.Errorf("merkle: reading dm-verity hash block at byte %d: %w", off, err)
	}
	if !bytes.Equal(h.block(blk), want) {
		if lv == v.layout.Levels-1 {
			return nil, fmt.Errorf("%w: dm-verity top hash block at byte %d does not match the root hash", ErrIntegrity, off)
		}
		return nil, fmt.Errorf("%w: dm-verity hash block at byte %d (level %d, block %d) does not match its hash", ErrIntegrity, off, lv, idx)
	}
	c.idx[lv] = idx
	return blk, nil
}

// DmverityVerify checks count data blocks starting at block first (count
// < 0: through the last) of data against the trusted root, reading hash
// blocks from hash. With a superblock (opts.NoSuperblock false) its
// parameters are read at opts.HashOffset and must agree with any non-zero
// parameter in opts; the root hash is never taken from the device.
func DmverityVerify(ctx context.Context, data io.ReaderAt, dataSize int64, hash io.ReaderAt, root []byte, opts DmverityOptions, first, count int64) error {
	if !opts.NoSuperblock {
		var err error
		if opts, err = DmverityOptionsFromDevice(hash, opts); err != nil {
			return err
		}
	}
	dv, err := NewDmverityVerifier(hash, root, opts, dataSize)
	if err != nil {
		return err
	}
	n := dv.v.layout.DataBlocks
	if count < 0 {
		count = n - first
	}
	if first < 0 || count < 0 || first+count > n {
		return fmt.Errorf("merkle: data blocks %d..%d out of range (%d data blocks)", first, first+count, n)
	}
	dbs := int64(dv.v.DataBlockSize)
	buf := make([]byte, max(dbs, 1<<20))
	for blk := first; blk < first+count; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(int64(len(buf))/dbs, first+count-blk)
		chunk := buf[:k*dbs]
		if _, err := data.ReadAt(chunk, blk*dbs); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("merkle: reading data block %d: %w", blk, err)
		}
		if err := dv.VerifyBlocks(blk, chunk); err != nil {
			return err
		}
		blk += k
	}
	return nil
}

// DmverityOptionsFromDevice reads the superblock at opts.HashOffset and
// returns its parameters, checking them against the non-zero ones in opts
// (a mismatch is an error: the caller expected a different device).
func DmverityOptionsFromDevice(hash io.ReaderAt, opts DmverityOptions) (DmverityOptions, error) {
	sb, err := ReadDmveritySuperblock(hash, opts.HashOffset)
	if err != nil {
		return opts, err
	}
	got, err := sb.Options()
	if err != nil {
		return opts, err
	}
	mismatch := func(what string, a, b any) error {
		return fmt.Errorf("%w: dm-verity superblock has %s %v, expected %v", errs.ErrCorrupt, what, a, b)
	}
	switch {
	case opts.Hash != 0 && opts.Hash != got.Hash:
		return opts, mismatch("hash", got.Hash, opts.Hash)
	case opts.DataBlockSize != 0 && opts.DataBlockSize != got.DataBlockSize:
		return opts, mismatch("data block size", got.DataBlockSize, opts.DataBlockSize)
	case opts.HashBlockSize != 0 && opts.HashBlockSize != got.HashBlockSize:
		return opts, mismatch("hash block size", got.HashBlockSize, opts.HashBlockSize)
	case opts.DataBlocks != 0 && opts.DataBlocks != got.DataBlocks:
		return opts, mismatch("data blocks", got.DataBlocks, opts.DataBlocks)
	case opts.Format0 && !got.Format0:
		return opts, mismatch("format", 1, 0)
	case opts.Salt != nil && !bytes.Equal(opts.Salt, got.Salt):
		return opts, mismatch("salt", fmt.Sprintf("%x", got.Salt), fmt.Sprintf("%x", opts.Salt))
	}
	got.HashOffset = opts.HashOffset
	return got, nil
}
