package cocoonfs

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"sync"

	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// A file's contents are "encrypted extents": IV | CBC(payload | PKCS#7 |
// zero blocks), spread over the file's extents in order. CBC decrypts any
// cipher block from it and the one before it, and the authentication tree
// authenticates each data block on its own, so a File reads any range
// touching only the data blocks that hold it, and finds the file's length
// by decrypting backwards from the end until it meets the padding.

// readChunk is the ciphertext a sequential read handles at a time: large
// enough for long device reads, small enough that a few in flight stay far
// below any memory budget.
const readChunk = 1 << 20

// File is an open file of an image, read in place: nothing beyond the
// blocks a read touches is loaded, and every byte returned was
// authenticated first. A File follows its inode across commits: after a
// transaction replaces it, reads see the new contents; after one removes
// it, reads fail with fs.ErrNotExist. A File is safe for concurrent use.
type File struct {
	f   *FS
	ino uint64

	mu   sync.Mutex // guards the snapshot and the window below
	snap fileSnapshot
	// window holds the last small read's aligned plaintext window, so that
	// a reader taking a few bytes at a time does not authenticate and
	// decrypt the same data block again for each.
	window    []byte
	windowOff int64
	windowGen uint64
}

// smallRead is the aligned plaintext window a read smaller than it loads
// and keeps.
const smallRead = 32 << 10

// fileSnapshot is a file's location and length in one committed state.
type fileSnapshot struct {
	gen     uint64 // the FS generation it was resolved in
	flags   uint32
	extents []disk.Extent
	ends    []uint64 // ciphertext byte offset where each extent ends
	ctLen   uint64   // ciphertext bytes, IV included
	size    int64    // plaintext bytes
}

// OpenFile opens inode ino for reading. It reads the file's extents and its
// last data blocks (for the length), not its contents.
func (f *FS) OpenFile(ino uint64) (*File, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.failed != nil {
		return nil, f.failed
	}
	r := &File{f: f, ino: ino}
	snap, err := f.resolveFile(ino)
	if err != nil {
		return nil, err
	}
	r.snap = snap
	return r, nil
}

// resolveFile locates ino in the committed state; the caller holds f.mu.
func (f *FS) resolveFile(ino uint64) (fileSnapshot, error) {
	e, err := f.userEntry(ino)
	if err != nil {
		return fileSnapshot{}, err
	}
	exts, _, err := f.entryExtents(e)
	if err != nil {
		return fileSnapshot{}, err
	}
	s := fileSnapshot{gen: f.gen, flags: e.Flags, extents: exts}
	ab := f.layout.AllocBlockSize()
	for _, x := range exts {
		s.ctLen += x.Len * ab
		s.ends = append(s.ends, s.ctLen)
	}
	bs := uint64(f.algs.cipher.BlockSize)
	if s.ctLen < 2*bs || s.ctLen%bs != 0 {
		return fileSnapshot{}, corruptf("inode %d: encrypted extents of %d bytes do not hold an IV and whole cipher blocks", ino, s.ctLen)
	}
	if s.size, err = f.fileLength(ino, &s); err != nil {
		return fileSnapshot{}, fmt.Errorf("inode %d: %w", ino, err)
	}
	return s, nil
}

// begin takes the committed state for reading (the caller releases it with
// r.f.mu.RUnlock) and returns the file's location in it.
func (r *File) begin() (fileSnapshot, error) {
	r.f.mu.RLock()
	if r.f.failed != nil {
		return fileSnapshot{}, r.f.failed
	}
	return r.snapshot()
}

// snapshot returns the file's location in the current committed state,
// resolving it again if a commit happened since; the caller holds f.mu.
func (r *File) snapshot() (fileSnapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap.gen != r.f.gen {
		s, err := r.f.resolveFile(r.ino)
		if err != nil {
			return fileSnapshot{}, err
		}
		r.snap = s
	}
	return r.snap, nil
}

