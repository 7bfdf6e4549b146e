package merkle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
)

// FuchsiaBlockSize is the node size of the Fuchsia blob Merkle tree: data
// blocks and hash blocks are 8 KiB, so a hash block holds 256 digests.
const FuchsiaBlockSize = 8192

const (
	fuchsiaDigestSize    = sha256.Size
	fuchsiaHashesPerNode = FuchsiaBlockSize / fuchsiaDigestSize
	fuchsiaIdentitySize  = 12
)

// Digest is a SHA-256 Merkle root; its String form names a blob.
type Digest [32]byte

// String returns the 64 lowercase hex characters Fuchsia uses as a blob name.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ParseDigest parses a blob name. Only the canonical form is accepted
// (exactly 64 lowercase hex characters) so that one blob has one name.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*len(d) {
		return d, fmt.Errorf("%w %q: want %d hex characters, got %d", ErrInvalidName, s, 2*len(d), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return d, fmt.Errorf("%w %q: character %d (%q) is not a lowercase hex digit", ErrInvalidName, s, i, c)
		}
	}
	hex.Decode(d[:], []byte(s)) //nolint:errcheck // checked above
	return d, nil
}

// fuchsiaHasher hashes nodes with their 12-byte identity prefix:
// u64le(offset | level) || u32le(length). The offset counts bytes within the
// level, and the level sits in the low bits (offsets are multiples of 8192).
type fuchsiaHasher struct {
	h   hash.Hash
	buf [fuchsiaIdentitySize]byte
	sum []byte
}

func newFuchsiaHasher() *fuchsiaHasher {
	return &fuchsiaHasher{h: sha256.New(), sum: make([]byte, 0, sha256.Size)}
}

var fuchsiaZeros [FuchsiaBlockSize]byte

// node returns the digest of one node. length is the value of the identity's
// length field; the node's bytes p are zero-padded to 8192, except that the
// empty input (length 0) is hashed without padding, as every Fuchsia
// implementation does.
func (f *fuchsiaHasher) node(level int, offset int64, length int, p []byte) Digest {
	binary.LittleEndian.PutUint64(f.buf[0:8], uint64(offset)|uint64(level))
	binary.LittleEndian.PutUint32(f.buf[8:12], uint32(length))
	f.h.Reset()
	f.h.Write(f.buf[:])
	f.h.Write(p)
	if length != 0 && len(p) < FuchsiaBlockSize {
		f.h.Write(fuchsiaZeros[:FuchsiaBlockSize-len(p)])
	}
	var d Digest
	copy(d[:], f.h.Sum(f.sum[:0]))
	return d
}

// leaf hashes data block i (level 0, length = the real byte count).
func (f *fuchsiaHasher) leaf(i int64, p []byte) Digest {
	return f.node(0, i*FuchsiaBlockSize, len(p), p)
}

// interior hashes hash block j of level (>= 1): the length field is always
// 8192, even for a partly filled last block, which is zero-padded.
func (f *fuchsiaHasher) interior(level int, j int64, p []byte) Digest {
	return f.node(level, j*FuchsiaBlockSize, FuchsiaBlockSize, p)
}

// FuchsiaRoot returns the Merkle root of data: its blobfs/fxblob name.
func FuchsiaRoot(data []byte) Digest {
	st := NewFuchsiaStream(io.Discard)
	st.Write(data) //nolint:errcheck // io.Discard never fails
	root, _, _ := st.Finish()
	return root
}

// FuchsiaTreeSize returns the size of the tree Finish returns for a blob of
// dataSize bytes: every level below the root, each zero-padded to whole
// 8 KiB blocks. It is 0 when the blob fits in one block (the root is then
// the leaf hash itself).
func FuchsiaTreeSize(dataSize int64) int64 {
	if dataSize < 0 {
		return 0
	}
	var size int64
	for n := fuchsiaBlocks(dataSize); n > 1; {
		n = ceilDiv(n, fuchsiaHashesPerNode)
		size += n * FuchsiaBlockSize
	}
	return size
}

