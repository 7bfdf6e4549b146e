package cocoonfs

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sync/atomic"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/cocoonfs/internal/disk"
)

// Writing a file streams it to the medium before the commit: its blocks are
// free in the committed state, so nothing the committed state depends on
// changes, and a transaction that never commits leaves only ciphertext in
// free space. One goroutine encrypts (CBC is sequential) while another
// computes the authentication tree data block HMACs of finished segments
// and writes them, so a transaction holds per file a digest per data block
// and the few partial data blocks at extent edges, never the contents.

// segmentBytes is the ciphertext a writer allocates, encrypts and writes at
// a time: one long device write, and the unit handed between the two
// goroutines. A file's first segments are smaller (firstSegmentBytes,
// growing fourfold), so a small file costs neither a megabyte of buffer nor
// a megabyte-long search for free space.
const (
	segmentBytes      = 1 << 20
	firstSegmentBytes = 16 << 10
)

// segmentsInFlight bounds the buffers of one writer: one being encrypted,
// the others being sealed or queued.
const segmentsInFlight = 3

// txFile is a file written by a transaction.
type txFile struct {
	flags   uint32
	size    int64
	extents []disk.Extent // in file order
	// runs are the digests of the data blocks wholly inside the file's
	// extents, computed as they were written; edges hold the file's bytes in
	// data blocks it shares with other blocks, whose digests the commit
	// computes once every bit of the new bitmap is known.
	runs  []digestRun
	edges []region
}

// digestRun holds the digests of consecutive physical data blocks.
type digestRun struct {
	pdb     uint64 // first data block (physical allocation block >> data block log2)
	digests []byte // back to back
}

// FileWriter writes one file: of a transaction (Tx.Create), or staged
// outside any transaction for one to adopt later (FS.Stage). It is not safe
// for concurrent use.
type FileWriter struct {
	f     *FS
	tx    *Tx // the transaction written for; nil while staged
	ino   uint64
	file  *txFile
	bs    int
	enc   cipher.BlockMode // CBC, chained across segments
	part  []byte           // plaintext short of a cipher block
	seg   []byte           // ciphertext of the current segment so far
	ext   disk.Extent      // the current segment's allocation
	seal  *sealer
	segs  uint  // segments allocated so far
	err   error // sticky: a failed writer stays failed
	ended bool
	// staged writers only: closed and not yet adopted or aborted.
	staged, ready, adopted bool
}

// Create starts writing inode ino (replacing it when the transaction
// commits) with the given flags. Write the contents, then Close the writer
// before Commit. Writing the same inode again in the transaction replaces
// what was written before.
func (tx *Tx) Create(ino uint64, flags uint32) (*FileWriter, error) {
	if tx.done {
		return nil, ErrTxDone
	}
	if err := checkFileArgs(ino, flags); err != nil {
		return nil, err
	}
	if w := tx.writers[ino]; w != nil {
		w.abort(errors.New("cocoonfs: replaced by a later write in the same transaction"))
	}
	tx.drop(ino)
	w := &FileWriter{f: tx.f, tx: tx, ino: ino, file: &txFile{flags: flags}, bs: tx.f.algs.cipher.BlockSize}
	tx.writers[ino] = w
	return w, nil
}

// checkFileArgs refuses reserved inodes and flags outside the application's
// low 8 bits.
func checkFileArgs(ino uint64, flags uint32) error {
	if err := checkUserInode(ino); err != nil {
		return err
	}
	if flags&^0xff != 0 {
		return fmt.Errorf("cocoonfs: inode %d: flags %#x use reserved bits (only 0xff are for applications): %w", ino, flags, fs.ErrInvalid)
	}
	return nil
}

// WriteFile creates or replaces inode ino with data and flags; only the low
// 8 flag bits are for applications, the rest must be zero.
func (tx *Tx) WriteFile(ino uint64, data []byte, flags uint32) error {
	w, err := tx.Create(ino, flags)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Close()
}