// Stat returns the file's inode number, flags and length.
func (r *File) Stat() (FileInfo, error) {
	s, err := r.begin()
	defer r.f.mu.RUnlock()
	if err != nil {
		return FileInfo{}, err
	}
	return FileInfo{Inode: Inode{Ino: r.ino, Flags: s.flags}, Size: s.size}, nil
}

// Close releases nothing but exists for symmetry with os.File; a File holds
// no resources.
func (r *File) Close() error { return nil }

// readCTInto returns the authenticated ciphertext bytes [from, to) of the
// file. When the range lies in one extent and buf (which may be nil) holds
// its data blocks, the result is a slice of buf, with no copy.
func (f *FS) readCTInto(s *fileSnapshot, from, to uint64, buf []byte) ([]byte, error) {
	if from > to || to > s.ctLen {
		return nil, fmt.Errorf("BUG: ciphertext range %d-%d outside the file's %d bytes", from, to, s.ctLen)
	}
	ab := f.layout.AllocBlockSize()
	if buf != nil {
		i, _ := slices.BinarySearch(s.ends, from+1)
		if i < len(s.ends) && to <= s.ends[i] {
			begin := s.ends[i] - s.extents[i].Len*ab
			lo, hi := from-begin, to-begin
			b, err := f.authReadInto(s.extents[i].Start+lo/ab, (hi+ab-1)/ab-lo/ab, buf)
			if err != nil {
				return nil, err
			}
			return b[lo%ab : lo%ab+(hi-lo)], nil
		}
	}
	out := make([]byte, 0, to-from)
	var begin uint64
	for i, x := range s.extents {
		end := s.ends[i]
		if end <= from || begin >= to {
			begin = end
			continue
		}
		lo, hi := max(from, begin)-begin, min(to, end)-begin // within the extent
		a := x.Start + lo/ab
		n := (hi+ab-1)/ab - lo/ab
		b, err := f.authRead(a, n)
		if err != nil {
			return nil, err
		}
		out = append(out, b[lo%ab:lo%ab+(hi-lo)]...)
		begin = end
	}
	return out, nil
}