// fuchsiaBlocks is the number of level-0 hashes: one per data block, and one
// for the empty blob.
func fuchsiaBlocks(dataSize int64) int64 { return max(1, ceilDiv(dataSize, FuchsiaBlockSize)) }

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// FuchsiaStream computes the Fuchsia Merkle root and tree of a stream in
// memory that does not grow with the data's level-0 hashes: those (32
// bytes per 8 KiB block, 1/256 of the data) are written to an io.Writer as
// they are computed, and only the levels above them (1/65536 of the data)
// and one partial node per level are kept. A root-only computation passes
// io.Discard; the blob store spills the level-0 hashes to a file and
// writes the tree from it. The zero value is not usable; call
// NewFuchsiaStream. Not safe for concurrent use.
type FuchsiaStream struct {
	h      *fuchsiaHasher
	block  []byte // the current partial data block
	size   int64
	leaves io.Writer
	// pend[l] holds the hashes of level l's current, not yet full node;
	// count[l] counts level l's hashes so far; upper[l] (l >= 1) keeps all
	// of level l's hashes.
	pend  [][]byte
	count []int64
	upper [][]byte
	out   Digest // what is written to leaves (a field, so it does not escape per call)
	err   error
}

// NewFuchsiaStream returns a stream builder that writes the level-0
// hashes to leaves.
func NewFuchsiaStream(leaves io.Writer) *FuchsiaStream {
	return &FuchsiaStream{h: newFuchsiaHasher(), block: make([]byte, 0, FuchsiaBlockSize), leaves: leaves}
}

// Write adds p to the blob. It fails only if writing to leaves failed
// (then, and ever after, with that error).
func (s *FuchsiaStream) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	s.size += int64(n)
	if len(s.block) > 0 {
		k := copy(s.block[len(s.block):FuchsiaBlockSize], p)
		s.block = s.block[:len(s.block)+k]
		p = p[k:]
		if len(s.block) == FuchsiaBlockSize && len(p) > 0 {
			s.addLeaf(s.block)
			s.block = s.block[:0]
		}
	}
	// Whole blocks straight from p, without copying. A block is only hashed
	// once more data follows: the final block may be full or short, and
	// which one is known only at Finish (the empty blob is special).
	for len(p) > FuchsiaBlockSize {
		s.addLeaf(p[:FuchsiaBlockSize])
		p = p[FuchsiaBlockSize:]
	}
	if len(p) > 0 {
		if len(s.block) == FuchsiaBlockSize {
			s.addLeaf(s.block)
			s.block = s.block[:0]
		}
		s.block = append(s.block, p...)
	}
	if s.err != nil {
		return n, s.err
	}
	return n, nil
}

func (s *FuchsiaStream) addLeaf(p []byte) {
	d := s.h.leaf(s.levelCount(0), p)
	s.add(0, d)
}

func (s *FuchsiaStream) levelCount(l int) int64 {
	if l < len(s.count) {
		return s.count[l]
	}
	return 0
}

// add appends hash d to level l, hashing level l's node into level l+1
// when it fills.
func (s *FuchsiaStream) add(l int, d Digest) {
	for len(s.count) <= l {
		s.count = append(s.count, 0)
		s.pend = append(s.pend, make([]byte, 0, FuchsiaBlockSize))
		s.upper = append(s.upper, nil)
	}
	s.count[l]++
	if l == 0 {
		if s.err == nil {
			s.out = d
			if _, err := s.leaves.Write(s.out[:]); err != nil {
				s.err = fmt.Errorf("merkle: writing level-0 hashes: %w", err)
			}
		}
	} else {
		s.upper[l] = append(s.upper[l], d[:]...)
	}
	s.pend[l] = append(s.pend[l], d[:]...)
	if len(s.pend[l]) == FuchsiaBlockSize {
		j := s.count[l]/fuchsiaHashesPerNode - 1
		d := s.h.interior(l+1, j, s.pend[l])
		s.pend[l] = s.pend[l][:0]
		s.add(l+1, d)
	}
}

// Size returns the number of bytes written so far.
func (s *FuchsiaStream) Size() int64 { return s.size }

// Finish returns the root and the levels of the tree above level 0. The
// whole tree (FuchsiaTreeSize bytes, the layout FuchsiaBuilder.Finish
// returns) is the level-0 hashes written to leaves, zero-padded to a
// multiple of 8 KiB, followed by upper; when the blob fits in one block the
// tree is empty, and the one hash written to leaves is the root itself.
// The stream must not be used after Finish.
func (s *FuchsiaStream) Finish() (root Digest, upper []byte, err error) {
	if s.err != nil {
		return root, nil, s.err
	}
	// The last block: short or full, or the empty block of an empty blob.
	s.addLeaf(s.block)
	s.block = s.block[:0]
	if s.err != nil {
		return root, nil, s.err
	}
	for l := 0; ; l++ {
		if s.count[l] == 1 {
			copy(root[:], s.pend[l])
			break
		}
		if len(s.pend[l]) > 0 {
			j := (s.count[l] - 1) / fuchsiaHashesPerNode
			d := s.h.interior(l+1, j, s.pend[l])
			s.pend[l] = s.pend[l][:0]
			s.add(l+1, d)
		}
	}
	for l := 1; l < len(s.upper)-1; l++ {
		upper = append(upper, s.upper[l]...)
		upper = append(upper, fuchsiaZeros[:padTo(len(s.upper[l]), FuchsiaBlockSize)]...)
	}
	return root, upper, nil
}

