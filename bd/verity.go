package bd

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"math/bits"
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

// Verity authenticates every block of a lower device against a Merkle tree
// of HMAC-SHA256 nodes kept on a separate tree device and a trusted root
// hash given at open (docs/format/bd.md defines the tree exactly). A block
// that does not match its leaf, or a tree that does not match the root,
// fails with an error wrapping errs.ErrAuthentication; nothing unverified is
// returned. Writes update the block's leaf and the path to the root on the
// tree device; Root reports the new root, which the caller keeps somewhere
// trusted (see "Crash consistency" in the package documentation).
//
// The whole tree is verified at open and kept in memory (64 bytes per data
// block), so a read costs one HMAC over the block.
//
// Verity is safe for concurrent use: reads run in parallel, writes are
// serialized with each other and with reads.
type Verity struct {
	data, tree blockdev.Device
	bs         int
	n          int64 // data blocks
	levels     int
	key        []byte
	macs       sync.Pool // hash.Hash (HMAC-SHA256 with key)

	mu    sync.RWMutex
	nodes [][]byte // nodes[l] holds level l, NodeSize bytes per node
	root  []byte
	err   error // a failed tree write: the device refuses further writes
}

// VerityOptions configure FormatVerity and OpenVerity; nil means defaults.
type VerityOptions struct {
	// BlockSize is 512, 1024, 2048 or 4096 (0: 4096).
	BlockSize int
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
	tsize, err := TreeSize(data.Size(), bs)
	if err != nil {
		return nil, err
	}
	if tree.Size() < tsize {
		return nil, fmt.Errorf("bd: tree device holds %d bytes, the tree needs %d: %w", tree.Size(), tsize, errs.ErrCorrupt)
	}
	v := &Verity{data: data, tree: tree, bs: bs, n: data.Size() / int64(bs), key: bytes.Clone(macKey)}
	v.levels = treeLevels(v.n)
	v.nodes = make([][]byte, v.levels+1)
	for l := range v.nodes {
		v.nodes[l] = make([]byte, (int64(1)<<(v.levels-l))*NodeSize)
	}
	v.macs.New = func() any { return hmac.New(sha256.New, v.key) }
	return v, nil
}

// FormatVerity computes the tree over the current contents of data, writes
// it (with its header) to tree, syncs tree and returns the device; Root
// gives the root hash to keep. tree must hold TreeSize bytes.
func FormatVerity(ctx context.Context, data, tree blockdev.Device, macKey []byte, opts *VerityOptions) (*Verity, error) {
	v, err := newVerity(data, tree, macKey, opts)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, max(v.bs, 1<<20))
	for b := int64(0); b < v.n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := min(int64(len(buf)/v.bs), v.n-b)
		chunk := buf[:k*int64(v.bs)]
		if err := readUnder(data, chunk, b*int64(v.bs)); err != nil {
			return nil, err
		}
		m := v.mac()
		for i := int64(0); i < k; i++ {
			v.leaf(m, b+i, chunk[i*int64(v.bs):(i+1)*int64(v.bs)], v.nodes[0][(b+i)*NodeSize:])
		}
		v.macs.Put(m)
		b += k
	}
	v.computeInterior()
	if _, err := tree.WriteAt(v.header(), 0); err != nil {
		return nil, fmt.Errorf("bd: writing the tree header: %w", err)
	}
	for l := range v.nodes {
		if _, err := tree.WriteAt(v.nodes[l], v.levelOff(l)); err != nil {
			return nil, fmt.Errorf("bd: writing tree level %d: %w", l, err)
		}
	}
	if err := tree.Sync(); err != nil {
		return nil, fmt.Errorf("bd: syncing the tree: %w", err)
	}
	return v, nil
}

// OpenVerity opens a device formatted by FormatVerity. It reads the tree's
// leaves, recomputes the interior nodes and compares the result with the
// trusted root: a mismatch (a tampered or rolled-back tree, or a tree ahead
// of or behind root after a crash) fails with errs.ErrAuthentication. The
// interior nodes stored on the tree device are not trusted or needed; Check
// reports any that disagree.
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
	if err := readUnder(tree, v.nodes[0], v.levelOff(0)); err != nil {
		return nil, err
	}
	v.computeInterior()
	if !hmac.Equal(v.root, root) {
		return nil, fmt.Errorf("bd: verity tree does not match the trusted root hash (tampered, rolled back, or out of step after a crash): %w", errs.ErrAuthentication)
	}
	return v, nil
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

// levelOff is the byte offset of level l on the tree device.
func (v *Verity) levelOff(l int) int64 {
	off := int64(treeHeaderSize)
	for i := range l {
		off += (int64(1) << (v.levels - i)) * NodeSize
	}
	return off
}

func (v *Verity) mac() hash.Hash {
	m := v.macs.Get().(hash.Hash)
	m.Reset()
	return m
}

// leaf writes HMAC(K, 0x00 || u64le(i) || block) to out.
func (v *Verity) leaf(m hash.Hash, i int64, block, out []byte) {
	var pre [9]byte
	pre[0] = tagLeaf
	binary.LittleEndian.PutUint64(pre[1:], uint64(i))
	m.Reset()
	m.Write(pre[:])
	m.Write(block)
	m.Sum(out[:0])
}