// fileLength finds the plaintext length: decrypt cipher blocks backwards
// from the end, past the zero blocks that fill the last allocation block, to
// the PKCS#7 padding. Normally that reads one data block.
func (f *FS) fileLength(ino uint64, s *fileSnapshot) (int64, error) {
	bs := uint64(f.algs.cipher.BlockSize)
	c := f.keys.blockCipher(ino, subdomainData)
	window := max(f.layout.AuthTreeDataBlockSize(), 4*bs)
	// A listing stats every file: decrypt in a pooled buffer rather than
	// allocate the data blocks for each.
	buf := ctBuffers.Get().(*[]byte)
	defer ctBuffers.Put(buf)
	// Each round decrypts ciphertext blocks [from+bs, end), chained by the
	// block at from; the next round ends where this one's chaining block does.
	for end := s.ctLen; ; {
		var from uint64
		if end > window+bs {
			from = (end - window) / bs * bs
		}
		ct, err := f.readCTInto(s, from, end, *buf)
		if err != nil {
			return 0, err
		}
		pt := ct[bs:]
		cipher.NewCBCDecrypter(c, ct[:bs]).CryptBlocks(pt, pt)
		for k := len(pt)/int(bs) - 1; k >= 0; k-- {
			blk := pt[k*int(bs) : (k+1)*int(bs)]
			if isZero(blk) {
				continue
			}
			n := int(blk[bs-1])
			if n == 0 || n > int(bs) {
				return 0, corruptf("invalid padding length %d", n)
			}
			for _, b := range blk[int(bs)-n:] {
				if int(b) != n {
					return 0, corruptf("invalid padding bytes")
				}
			}
			// Plaintext block k here is payload block from/bs+k.
			return int64(from + uint64(k)*bs + bs - uint64(n)), nil
		}
		if from == 0 {
			return 0, corruptf("decrypted entity has no padding")
		}
		end = from + bs
	}
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// ReadAt reads len(p) bytes at off, every byte authenticated. At the end of
// the file it returns io.EOF, as io.ReaderAt requires.
func (r *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: fmt.Sprint(r.ino), Err: fs.ErrInvalid}
	}
	f := r.f
	s, err := r.begin()
	defer f.mu.RUnlock()
	if err != nil {
		return 0, err
	}
	if len(p) < smallRead && off < s.size {
		return r.readSmall(&s, p, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	total := int(min(int64(len(p)), s.size-off))
	// A large read is cut into pieces decrypted on every core; each piece
	// reads and authenticates the cipher block that chains it itself.
	pieces := 1
	if total >= 2*parallelPiece {
		pieces = min(runtime.GOMAXPROCS(0)*2, total/parallelPiece)
	}
	bs := f.algs.cipher.BlockSize
	// Round up twice: a piece count that does not divide total must not
	// leave its last bytes unread.
	per := ((total+pieces-1)/pieces + bs - 1) / bs * bs
	errs := make([]error, pieces)
	parallelN(pieces, func(i int) {
		lo := min(i*per, total)
		hi := min(lo+per, total)
		for n := lo; n < hi; {
			want := min(hi-n, readChunk)
			if _, err := f.readPlain(r.ino, &s, uint64(off)+uint64(n), p[n:n+want]); err != nil {
				errs[i] = err
				return
			}
			n += want
		}
	})
	for i, err := range errs {
		if err != nil {
			return min(i*per, total), fmt.Errorf("inode %d: %w", r.ino, err)
		}
	}
	if total < len(p) {
		return total, io.EOF
	}
	return total, nil
}

// parallelPiece is the least a piece of a parallel ReadAt holds.
const parallelPiece = 128 << 10

// ctBuffers holds buffers for the ciphertext of a piece of a read: a
// chunk, the data blocks around it and the chaining block.
var ctBuffers = sync.Pool{New: func() any {
	b := make([]byte, readChunk+2*64<<10)
	return &b
}}

// readSmall serves a small read from the cached window around off, loading
// the window first if needed; the caller holds f.mu.
func (r *File) readSmall(s *fileSnapshot, p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) && off < s.size {
		if r.windowGen != s.gen || r.window == nil || off < r.windowOff || off >= r.windowOff+int64(len(r.window)) {
			start := off / smallRead * smallRead
			w := make([]byte, min(smallRead, s.size-start))
			if _, err := r.f.readPlain(r.ino, s, uint64(start), w); err != nil {
				r.window = nil
				return n, fmt.Errorf("inode %d: %w", r.ino, err)
			}
			r.window, r.windowOff, r.windowGen = w, start, s.gen
		}
		c := copy(p[n:], r.window[off-r.windowOff:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readPlain decrypts plaintext bytes [off, off+len(p)) into p: it reads the
// cipher blocks holding them and the one before (the CBC chaining value).
func (f *FS) readPlain(ino uint64, s *fileSnapshot, off uint64, p []byte) (int, error) {
	bs := uint64(f.algs.cipher.BlockSize)
	first := off / bs
	last := (off + uint64(len(p)) - 1) / bs
	// Plaintext block k is ciphertext block k+1; ciphertext block k chains it.
	buf := ctBuffers.Get().(*[]byte)
	defer ctBuffers.Put(buf)
	ct, err := f.readCTInto(s, first*bs, (last+2)*bs, *buf)
	if err != nil {
		return 0, err
	}
	pt := ct[bs:]
	cipher.NewCBCDecrypter(f.keys.blockCipher(ino, subdomainData), ct[:bs]).CryptBlocks(pt, pt)
	return copy(p, pt[off-first*bs:]), nil
}

// WriteTo writes the whole file to w. Chunks are read, authenticated and
// decrypted on every core while w receives them in order, through a fixed
// number of buffers whatever the file's size.
func (r *File) WriteTo(w io.Writer) (int64, error) {
	f := r.f
	s, err := r.begin()
	defer f.mu.RUnlock()
	if err != nil {
		return 0, err
	}
	n, err := f.streamFile(r.ino, &s, w)
	if err != nil && !isWriterError(err) {
		err = fmt.Errorf("inode %d: %w", r.ino, err)
	}
	return n, err
}

// writerError marks a failure of the destination, not of the image.
type writerError struct{ err error }

func (e *writerError) Error() string { return e.err.Error() }
func (e *writerError) Unwrap() error { return e.err }

func isWriterError(err error) bool {
	var we *writerError
	return errors.As(err, &we)
}

// streamFile decrypts the file chunk by chunk. Chunk i holds ciphertext
// [i·C, (i+1)·C); its first cipher block is chained by the last block of
// chunk i-1, which only chunk i-1's worker has authenticated, so workers
// leave that block XORed with zero and the in-order writer finishes it with
// the previous chunk's authenticated last block.
func (f *FS) streamFile(ino uint64, s *fileSnapshot, w io.Writer) (int64, error) {
	bs := uint64(f.algs.cipher.BlockSize)
	chunk := uint64(readChunk) / bs * bs
	plainEnd := uint64(s.size) + bs // ciphertext offset where the payload ends
	chunks := (plainEnd + chunk - 1) / chunk
	c := f.keys.blockCipher(ino, subdomainData)

	type result struct {
		pt     []byte // plaintext of the chunk's blocks (first one unchained)
		lastCT []byte
		buf    []byte // the buffer pt lies in, back to the pool once written
		err    error
		done   chan struct{}
	}
	// Each chunk's data blocks fit one buffer (the chunk plus a data block
	// on either side); a chunk is decrypted in place in it.
	bufSize := chunk + 2*max(f.layout.AuthTreeDataBlockSize(), f.layout.AllocBlockSize())
	pool := make(chan []byte, runtime.GOMAXPROCS(0)+2)
	getBuf := func() []byte {
		select {
		case b := <-pool:
			return b
		default:
			return make([]byte, bufSize)
		}
	}
	work := func(i uint64, res *result) {
		defer close(res.done)
		from, to := i*chunk, min((i+1)*chunk, plainEnd)
		to = (to + bs - 1) / bs * bs
		res.buf = getBuf()
		ct, err := f.readCTInto(s, from, to, res.buf)
		if err != nil {
			res.err = err
			return
		}
		res.lastCT = append([]byte(nil), ct[len(ct)-int(bs):]...)
		if i == 0 {
			res.pt = ct[bs:]
			cipher.NewCBCDecrypter(c, ct[:bs]).CryptBlocks(res.pt, res.pt)
			return
		}
		// The decrypter copies the chaining value, so the first block can
		// be decrypted in place after the rest.
		if len(ct) > int(bs) {
			cipher.NewCBCDecrypter(c, ct[:bs]).CryptBlocks(ct[bs:], ct[bs:])
		}
		c.Decrypt(ct[:bs], ct[:bs])
		res.pt = ct
	}
	workers := uint64(runtime.GOMAXPROCS(0))
	results := make([]*result, chunks)
	next := uint64(0) // next chunk to start
	start := func() {
		res := &result{done: make(chan struct{})}
		results[next] = res
		go work(next, res)
		next++
	}
	defer func() {
		// Let workers still running finish before their buffers are dropped.
		for _, res := range results {
			if res != nil {
				<-res.done
			}
		}
	}()
	var written int64
	var prevCT []byte
	for i := uint64(0); i < chunks; i++ {
		for next < chunks && next < i+workers+1 {
			start()
		}
		res := results[i]
		<-res.done
		if res.err != nil {
			return written, res.err
		}
		if i > 0 {
			for j := uint64(0); j < bs; j++ {
				res.pt[j] ^= prevCT[j]
			}
		}
		prevCT = res.lastCT
		out := res.pt
		// The payload ends at size; padding and fill are not written.
		if lim := int64(s.size) - written; int64(len(out)) > lim {
			out = out[:lim]
		}
		m, err := w.Write(out)
		written += int64(m)
		if err != nil {
			return written, &writerError{err}
		}
		select {
		case pool <- res.buf:
		default:
		}
		results[i] = nil
	}
	return written, nil
}