// WriteFileFrom is WriteFile with the contents read from r until EOF.
func (tx *Tx) WriteFileFrom(ino uint64, r io.Reader, flags uint32) (int64, error) {
	w, err := tx.Create(ino, flags)
	if err != nil {
		return 0, err
	}
	n, err := w.ReadFrom(r)
	if err != nil {
		w.abort(err)
		return n, err
	}
	return n, w.Close()
}

func (w *FileWriter) check() error {
	if w.err != nil {
		return w.err
	}
	if w.ended {
		return fmt.Errorf("cocoonfs: inode %d: write after Close", w.ino)
	}
	if w.tx != nil && w.tx.done {
		return ErrTxDone
	}
	return nil
}

// Write appends p to the file.
func (w *FileWriter) Write(p []byte) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	if w.enc == nil {
		if err := w.start(); err != nil {
			return 0, w.fail(err)
		}
	}
	n := len(p)
	w.file.size += int64(n)
	bs := w.bs
	if len(w.part) > 0 {
		k := copy(w.part[len(w.part):bs], p)
		w.part = w.part[:len(w.part)+k]
		p = p[k:]
		if len(w.part) < bs {
			return n, nil
		}
		if err := w.encrypt(w.part); err != nil {
			return 0, w.fail(err)
		}
		w.part = w.part[:0]
	}
	whole := len(p) / bs * bs
	if err := w.encrypt(p[:whole]); err != nil {
		return 0, w.fail(err)
	}
	w.part = append(w.part[:0], p[whole:]...)
	return n, nil
}