// interior writes HMAC(K, 0x01 || left || right) to out.
func interior(m hash.Hash, left, right, out []byte) {
	m.Reset()
	m.Write([]byte{tagInterior})
	m.Write(left)
	m.Write(right)
	m.Sum(out[:0])
}

// rootOf returns HMAC(K, "sealfs-bd-verity-root-v1" || u32le(bs) || u64le(n) || top).
func (v *Verity) rootOf(m hash.Hash) []byte {
	var b [12]byte
	binary.LittleEndian.PutUint32(b[:], uint32(v.bs))
	binary.LittleEndian.PutUint64(b[4:], uint64(v.n))
	m.Reset()
	m.Write([]byte(rootLabel))
	m.Write(b[:])
	m.Write(v.nodes[v.levels])
	return m.Sum(nil)
}

// computeInterior recomputes every interior node and the root from the
// leaves. Leaves past the last data block are padding: NodeSize zero bytes.
func (v *Verity) computeInterior() {
	clear(v.nodes[0][v.n*NodeSize:])
	m := v.mac()
	defer v.macs.Put(m)
	for l := 1; l <= v.levels; l++ {
		below, cur := v.nodes[l-1], v.nodes[l]
		for j := 0; j < len(cur); j += NodeSize {
			interior(m, below[2*j:2*j+NodeSize], below[2*j+NodeSize:2*j+2*NodeSize], cur[j:j+NodeSize])
		}
	}
	v.root = v.rootOf(m)
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
	first := off / int64(v.bs)
	for i := 0; i < n; i += v.bs {
		b := first + int64(i/v.bs)
		v.leaf(m, b, p[i:i+v.bs], got[:])
		if !hmac.Equal(got[:], v.nodes[0][b*NodeSize:(b+1)*NodeSize]) {
			clear(p[i:])
			return i, fmt.Errorf("bd: block %d (bytes %d..%d) does not match its verity leaf: %w",
				b, b*int64(v.bs), (b+1)*int64(v.bs), errs.ErrAuthentication)
		}
	}
	return n, eofIf(n < len(p))
}

// WriteAt implements blockdev.Device for whole blocks. It writes the data,
// then the changed leaves and the paths above them (level by level, one
// write per level), and updates the root. The write does not return until
// the tree device has the new nodes; durability needs Sync as usual. If
// writing the tree fails, the device fails every later write with that
// error (reads keep being verified against the in-memory tree).
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
	m := v.mac()
	defer v.macs.Put(m)
	for i := int64(0); i < count; i++ {
		v.leaf(m, first+i, p[i*int64(v.bs):(i+1)*int64(v.bs)], leaves[i*NodeSize:])
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	if _, err := v.data.WriteAt(p, off); err != nil {
		return 0, err
	}
	copy(v.nodes[0][first*NodeSize:], leaves)
	lo, hi := first, first+count // [lo, hi) changed at the current level
	for l := 0; ; l++ {
		if _, err := v.tree.WriteAt(v.nodes[l][lo*NodeSize:hi*NodeSize], v.levelOff(l)+lo*NodeSize); err != nil {
			v.err = fmt.Errorf("bd: verity tree write failed, device is now read-only until reopened: %w", err)
			// The in-memory tree already has the new leaves: finish it so
			// reads stay consistent with the data just written.
			v.computeInterior()
			return 0, err
		}
		if l == v.levels {
			break
		}
		lo, hi = lo/2, (hi+1)/2
		below, cur := v.nodes[l], v.nodes[l+1]
		for j := lo; j < hi; j++ {
			interior(m, below[2*j*NodeSize:(2*j+1)*NodeSize], below[(2*j+1)*NodeSize:(2*j+2)*NodeSize], cur[j*NodeSize:(j+1)*NodeSize])
		}
	}
	v.root = v.rootOf(m)
	return len(p), nil
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
func (v *Verity) Check(ctx context.Context, progress func(done, total uint64)) (CheckReport, error) {
	r := CheckReport{Blocks: v.n}
	buf := make([]byte, max(v.bs, 1<<20))
	for b := int64(0); b < v.n; {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		k := min(int64(len(buf)/v.bs), v.n-b)
		chunk := buf[:k*int64(v.bs)]
		n, err := v.ReadAt(chunk, b*int64(v.bs))
		if err != nil && !errorsIsAuth(err) {
			return r, err
		}
		if err != nil {
			bad := b + int64(n/v.bs)
			r.BadBlocks = append(r.BadBlocks, bad)
			b = bad + 1
		} else {
			b += k
		}
		if progress != nil {
			progress(uint64(b), uint64(v.n))
		}
	}
	v.mu.RLock()
	for l := 1; l <= v.levels; l++ {
		stored := make([]byte, len(v.nodes[l]))
		if err := readUnder(v.tree, stored, v.levelOff(l)); err != nil {
			v.mu.RUnlock()
			return r, err
		}
		for j := 0; j < len(stored); j += NodeSize {
			if !bytes.Equal(stored[j:j+NodeSize], v.nodes[l][j:j+NodeSize]) {
				r.BadNodes++
			}
		}
	}
	v.mu.RUnlock()
	if len(r.BadBlocks) > 0 || r.BadNodes > 0 {
		return r, fmt.Errorf("bd: %d of %d blocks and %d tree nodes failed verification: %w", len(r.BadBlocks), r.Blocks, r.BadNodes, errs.ErrAuthentication)
	}
	return r, nil
}
