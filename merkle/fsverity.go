package merkle

import (
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"
	"runtime"
	"sync"

	"github.com/sealfs/sealfs/errs"
)

// FsverityOptions are the parameters of an fs-verity file digest, as
// `fsverity digest` and FS_IOC_ENABLE_VERITY take them. The zero value is the
// default: SHA-256, 4096-byte blocks, no salt.
type FsverityOptions struct {
	// Hash is crypto.SHA256 (fs-verity algorithm 1, the default when 0) or
	// crypto.SHA512 (algorithm 2).
	Hash crypto.Hash
	// BlockSize is the Merkle tree block size: a power of two from 1024 to
	// 65536 (0 means 4096). Kernels before 6.3 accept only the page size.
	BlockSize int
	// Salt is prepended to every hashed block; at most 32 bytes.
	Salt []byte
}

const fsverityDescriptorSize = 256

// fsverityParams are validated options.
type fsverityParams struct {
	alg       uint8
	newHash   func() hash.Hash
	size      int // digest size
	blockSize int
	logBlock  uint8
	salt      []byte
	padSalt   []byte // salt zero-padded to the hash's compression block size
}

func (o FsverityOptions) params() (*fsverityParams, error) {
	p := &fsverityParams{blockSize: o.BlockSize, salt: o.Salt}
	if p.blockSize == 0 {
		p.blockSize = 4096
	}
	var compress int
	switch o.Hash {
	case 0, crypto.SHA256:
		p.alg, p.newHash, p.size, compress = 1, sha256.New, sha256.Size, sha256.BlockSize
	case crypto.SHA512:
		p.alg, p.newHash, p.size, compress = 2, sha512.New, sha512.Size, sha512.BlockSize
	default:
		return nil, fmt.Errorf("%w: fs-verity hash %v (want SHA-256 or SHA-512)", errs.ErrUnsupportedAlgorithm, o.Hash)
	}
	// fsverity-utils accepts 1 KiB to 64 KiB (and block_size >= 2 digests,
	// which these bounds imply).
	if p.blockSize < 1024 || p.blockSize > 65536 || p.blockSize&(p.blockSize-1) != 0 {
		return nil, fmt.Errorf("merkle: fs-verity block size %d: want a power of two from 1024 to 65536", p.blockSize)
	}
	p.logBlock = uint8(bits.TrailingZeros(uint(p.blockSize)))
	if len(o.Salt) > 32 {
		return nil, fmt.Errorf("merkle: fs-verity salt is %d bytes, at most 32 allowed", len(o.Salt))
	}
	if len(o.Salt) > 0 {
		// The kernel pads the salt to the compression block so that the
		// salted prefix can be precomputed once; the digest depends on it.
		p.padSalt = make([]byte, len(o.Salt)+padTo(len(o.Salt), compress))
		copy(p.padSalt, o.Salt)
	}
	return p, nil
}

// fsverityTree hashes blocks into levels, keeping one pending block per
// level, the way fsverity-utils' libfsverity_compute_digest does.
type fsverityTree struct {
	p      *fsverityParams
	h      hash.Hash
	sum    []byte
	zeros  []byte
	levels [][]byte // pending hash block per level, filled up to blockSize
}

func (t *fsverityTree) hashBlock(b []byte) []byte {
	t.h.Reset()
	t.h.Write(t.p.padSalt)
	t.h.Write(b)
	if len(b) < t.p.blockSize {
		t.h.Write(t.zeros[:t.p.blockSize-len(b)])
	}
	return t.h.Sum(t.sum[:0])
}

// add appends digest d to level l, hashing the level's block into level l+1
// when it fills up.
func (t *fsverityTree) add(l int, d []byte) {
	t.levels[l] = append(t.levels[l], d...)
	if len(t.levels[l]) == t.p.blockSize {
		up := t.hashBlock(t.levels[l])
		t.levels[l] = t.levels[l][:0]
		t.add(l+1, up)
	}
}

// FsverityDigest returns the fs-verity file digest of the size bytes read
// from r: the hash of the 256-byte fsverity_descriptor, exactly what
// `fsverity digest` prints and FS_IOC_MEASURE_VERITY returns. It reads
// exactly size bytes; fewer is io.ErrUnexpectedEOF. Memory is one block per
// tree level.
func FsverityDigest(r io.Reader, size int64, opts FsverityOptions) ([]byte, error) {
	p, err := opts.params()
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("merkle: negative file size %d", size)
	}
	root, err := fsverityRoot(r, size, p)
	if err != nil {
		return nil, err
	}
	desc := fsverityDescriptor(p, size, root)
	h := p.newHash()
	h.Write(desc[:])
	return h.Sum(nil), nil
}