// ReadFrom appends everything r yields until EOF. A goroutine reads ahead
// into two buffers, so reading the input overlaps encrypting it.
func (w *FileWriter) ReadFrom(r io.Reader) (int64, error) {
	type piece struct {
		b   []byte
		err error
	}
	const chunk = 256 << 10
	free := make(chan []byte, 2)
	full := make(chan piece, 2)
	stop := make(chan struct{})
	free <- make([]byte, chunk)
	free <- make([]byte, chunk)
	go func() {
		defer close(full)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(r, b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case full <- piece{b[:n], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for range full { // let the reader finish its last read and exit
		}
	}()
	var total int64
	for p := range full {
		if len(p.b) > 0 {
			if _, err := w.Write(p.b); err != nil {
				return total, err
			}
			total += int64(len(p.b))
		}
		if p.err == io.EOF {
			return total, nil
		}
		if p.err != nil {
			return total, p.err
		}
		free <- p.b[:cap(p.b)]
	}
	return total, nil
}

// Close ends the file: the padding, the zero blocks up to the allocation
// block, the last segment; it returns once every block is on the medium
// (not yet committed: that is the transaction's Commit).
func (w *FileWriter) Close() error {
	if err := w.check(); err != nil {
		return err
	}
	if w.enc == nil {
		if err := w.start(); err != nil {
			return w.fail(err)
		}
	}
	bs := w.bs
	// PKCS#7: one to bs bytes of the pad length.
	padded := append(w.part, make([]byte, bs-len(w.part))...)
	for i := len(w.part); i < bs; i++ {
		padded[i] = byte(bs - len(w.part))
	}
	if err := w.encrypt(padded); err != nil {
		return w.fail(err)
	}
	// Zero blocks up to the allocation block's end.
	ab := int(w.f.layout.AllocBlockSize())
	if rem := len(w.seg) % ab; rem != 0 {
		if err := w.encrypt(make([]byte, ab-rem)); err != nil {
			return w.fail(err)
		}
	}
	if err := w.flush(true); err != nil {
		return w.fail(err)
	}
	runs, edges, err := w.seal.wait()
	w.seal = nil
	if err != nil {
		return w.fail(err)
	}
	slices.SortFunc(runs, func(x, y digestRun) int { return cmpU64(x.pdb, y.pdb) })
	slices.SortFunc(edges, func(x, y region) int { return cmpU64(x.start, y.start) })
	w.file.runs, w.file.edges = runs, edges
	w.ended = true
	if w.staged {
		w.ready = true
		return nil
	}
	delete(w.tx.writers, w.ino)
	w.tx.files[w.ino] = w.file
	return nil
}

// Size is the number of plaintext bytes written so far.
func (w *FileWriter) Size() int64 { return w.file.size }

// start allocates the first segment and writes the IV.
func (w *FileWriter) start() error {
	w.seal = w.f.newSealer()
	if err := w.nextSegment(); err != nil {
		return err
	}
	iv := randomBytes(w.bs)
	w.seg = append(w.seg, iv...)
	w.enc = cipher.NewCBCEncrypter(w.f.keys.blockCipher(w.ino, subdomainData), iv)
	w.part = make([]byte, 0, w.bs)
	return nil
}

// encrypt appends the encryption of whole cipher blocks p to the stream,
// shipping segments as they fill.
func (w *FileWriter) encrypt(p []byte) error {
	for len(p) > 0 {
		room := int(w.ext.Len*w.f.layout.AllocBlockSize()) - len(w.seg)
		if room == 0 {
			if err := w.flush(false); err != nil {
				return err
			}
			if err := w.nextSegment(); err != nil {
				return err
			}
			continue
		}
		k := min(room, len(p))
		dst := w.seg[len(w.seg) : len(w.seg)+k]
		w.enc.CryptBlocks(dst, p[:k])
		w.seg = w.seg[:len(w.seg)+k]
		p = p[k:]
	}
	return nil
}

// nextSegment allocates the next segment and takes a buffer for it.
func (w *FileWriter) nextSegment() error {
	size := uint64(segmentBytes)
	if w.segs < 3 {
		size = firstSegmentBytes << (2 * w.segs)
	}
	w.segs++
	e, err := w.f.allocData(w.tx, size/w.f.layout.AllocBlockSize())
	if err != nil {
		return fmt.Errorf("cocoonfs: inode %d (%d bytes so far): %w", w.ino, w.file.size, err)
	}
	w.ext = e
	if n := len(w.file.extents); n > 0 && w.file.extents[n-1].Start+w.file.extents[n-1].Len == e.Start {
		w.file.extents[n-1].Len += e.Len
	} else {
		w.file.extents = append(w.file.extents, e)
	}
	w.seg = w.seal.buffer(int(e.Len * w.f.layout.AllocBlockSize()))
	return nil
}

// flush hands the current segment to the sealer. The last one gives back
// the allocation blocks it did not fill.
func (w *FileWriter) flush(last bool) error {
	ab := w.f.layout.AllocBlockSize()
	used := uint64(len(w.seg)) / ab
	if last {
		if unused := w.ext.Len - used; unused > 0 {
			w.f.releaseData(w.tx, disk.Extent{Start: w.ext.Start + used, Len: unused})
			w.file.extents[len(w.file.extents)-1].Len -= unused
		}
	}
	return w.seal.submit(w.ext.Start, w.seg[:used*ab])
}

// fail makes the writer's error sticky and gives its blocks back.
func (w *FileWriter) fail(err error) error {
	w.abort(err)
	return err
}

// abort stops the writer: its blocks are free again, nothing of it reaches
// the commit.
func (w *FileWriter) abort(err error) {
	if w.err == nil {
		w.err = err
	}
	if w.seal != nil {
		w.seal.wait()
		w.seal = nil
	}
	if !w.ended || w.ready {
		for _, e := range w.file.extents {
			w.f.releaseData(w.tx, e)
		}
		w.file.extents = nil
		w.ended, w.ready = true, false
		if w.tx != nil && w.tx.writers[w.ino] == w {
			delete(w.tx.writers, w.ino)
		}
	}
}

// allocData takes the next run of free blocks for file data, up to want,
// for transaction tx or, with tx nil, for a staged writer. Runs are aligned
// to the data block and IO block so that full data blocks can be digested
// as they are written and segments never share an IO block with anything
// else; on a fragmented image smaller runs will do (for a transaction, any
// free block). Blocks taken by the
// running transaction and by staged writers are never handed out twice.
func (f *FS) allocData(tx *Tx, want uint64) (disk.Extent, error) {
	l := f.layout
	align := max(uint64(1)<<l.AuthTreeDataBlockLog2, l.IOBlockSize()/l.AllocBlockSize())
	want = max(want/align*align, align)
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.allocMu.Lock()
	defer f.allocMu.Unlock()
	// One view of everything taken: this transaction's blocks, the running
	// transaction's (when staging) and every staged writer's.
	al := &allocator{total: f.imageAllocBlocks, base: f.bitmap}
	al.taken.ext = slices.Clone(f.staged.ext)
	if f.running != nil {
		for _, e := range f.running.al.taken.ext {
			al.taken.add(e)
		}
	}
	cursor := &f.stageCursor
	io := l.IOBlockSize() / l.AllocBlockSize()
	tries := []struct{ from, min, align uint64 }{
		{0, io, io},
		{0, 1, 1},
	}
	if tx == nil {
		// A staged writer's sealer may write while a commit runs, so it
		// never shares an IO block with anything a commit could rewrite
		// through a staged copy of that IO block.
		tries = tries[:1]
	} else {
		cursor = &tx.dataCursor
	}
	tries = append([]struct{ from, min, align uint64 }{{*cursor, align, align}, {0, align, align}}, tries...)
	for _, try := range tries {
		start, n, ok, err := al.freeRun(try.from, want, try.min, try.align)
		if err != nil {
			return disk.Extent{}, err
		}
		if ok {
			e := disk.Extent{Start: start, Len: n}
			if tx != nil {
				tx.al.taken.add(e)
			} else {
				f.staged.add(e)
			}
			*cursor = start + n
			return e, nil
		}
	}
	return disk.Extent{}, fmt.Errorf("image full: %w", ErrNoSpace)
}

// releaseData gives back blocks allocData handed out. When they end where
// the next search would start (the unfilled tail of a file's last segment),
// the search starts at them instead, so small files written in a row sit
// side by side rather than a segment apart.
func (f *FS) releaseData(tx *Tx, e disk.Extent) {
	f.allocMu.Lock()
	defer f.allocMu.Unlock()
	cursor := &f.stageCursor
	if tx != nil {
		tx.al.release(e)
		cursor = &tx.dataCursor
	} else {
		f.staged.remove(e)
	}
	if *cursor == e.Start+e.Len {
		*cursor = e.Start
	}
}

// Stage starts writing inode ino's next contents outside any transaction:
// the blocks come from free space and stay reserved, so no transaction
// takes them, until a transaction adopts the file (Tx.Adopt) or it is
// discarded (Abort). Staged writers run alongside each other and alongside
// a transaction, so a large file can be written while other changes
// commit. What a staged writer wrote is lost if the image is closed or the
// process ends before a transaction adopts it (free space, nothing else).
func (f *FS) Stage(ino uint64, flags uint32) (*FileWriter, error) {
	if !f.rw {
		return nil, ErrReadOnlyFS
	}
	if err := checkFileArgs(ino, flags); err != nil {
		return nil, err
	}
	return &FileWriter{f: f, ino: ino, file: &txFile{flags: flags}, bs: f.algs.cipher.BlockSize, staged: true}, nil
}

// Abort discards what the writer wrote and frees its blocks. After Abort
// the writer fails every call. Aborting an adopted writer does nothing:
// the file belongs to its transaction.
func (w *FileWriter) Abort() {
	if w.adopted {
		return
	}
	w.abort(errors.New("cocoonfs: writer aborted"))
}

// Adopt makes a closed staged writer's file part of the transaction, as if
// written by Create; if the transaction does not commit, the file is
// dropped and its blocks are free again.
func (tx *Tx) Adopt(w *FileWriter) error {
	if tx.done {
		return ErrTxDone
	}
	if w.f != tx.f || !w.staged {
		return fmt.Errorf("cocoonfs: inode %d: not a staged writer of this image", w.ino)
	}
	if !w.ready {
		return fmt.Errorf("cocoonfs: inode %d: a staged writer must be closed (and not aborted or adopted) to be adopted: %w", w.ino, fs.ErrInvalid)
	}
	if wr := tx.writers[w.ino]; wr != nil {
		wr.abort(errors.New("cocoonfs: replaced by an adopted file in the same transaction"))
	}
	tx.drop(w.ino)
	f := tx.f
	f.allocMu.Lock()
	for _, e := range w.file.extents {
		f.staged.remove(e)
		tx.al.taken.add(e)
	}
	f.allocMu.Unlock()
	tx.files[w.ino] = w.file
	w.ready, w.adopted = false, true
	return nil
}

// sealer is the second goroutine of a writer: for each segment, the digests
// of its whole data blocks, copies of its edges, and the device write.
type sealer struct {
	f      *FS
	tree   *authTree // the tree's geometry and keys never change: safe to keep across commits
	total  uint64    // allocation blocks in the image
	jobs   chan sealJob
	pool   chan []byte
	done   chan struct{}
	runs   []digestRun
	edges  []region
	err    error       // read after done
	failed atomic.Bool // err is set: stop feeding it
	closed bool        // jobs is closed
}

type sealJob struct {
	start uint64 // allocation block
	data  []byte // whole allocation blocks
}

func (f *FS) newSealer() *sealer {
	f.mu.RLock()
	tree, total := f.tree, f.imageAllocBlocks
	f.mu.RUnlock()
	s := &sealer{f: f, tree: tree, total: total, jobs: make(chan sealJob, segmentsInFlight-1), pool: make(chan []byte, segmentsInFlight), done: make(chan struct{})}
	for i := 0; i < segmentsInFlight; i++ {
		s.pool <- nil // buffers are made on first use
	}
	go s.run()
	return s
}

// buffer returns an empty segment buffer of at least size bytes, waiting
// for one to be free.
func (s *sealer) buffer(size int) []byte {
	b := <-s.pool
	if cap(b) < size {
		b = make([]byte, 0, size)
	}
	return b[:0]
}

func (s *sealer) submit(start uint64, data []byte) error {
	if s.failed.Load() {
		_, _, err := s.wait()
		return err
	}
	s.jobs <- sealJob{start, data}
	return nil
}

// wait ends the sealer and returns what it computed.
func (s *sealer) wait() ([]digestRun, []region, error) {
	if !s.closed {
		s.closed = true
		close(s.jobs)
	}
	<-s.done
	return s.runs, s.edges, s.err
}

func (s *sealer) run() {
	defer close(s.done)
	for j := range s.jobs {
		if s.err == nil {
			if s.err = s.seal(j); s.err != nil {
				s.failed.Store(true)
			}
		}
		s.pool <- j.data[:0]
	}
}

func (s *sealer) seal(j sealJob) error {
	f := s.f
	l := f.layout
	ab := l.AllocBlockSize()
	log2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << log2
	end := j.start + uint64(len(j.data))/ab
	for pdb := j.start >> log2; pdb<<log2 < end; pdb++ {
		a := pdb << log2
		cnt := min(per, s.total-a)
		if a >= j.start && a+cnt <= end {
			d, ok := s.tree.domainIndex(a)
			if !ok {
				return fmt.Errorf("BUG: file data allocated in the authentication tree at block %d", a)
			}
			dg := s.tree.dataDigest(j.data[(a-j.start)*ab:(a-j.start+cnt)*ab], lowBits(cnt), d)
			if n := len(s.runs); n > 0 && s.runs[n-1].pdb+uint64(len(s.runs[n-1].digests)/len(dg)) == pdb {
				s.runs[n-1].digests = append(s.runs[n-1].digests, dg...)
			} else {
				s.runs = append(s.runs, digestRun{pdb: pdb, digests: dg})
			}
			continue
		}
		lo, hi := max(a, j.start), min(a+cnt, end)
		s.edges = append(s.edges, region{start: lo, data: append([]byte(nil), j.data[(lo-j.start)*ab:(hi-j.start)*ab]...)})
	}
	if _, err := f.dev.WriteAt(j.data, int64(j.start*ab)); err != nil {
		return fmt.Errorf("cocoonfs: write %d bytes at %d: %w", len(j.data), j.start*ab, err)
	}
	// Let the disk take it now, while the next segments are encrypted:
	// the commit's barrier then has little left to wait for.
	if ws, ok := f.dev.(blockdev.WritebackStarter); ok {
		ws.StartWriteback(int64(j.start*ab), int64(len(j.data)))
	}
	return nil
}

// ReadAt reads back what a closed writer wrote (before or after a
// transaction adopts it, until it commits), verified against the digests
// computed as it was written, or taken from the copies kept in memory for
// partial data blocks: it never returns bytes other than those written.
func (w *FileWriter) ReadAt(p []byte, off int64) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if !w.ended {
		return 0, fmt.Errorf("cocoonfs: inode %d: read back before the writer is closed", w.ino)
	}
	if off < 0 {
		return 0, fs.ErrInvalid
	}
	bs := uint64(w.bs)
	n := 0
	for n < len(p) && off+int64(n) < w.file.size {
		pos := uint64(off) + uint64(n)
		want := min(len(p)-n, readChunk, int(w.file.size-int64(pos)))
		first, last := pos/bs, (pos+uint64(want)-1)/bs
		ct, err := w.readCT(first*bs, (last+2)*bs)
		if err != nil {
			return n, err
		}
		pt := make([]byte, len(ct)-int(bs))
		cipher.NewCBCDecrypter(w.f.keys.blockCipher(w.ino, subdomainData), ct[:bs]).CryptBlocks(pt, ct[bs:])
		n += copy(p[n:n+want], pt[pos-first*bs:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readCT returns ciphertext bytes [from, to) of what the writer wrote.
func (w *FileWriter) readCT(from, to uint64) ([]byte, error) {
	f := w.f
	l := f.layout
	ab := l.AllocBlockSize()
	log2 := uint(l.AuthTreeDataBlockLog2)
	per := uint64(1) << log2
	dlen := f.algs.dataHMAC.Size
	f.mu.RLock()
	tree, total := f.tree, f.imageAllocBlocks
	f.mu.RUnlock()
	out := make([]byte, 0, to-from)
	var begin uint64
	for _, x := range w.file.extents {
		end := begin + x.Len*ab
		if end <= from || begin >= to {
			begin = end
			continue
		}
		lo, hi := max(from, begin)-begin, min(to, end)-begin
		for a := x.Start + lo/ab; a < x.Start+(hi+ab-1)/ab; {
			pdb := a >> log2
			var blk []byte // the verified contents of a.. within this data block
			i, found := slices.BinarySearchFunc(w.file.runs, pdb, func(r digestRun, pdb uint64) int {
				if r.pdb+uint64(len(r.digests)/dlen) <= pdb {
					return -1
				}
				if r.pdb > pdb {
					return 1
				}
				return 0
			})
			if found {
				r := w.file.runs[i]
				start := pdb << log2
				cnt := min(per, total-start)
				raw := make([]byte, cnt*ab)
				if _, err := f.dev.ReadAt(raw, int64(start*ab)); err != nil {
					return nil, fmt.Errorf("cocoonfs: read %d bytes at %d: %w", len(raw), start*ab, err)
				}
				d, _ := tree.domainIndex(start)
				k := (pdb - r.pdb) * uint64(dlen)
				if !equalDigest(tree.dataDigest(raw, lowBits(cnt), d), r.digests[k:k+uint64(dlen)]) {
					return nil, authf("inode %d: data block %d changed on the medium since it was written", w.ino, d)
				}
				blk = raw[(a-start)*ab:]
			} else {
				e := contentIndex(w.file.edges)
				c := e.at(a, ab)
				if c == nil {
					return nil, fmt.Errorf("BUG: inode %d: block %d of a written file is neither digested nor kept", w.ino, a)
				}
				blk = c
			}
			// Take the blocks of this data block (or edge block) that the range needs.
			for len(blk) > 0 && a < x.Start+(hi+ab-1)/ab && a>>log2 == pdb {
				off := (a - x.Start) * ab // within the extent
				s, e := max(lo, off), min(hi, off+ab)
				out = append(out, blk[s-off:e-off]...)
				blk = blk[ab:]
				a++
				if !found {
					break // one edge block at a time
				}
			}
		}
		begin = end
	}
	return out, nil
}