// FuchsiaBuilder computes the Fuchsia Merkle root and tree of a stream and
// returns the tree in memory: 1/256 of the data (FuchsiaStream keeps less).
// The zero value is not usable; call NewFuchsiaBuilder. Not safe for
// concurrent use.
type FuchsiaBuilder struct {
	leaves bytes.Buffer
	s      *FuchsiaStream
}

// NewFuchsiaBuilder returns a builder for one blob.
func NewFuchsiaBuilder() *FuchsiaBuilder {
	b := &FuchsiaBuilder{}
	b.s = NewFuchsiaStream(&b.leaves)
	return b
}

// Write adds p to the blob. It never fails.
func (b *FuchsiaBuilder) Write(p []byte) (int, error) { return b.s.Write(p) }

// Size returns the number of bytes written so far.
func (b *FuchsiaBuilder) Size() int64 { return b.s.Size() }

// Finish returns the root and the tree. The tree holds every level below
// the root in the layout blobfs stores ("padded" layout): level 0 (the data
// block hashes) first, then level 1 and so on upwards, each level's hash list
// zero-padded to whole 8 KiB blocks; the root itself is not included. The
// tree is empty when the blob fits in one block. The builder must not be
// used after Finish.
func (b *FuchsiaBuilder) Finish() (root Digest, tree []byte) {
	root, upper, _ := b.s.Finish() // writes to a bytes.Buffer never fail
	if b.leaves.Len() == fuchsiaDigestSize {
		return root, nil
	}
	tree = make([]byte, 0, FuchsiaTreeSize(b.s.size))
	tree = append(tree, b.leaves.Bytes()...)
	tree = append(tree, fuchsiaZeros[:padTo(b.leaves.Len(), FuchsiaBlockSize)]...)
	return root, append(tree, upper...)
}

// fuchsiaHashLevel hashes a level's hash list, 256 hashes per node, into the
// hash list of the level above (level l).
func fuchsiaHashLevel(h *fuchsiaHasher, l int, list []byte) []byte {
	next := make([]byte, 0, ceilDiv(int64(len(list)), FuchsiaBlockSize)*fuchsiaDigestSize)
	for j := int64(0); len(list) > 0; j++ {
		n := min(len(list), FuchsiaBlockSize)
		d := h.interior(l, j, list[:n])
		next = append(next, d[:]...)
		list = list[n:]
	}
	return next
}

// padTo returns how many bytes pad n up to a multiple of m.
func padTo(n, m int) int { return (m - n%m) % m }

// FuchsiaVerifier checks blocks of one blob against its trusted root, using
// a tree that was checked against that root when the verifier was made. It
// is safe for concurrent use.
type FuchsiaVerifier struct {
	root    Digest
	size    int64
	nblocks int64
	leaves  []byte // level-0 hashes (verified), 32 bytes per block; nil with tree

	// NewFuchsiaVerifierAt: the level-0 hashes stay on tree and are read
	// back one hash block (256 hashes) at a time, checked against parents,
	// the verified level-1 hashes (the root when there is one hash block).
	tree    io.ReaderAt
	parents []byte
	cache   leafBlockCache
}

// leafBlocksCached is how many verified level-0 hash blocks (each covering
// 2 MiB of data) a NewFuchsiaVerifierAt verifier keeps.
const leafBlocksCached = 16

// leafBlockCache holds recently verified level-0 hash blocks.
type leafBlockCache struct {
	mu     sync.Mutex
	idx    [leafBlocksCached]int64
	blocks [leafBlocksCached][]byte
	next   int // the slot to replace next (round robin)
}

func (c *leafBlockCache) get(j int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, b := range c.blocks {
		if b != nil && c.idx[i] == j {
			return b
		}
	}
	return nil
}