// fsverityDescriptor lays out struct fsverity_descriptor; the signature size
// field is 0, as it must be when the digest is computed.
func fsverityDescriptor(p *fsverityParams, size int64, root []byte) [fsverityDescriptorSize]byte {
	var d [fsverityDescriptorSize]byte
	d[0] = 1 // version
	d[1] = p.alg
	d[2] = p.logBlock
	d[3] = uint8(len(p.salt))
	binary.LittleEndian.PutUint64(d[8:16], uint64(size))
	copy(d[16:80], root)
	copy(d[80:112], p.salt)
	return d
}

// fsverityRoot returns the Merkle tree root: all zeros for an empty file,
// the hash of the single block for a one-block file, else the hash of the
// single block at the top level.
func fsverityRoot(r io.Reader, size int64, p *fsverityParams) ([]byte, error) {
	if size == 0 {
		return make([]byte, p.size), nil
	}
	nblocks := ceilDiv(size, int64(p.blockSize))
	perBlock := int64(p.blockSize / p.size)
	levels := 0
	for n := nblocks; n > 1; n = ceilDiv(n, perBlock) {
		levels++
	}
	t := &fsverityTree{p: p, h: p.newHash(), sum: make([]byte, 0, p.size), zeros: make([]byte, p.blockSize)}
	t.levels = make([][]byte, levels+1)
	for i := range t.levels {
		t.levels[i] = make([]byte, 0, p.blockSize)
	}
	// Read in large chunks; hash the data blocks of a chunk in parallel
	// (they are independent), then feed their digests to the tree in order.
	// Small inputs (image chunks) get a buffer of their own size: clearing
	// a 4 MiB buffer per 64 KiB chunk cost more than the hashing.
	buf := make([]byte, min(int64(max(p.blockSize, 4<<20)), nblocks*int64(p.blockSize)))
	digests := make([]byte, len(buf)/p.blockSize*p.size)
	workers := runtime.GOMAXPROCS(0)
	hashers := make([]*fsverityTree, workers)
	for i := range hashers {
		hashers[i] = &fsverityTree{p: p, h: p.newHash(), sum: make([]byte, 0, p.size), zeros: t.zeros}
	}
	for left := size; left > 0; {
		n := int(min(int64(len(buf)), left))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("merkle: reading fs-verity data at byte %d: %w", size-left, err)
		}
		left -= int64(n)
		nb := int(ceilDiv(int64(n), int64(p.blockSize)))
		parallelBlocks(hashers, nb, func(h *fsverityTree, i int) {
			blk := buf[i*p.blockSize : min(n, (i+1)*p.blockSize)]
			copy(digests[i*p.size:], h.hashBlock(blk))
		})
		for i := 0; i < nb; i++ {
			t.add(0, digests[i*p.size:(i+1)*p.size])
		}
	}
	// Flush partial blocks from the bottom up; the root is the one digest
	// left in the top level's pending block.
	for l := 0; l < levels; l++ {
		if len(t.levels[l]) > 0 {
			up := t.hashBlock(t.levels[l])
			t.levels[l] = t.levels[l][:0]
			t.add(l+1, up)
		}
	}
	if len(t.levels[levels]) != p.size {
		return nil, fmt.Errorf("merkle: internal error: fs-verity top level holds %d bytes", len(t.levels[levels]))
	}
	return t.levels[levels], nil
}

// parallelBlocks calls fn(hasher, i) for i in [0, n), splitting the range
// into one contiguous share per hasher; each share runs on its own
// goroutine with its own hasher. Small ranges run on the caller's.
func parallelBlocks[H any](hashers []H, n int, fn func(h H, i int)) {
	w := min(len(hashers), n/64)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(hashers[0], i)
		}
		return
	}
	var wg sync.WaitGroup
	per := (n + w - 1) / w
	for g := 0; g < w; g++ {
		lo, hi := g*per, min(n, (g+1)*per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				fn(hashers[g], i)
			}
		}()
	}
	wg.Wait()
}
