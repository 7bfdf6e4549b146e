package blob

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/sealfs/sealfs/merkle"
)

const blockSize = merkle.FuchsiaBlockSize

// Blob is an open, installed blob. Every byte it returns was verified
// against the stored Merkle tree, which was verified against the name when
// the blob was opened; each read verifies the 8 KiB blocks it touches.
//
// ReadAt and Size are safe for concurrent use. Read and Seek share one
// offset and are serialized with each other.
type Blob struct {
	f    *os.File
	name merkle.Digest
	size int64
	v    *merkle.FuchsiaVerifier

	mu       sync.Mutex // guards the cache and closed
	closed   bool
	cacheIdx int64      // block index of cache; -1 when empty
	cache    []byte     // the last verified block (a copy)
	posMu    sync.Mutex // guards pos; held for a whole Read or Seek
	pos      int64
}

var (
	_ io.ReaderAt = (*Blob)(nil)
	_ io.Reader   = (*Blob)(nil)
	_ io.Seeker   = (*Blob)(nil)
	_ io.Closer   = (*Blob)(nil)
)

// Open opens an installed blob for reading. The stored tree is checked
// against the name first. Errors: fs.ErrNotExist if it is not installed;
// ErrIntegrity if its header or tree was altered.
func (s *Store) Open(name merkle.Digest) (*Blob, error) {
	f, err := os.Open(s.path(name))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", name, unwrapPath(err))
	}
	b, err := openBlob(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// openBlob reads the header and checks the tree against the name. Its
// errors name the blob.
func openBlob(f *os.File, name merkle.Digest) (*Blob, error) {
	h, err := readHeader(f)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", name, err)
	}
	// The tree is checked whole here, streamed; afterwards only its levels
	// above the data block hashes stay in memory (see merkle).
	tree := io.NewSectionReader(f, headerSize+h.size, h.treeSize)
	v, err := merkle.NewFuchsiaVerifierAt(name, h.size, tree, h.treeSize)
	if err != nil {
		return nil, err // names the blob
	}
	return &Blob{f: f, name: name, size: h.size, v: v, cacheIdx: -1}, nil
}

// Name returns the blob's name.
func (b *Blob) Name() merkle.Digest { return b.name }

// Size returns the blob's size in bytes.
func (b *Blob) Size() int64 { return b.size }

// Close closes the blob. Reads after Close fail with ErrClosed.
func (b *Blob) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("blob %s: %w", b.name, ErrClosed)
	}
	b.closed = true
	b.cache = nil
	return b.f.Close()
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt. The blocks the range
// touches are verified before any byte is copied to p; if one fails, ReadAt
// returns 0 and an error matching ErrIntegrity, and p holds no unverified
// bytes.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: negative offset %d: %w", b.name, off, fs.ErrInvalid)
	}
	if off >= b.size {
		if len(p) == 0 && off == b.size {
			return 0, nil
		}
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), b.size)
	n := int(end - off)
	if n == 0 {
		return 0, nil
	}
	first, last := off/blockSize, (end-1)/blockSize

	// The first block from the cache: sequential reads with buffers that
	// are not block-aligned then hash every block once.
	done := 0
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, fmt.Errorf("blob %s: %w", b.name, ErrClosed)
	}
	if b.cacheIdx == first {
		c := b.cache[off-first*blockSize:]
		done = copy(p[:n], c)
	}
	b.mu.Unlock()
	if done == n {
		return n, b.eof(n, len(p))
	}
	if done > 0 {
		first++
	}
	blkOff := first * blockSize
	blkEnd := min((last+1)*blockSize, b.size)
	// Whole blocks straight into p when they line up with it (the common
	// case of block-aligned reads); otherwise through a buffer.
	dst := p[done:n]
	var buf []byte
	if blkOff == off+int64(done) && blkEnd == end {
		buf = dst
	} else {
		buf = make([]byte, blkEnd-blkOff)
	}
	if _, err := b.f.ReadAt(buf, headerSize+blkOff); err != nil {
		clear(p[:n])
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("blob file truncated: %w", ErrIntegrity)
		}
		return 0, fmt.Errorf("blob %s: %w", b.name, err)
	}
	if err := b.verifyBlocks(first, buf); err != nil {
		clear(p[:n])
		return 0, err // names the blob and the block
	}
	if &buf[0] != &dst[0] {
		copy(dst, buf[off+int64(done)-blkOff:])
	}
	// Keep the last block for the next read.
	lastOff := last*blockSize - blkOff
	b.mu.Lock()
	if !b.closed {
		b.cache = append(b.cache[:0], buf[lastOff:]...)
		b.cacheIdx = last
	}
	b.mu.Unlock()
	return n, b.eof(n, len(p))
}

// eof is ReadAt's error for a read of n of want bytes.
func (b *Blob) eof(n, want int) error {
	if n < want {
		return io.EOF
	}
	return nil
}

// verifyBlocks checks whole blocks starting at block first.
func (b *Blob) verifyBlocks(first int64, data []byte) error {
	return b.v.VerifyBlocks(first, data)
}

// Read reads from the current offset, as io.Reader.
func (b *Blob) Read(p []byte) (int, error) {
	b.posMu.Lock()
	defer b.posMu.Unlock()
	if b.pos >= b.size {
		if b.isClosed() {
			return 0, fmt.Errorf("blob %s: %w", b.name, ErrClosed)
		}
		return 0, io.EOF
	}
	n, err := b.ReadAt(p, b.pos)
	b.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (b *Blob) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Seek sets the offset for the next Read, as io.Seeker.
func (b *Blob) Seek(offset int64, whence int) (int64, error) {
	b.posMu.Lock()
	defer b.posMu.Unlock()
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = b.pos + offset
	case io.SeekEnd:
		abs = b.size + offset
	default:
		return 0, fmt.Errorf("blob %s: invalid whence %d: %w", b.name, whence, fs.ErrInvalid)
	}
	if abs < 0 {
		return 0, fmt.Errorf("blob %s: negative position %d: %w", b.name, abs, fs.ErrInvalid)
	}
	b.pos = abs
	return abs, nil
}