func (c *leafBlockCache) put(j int64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idx[c.next], c.blocks[c.next] = j, b
	c.next = (c.next + 1) % leafBlocksCached
}

// NewFuchsiaVerifier checks tree (in the layout Finish returns) against the
// trusted root for a blob of dataSize bytes and returns a verifier for the
// blob's blocks. A tree of the wrong size, or one that does not hash to the
// root (any flipped bit, padding included), is an ErrIntegrity. For blobs of
// at most one block the tree is empty and the root is the leaf hash itself;
// for the empty blob the root is checked right here. The verifier keeps its
// own copy of the level-0 hashes, so later changes to tree have no effect.
func NewFuchsiaVerifier(root Digest, dataSize int64, tree []byte) (*FuchsiaVerifier, error) {
	v, err := newFuchsiaVerifierAt(root, dataSize, bytes.NewReader(tree), int64(len(tree)))
	if err != nil || v.tree == nil {
		return v, err
	}
	v.leaves = append([]byte(nil), tree[:v.nblocks*fuchsiaDigestSize]...)
	v.tree, v.parents = nil, nil
	return v, nil
}

// NewFuchsiaVerifierAt is NewFuchsiaVerifier for a tree of treeSize bytes
// read from tree, in memory that does not grow with the level-0 hashes: the
// whole tree is streamed and checked against root first (the same checks,
// with the same errors), then only the levels above level 0 (1/65536 of the
// data) are kept, and VerifyBlocks reads the level-0 hashes it needs back
// from tree, one 8 KiB hash block at a time, and checks each against its
// verified parent before use (a hash block altered since is an
// ErrIntegrity for the blocks it covers). tree must stay readable, and
// safe for concurrent ReadAt, while the verifier is used.
func NewFuchsiaVerifierAt(root Digest, dataSize int64, tree io.ReaderAt, treeSize int64) (*FuchsiaVerifier, error) {
	return newFuchsiaVerifierAt(root, dataSize, tree, treeSize)
}

func newFuchsiaVerifierAt(root Digest, dataSize int64, tree io.ReaderAt, treeSize int64) (*FuchsiaVerifier, error) {
	if dataSize < 0 {
		return nil, fmt.Errorf("merkle: negative blob size %d", dataSize)
	}
	if want := FuchsiaTreeSize(dataSize); treeSize != want {
		return nil, fmt.Errorf("%w: Merkle tree of blob %s is %d bytes, want %d for %d data bytes", ErrIntegrity, root, treeSize, want, dataSize)
	}
	v := &FuchsiaVerifier{root: root, size: dataSize, nblocks: fuchsiaBlocks(dataSize)}
	h := newFuchsiaHasher()
	if dataSize == 0 {
		if h.leaf(0, nil) != root {
			return nil, fmt.Errorf("%w: blob %s: the empty blob's root is %s", ErrIntegrity, root, h.leaf(0, nil))
		}
		return v, nil
	}
	if v.nblocks == 1 {
		return v, nil
	}
	// Level 0, streamed: hash each of its hash blocks (padding included)
	// into the level-1 hashes.
	level0 := ceilDiv(v.nblocks, fuchsiaHashesPerNode) * FuchsiaBlockSize
	parents := make([]byte, 0, level0/FuchsiaBlockSize*fuchsiaDigestSize)
	buf := make([]byte, min(level0, 16*FuchsiaBlockSize))
	for off := int64(0); off < level0; {
		chunk := buf[:min(int64(len(buf)), level0-off)]
		if err := readTree(tree, chunk, off, root); err != nil {
			return nil, err
		}
		for i := 0; i < len(chunk); i += FuchsiaBlockSize {
			d := h.interior(1, (off+int64(i))/FuchsiaBlockSize, chunk[i:i+FuchsiaBlockSize])
			parents = append(parents, d[:]...)
		}
		off += int64(len(chunk))
	}
	// The levels above are small: check them in memory. Each stored level
	// is hashed including its zero padding, so every byte of the tree is
	// covered.
	rest := make([]byte, treeSize-level0)
	if err := readTree(tree, rest, level0, root); err != nil {
		return nil, err
	}
	next := parents
	count := ceilDiv(v.nblocks, fuchsiaHashesPerNode)
	for l := 1; ; l++ {
		if count == 1 {
			if Digest(next) != root {
				return nil, fmt.Errorf("%w: Merkle tree of blob %s does not match its root", ErrIntegrity, root)
			}
			break
		}
		n := ceilDiv(count, fuchsiaHashesPerNode) * FuchsiaBlockSize
		stored := rest[:n]
		if string(next) != string(stored[:len(next)]) {
			return nil, fmt.Errorf("%w: Merkle tree of blob %s: level %d does not match level %d", ErrIntegrity, root, l, l-1)
		}
		next = fuchsiaHashLevel(h, l+1, stored)
		rest = rest[n:]
		count = ceilDiv(count, fuchsiaHashesPerNode)
	}
	v.tree, v.parents = tree, parents
	return v, nil
}

// readTree reads len(p) tree bytes at off; a short tree is an ErrIntegrity.
func readTree(tree io.ReaderAt, p []byte, off int64, root Digest) error {
	n, err := tree.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("%w: Merkle tree of blob %s is truncated", ErrIntegrity, root)
	}
	return fmt.Errorf("merkle: reading the tree of blob %s: %w", root, err)
}

// leafBlock returns the verified level-0 hash block j (256 hashes).
func (v *FuchsiaVerifier) leafBlock(h *fuchsiaHasher, j int64) ([]byte, error) {
	if b := v.cache.get(j); b != nil {
		return b, nil
	}
	b := make([]byte, FuchsiaBlockSize)
	if err := readTree(v.tree, b, j*FuchsiaBlockSize, v.root); err != nil {
		return nil, err
	}
	if d := h.interior(1, j, b); string(d[:]) != string(v.parents[j*fuchsiaDigestSize:(j+1)*fuchsiaDigestSize]) {
		return nil, fmt.Errorf("%w: Merkle tree of blob %s: level-0 hash block %d (data blocks %d..%d) was altered after the tree was checked",
			ErrIntegrity, v.root, j, j*fuchsiaHashesPerNode, min((j+1)*fuchsiaHashesPerNode, v.nblocks)-1)
	}
	v.cache.put(j, b)
	return b, nil
}

// Size returns the blob size the verifier was made for.
func (v *FuchsiaVerifier) Size() int64 { return v.size }

// VerifyBlocks checks data, which must be the consecutive 8 KiB blocks of
// the blob starting at block firstBlock (the blob's last block may be
// short, and must then be exactly as long as it is in the blob). Only the
// leaf hashes of those blocks are computed: the tree above them was checked
// once by NewFuchsiaVerifier. A mismatch is an ErrIntegrity naming the first
// bad block; data that does not cover whole blocks is a plain error. Empty
// data checks nothing (except for the empty blob, where it is the blob).
func (v *FuchsiaVerifier) VerifyBlocks(firstBlock int64, data []byte) error {
	if firstBlock < 0 || firstBlock >= v.nblocks {
		return fmt.Errorf("merkle: blob %s: block %d out of range (the blob has %d)", v.root, firstBlock, v.nblocks)
	}
	start := firstBlock * FuchsiaBlockSize
	if int64(len(data)) > v.size-start || (len(data)%FuchsiaBlockSize != 0 && int64(len(data)) != v.size-start) {
		return fmt.Errorf("merkle: blob %s: %d bytes at block %d are not whole blocks of the %d-byte blob", v.root, len(data), firstBlock, v.size)
	}
	h := newFuchsiaHasher()
	if v.size == 0 {
		return nil // the root was checked against the empty blob already
	}
	var hashes []byte // the verified level-0 hash block of block i
	for i := firstBlock; len(data) > 0; i++ {
		n := min(len(data), FuchsiaBlockSize)
		d := h.leaf(i, data[:n])
		var want []byte
		switch {
		case v.nblocks == 1:
			want = v.root[:]
		case v.leaves != nil:
			want = v.leaves[i*fuchsiaDigestSize : (i+1)*fuchsiaDigestSize]
		default:
			k := i % fuchsiaHashesPerNode
			if hashes == nil || k == 0 {
				var err error
				if hashes, err = v.leafBlock(h, i/fuchsiaHashesPerNode); err != nil {
					return err
				}
			}
			want = hashes[k*fuchsiaDigestSize : (k+1)*fuchsiaDigestSize]
		}
		if string(d[:]) != string(want) {
			return fmt.Errorf("%w: blob %s: data block %d (bytes %d..%d) does not match the Merkle tree", ErrIntegrity, v.root, i, i*FuchsiaBlockSize, i*FuchsiaBlockSize+int64(n))
		}
		data = data[n:]
	}
	return nil
}
